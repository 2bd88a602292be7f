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
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),  # JSON of the sampling parameters
        pa.field("error", pa.string()),  # null when fine, else "<kind>: <message>"
    ]
)
