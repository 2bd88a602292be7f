"""Helpers for tests and benchmarks (as `numpy.testing` is for numpy's): nothing in the pipeline imports this module.

It sits above the stages so that it may build rows the way they do (the generate templates, the trace parser).
"""

import json

from distill.generate.parse import parse_trace
from distill.generate.sources import DEFAULT_TEMPLATES
from distill.schema import GENERATE_SCHEMA, LOGPROB_COLUMNS

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
        "reasoning_tokens": None,
        "cached_tokens": None,
        "token_source": None,
        "cost_usd": None,
        "from_cache": None,
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
