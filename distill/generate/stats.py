"""`distill stats`: totals and integrity checks for a generate output folder."""

from collections import Counter
from pathlib import Path

from distill.errors import DistillError
from distill.io import data_files, read_columns


def folder_stats(files: list[Path]) -> dict:
    """Totals over finished files: rows, prompts, tokens, errors by kind, duplicate ids."""
    ids: Counter = Counter()
    prompts: set = set()
    errors: Counter = Counter()
    finish: Counter = Counter()
    prompt_tokens = completion_tokens = 0
    for path in files:
        table = read_columns(path, ["id", "prompt_id", "error", "finish_reason", "prompt_tokens", "completion_tokens"])
        ids.update(table.column("id").to_pylist())
        prompts.update(table.column("prompt_id").to_pylist())
        errors.update(e.split(":", 1)[0] for e in table.column("error").to_pylist() if e is not None)
        finish.update(f for f in table.column("finish_reason").to_pylist() if f is not None)
        prompt_tokens += sum(t or 0 for t in table.column("prompt_tokens").to_pylist())
        completion_tokens += sum(t or 0 for t in table.column("completion_tokens").to_pylist())
    return {
        "files": len(files),
        "prompts": len(prompts),
        "samples": sum(ids.values()),
        "duplicate_ids": sum(c - 1 for c in ids.values() if c > 1),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "finish_reasons": dict(finish),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
    }


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
