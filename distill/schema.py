"""Explicit Parquet schemas for each stage's output (never inferred from the first row)."""

import pyarrow as pa

# One row per generated sample. `id` is stable across reruns: a hash of prompt id, sample index,
# teacher and sampling parameters (see distill.generate.run.sample_id), which is what makes resume work.
GENERATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("prompt_messages", pa.string(), nullable=False),  # JSON list of {role, content} sent to the teacher
        pa.field("gold", pa.string()),  # null when the prompt has no reference answer
        pa.field("tests", pa.string()),  # JSON string, null when none
        pa.field("reasoning", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("completion", pa.string()),  # the whole assistant turn, prefill included
        pa.field("finish_reason", pa.string()),
        pa.field("truncated", pa.bool_()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        # Usage (columns added with issue 23; files written before lack them, and readers take them as null):
        # of completion_tokens those spent reasoning, of prompt_tokens those read from the server's prompt cache,
        # where the counts come from (server, engine, counted, mixed), the USD this row cost this output (0 when
        # it came from the response cache; null without prices), and whether it came from the response cache.
        pa.field("reasoning_tokens", pa.int32()),
        pa.field("cached_tokens", pa.int32()),
        pa.field("token_source", pa.string()),
        pa.field("cost_usd", pa.float64()),
        pa.field("from_cache", pa.bool_()),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),  # JSON of the sampling parameters
        pa.field("error", pa.string()),  # null when fine, else "<kind>: <message>"
        # `distill generate --logprobs K` (null without it): the generated tokens (after the prefill) as ids of the
        # teacher's vocabulary, and at each the teacher's K most likely tokens, most likely first, with their
        # log-probs at temperature 1. float16 values: a relative error of 2^-11 (0.001 on a log-prob of -2), far
        # below what distillation can tell apart, at half the bytes (see parquet_options).
        pa.field("token_ids", pa.list_(pa.int32())),
        pa.field("top_token_ids", pa.list_(pa.list_(pa.int32()))),
        pa.field("top_logprobs", pa.list_(pa.list_(pa.float16()))),
        pa.field("teacher_tokenizer", pa.string()),  # the teacher's tokenizer: its name ...
        pa.field("teacher_vocab_hash", pa.string()),  # ... and distill.models.vocab_hash of its vocabulary
    ]
)
LOGPROB_COLUMNS = ("token_ids", "top_token_ids", "top_logprobs", "teacher_tokenizer", "teacher_vocab_hash")


# A verifier's verdict on one row, stored as one struct column per verifier: `verdict_<name>`.
VERDICT_TYPE = pa.struct(
    [
        pa.field("passed", pa.bool_()),  # null: could not check (not the same as wrong)
        pa.field("reason", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("details", pa.string()),
    ]
)
# TRL's conversational format: the user turn is the prompt, the assistant turn `<think>\n…\n</think>\n\n…`.
MESSAGES_TYPE = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))


def filter_schema(verifier_names: list[str], rejected: bool = False) -> pa.Schema:
    """Kept rows (`data/`) and rejected rows (`rejected/`, with `filter_reason`) of `distill filter`."""
    # `origin`: where the row came from, `file:row` (imported traces: `file:row#generation`).
    fields = list(GENERATE_SCHEMA) + [pa.field("origin", pa.string())]
    # `gold_source`: given (the input's gold), majority (--consensus majority), null (no gold).
    fields += [pa.field("gold_source", pa.string()), pa.field("messages", MESSAGES_TYPE)]
    fields += [pa.field(f"verdict_{name}", VERDICT_TYPE) for name in verifier_names]
    if rejected:
        fields.append(pa.field("filter_reason", pa.string(), nullable=False))
    return pa.schema(fields)
