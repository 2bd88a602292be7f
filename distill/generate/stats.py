"""`distill stats`: totals and integrity checks for a generate output folder."""

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from distill.engines.usage import Prices
from distill.errors import DistillError
from distill.io import data_files, read_columns

# Columns files written before issue 23 lack: read as null (see distill/schema.py)
USAGE_COLUMNS = ("reasoning_tokens", "cached_tokens", "token_source", "cost_usd", "from_cache")


def read_usage(path: Path, columns: list[str]) -> dict[str, list]:
    """`columns` of one file as lists, the usage columns an older file lacks as nulls."""
    present = set(pq.read_schema(path).names)
    table = read_columns(path, [c for c in columns if c in present or c not in USAGE_COLUMNS])
    rows = table.num_rows
    return {c: table.column(c).to_pylist() if c in table.column_names else [None] * rows for c in columns}


def folder_stats(files: list[Path]) -> dict:
    """Totals over finished files: rows, prompts, tokens (reasoning and cached among them), what they cost, errors
    by kind, duplicate ids."""
    ids: Counter = Counter()
    prompts: set = set()
    errors: Counter = Counter()
    finish: Counter = Counter()
    sources: Counter = Counter()
    tokens = Counter()
    cost, priced, from_cache = 0.0, 0, 0
    for path in files:
        columns = ["id", "prompt_id", "error", "finish_reason", "prompt_tokens", "completion_tokens", *USAGE_COLUMNS]
        table = read_usage(path, columns)
        ids.update(table["id"])
        prompts.update(table["prompt_id"])
        errors.update(e.split(":", 1)[0] for e in table["error"] if e is not None)
        finish.update(f for f in table["finish_reason"] if f is not None)
        for name in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens"):
            tokens[name] += sum(t or 0 for t in table[name])
        sources.update(s for s in table["token_source"] if s is not None)
        cost += sum(c for c in table["cost_usd"] if c is not None)
        priced += sum(c is not None for c in table["cost_usd"])
        from_cache += sum(bool(c) for c in table["from_cache"])
    return {
        "files": len(files),
        "prompts": len(prompts),
        "samples": sum(ids.values()),
        "duplicate_ids": sum(c - 1 for c in ids.values() if c > 1),
        "prompt_tokens": tokens["prompt_tokens"],
        "completion_tokens": tokens["completion_tokens"],  # reasoning included, as servers bill it
        "reasoning_tokens": tokens["reasoning_tokens"],
        "cached_prompt_tokens": tokens["cached_tokens"],
        "token_counts": dict(sources),  # rows by where their counts come from: server, engine, counted, mixed
        # USD these rows cost (rows from the response cache cost 0), at the prices of the runs that made them;
        # null when no run had prices
        "cost_usd": round(cost, 6) if priced else None,
        "samples_from_cache": from_cache,
        "finish_reasons": dict(finish),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
    }


def paid(files: list[Path], prices: Prices) -> tuple[float, int]:
    """USD and tokens (prompt + completion) the rows of `files` were paid with; rows from the response cache cost
    nothing, rows written without prices are priced at `prices`: what a budget starts from when a run resumes."""
    usd, tokens = 0.0, 0
    for path in files:
        columns = ["prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "from_cache"]
        table = read_usage(path, columns)
        for prompt, completion, cached, cost, cached_row in zip(*(table[c] for c in columns), strict=True):
            if cached_row:
                continue
            tokens += (prompt or 0) + (completion or 0)
            usd += cost if cost is not None else (prices.cost(prompt, cached, completion) or 0.0)
    return usd, tokens


def check_folder(folder: str | Path) -> tuple[dict, list[str]]:
    """Read every shard of a folder; return totals and the problems found (duplicates, unreadable files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DistillError(f"folder not found: {folder}")
    files = data_files(folder / "data")
    if not files:
        raise DistillError(f"{folder} holds no data/*.parquet files: is it a distill generate output?")
    problems, readable = [], []
    for path in files:
        try:
            read_columns(path, ["id"])
            readable.append(path)
        except DistillError as exc:
            problems.append(str(exc).split(" (")[0])
    report = folder_stats(readable)
    report["unreadable_files"] = len(files) - len(readable)
    report["complete"] = (folder / "stats.json").exists()
    if report["duplicate_ids"]:
        problems.append(f"{report['duplicate_ids']} duplicate ids")
    return report, problems
