"""Explicit Parquet schemas for each stage's output (never inferred from the first row)."""

import json

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


# Columns a row of a filter output adds to a generate row (`verdict_<name>` besides these).
FILTER_COLUMNS = ("messages", "filter_reason")
_GENERATE_NAMES = tuple(GENERATE_SCHEMA.names)


def example_row(**overrides) -> dict:
    """One complete generate row (every GENERATE_SCHEMA column), for tests and benchmarks: a math prompt in R1's
    template answered by a thinking teacher, with `overrides` replacing any column.

    Derived columns follow what they derive from unless given: `prompt_messages` from `problem` and `domain` (the
    default template), `completion` from `reasoning` and `answer` (the way a thinking teacher writes them) or,
    when only `completion` is given, `reasoning` and `answer` parsed from it, and `truncated` from
    `finish_reason`. Filter-output columns (`messages`, `verdict_<name>`, `filter_reason`) may be added; any other
    name is a mistake and raises.
    """
    from distill.generate.parse import parse_trace
    from distill.generate.sources import DEFAULT_TEMPLATES

    known = (*_GENERATE_NAMES, *FILTER_COLUMNS)
    unknown = [k for k in overrides if k not in known and not k.startswith("verdict_")]
    if unknown:
        raise ValueError(f"example_row: {unknown[0]!r} is not a column of a generate or filter output")
    row = {
        "id": "id0",
        "prompt_id": "p0",
        "sample_index": 0,
        "domain": "math",
        "source": "test",
        "problem": "What is 2 + 3?",
        "gold": "5",
        "tests": None,
        "reasoning": "Two plus three is five.",
        "answer": "The answer is \\boxed{5}.",
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "teacher": "teacher",
        "sampling": "{}",
        "error": None,
        **dict.fromkeys(LOGPROB_COLUMNS),
    }
    row.update(overrides)
    if "prompt_messages" not in overrides:
        template = DEFAULT_TEMPLATES.get(row["domain"], "{problem}")
        content = template.replace("{problem}", row["problem"])
        row["prompt_messages"] = json.dumps([{"role": "user", "content": content}], ensure_ascii=False)
    if "completion" not in overrides:
        row["completion"] = f"<think>\n{row['reasoning']}\n</think>\n\n{row['answer']}"
    elif "reasoning" not in overrides and "answer" not in overrides:
        trace = parse_trace(row["completion"]) if row["completion"] is not None else None
        row["reasoning"], row["answer"] = (trace.reasoning, trace.answer) if trace else (None, None)
    if "truncated" not in overrides:
        row["truncated"] = row["finish_reason"] == "length"
    return {name: row[name] for name in _GENERATE_NAMES} | {k: v for k, v in row.items() if k not in _GENERATE_NAMES}
