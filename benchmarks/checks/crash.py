"""Crash test: `distill generate`, `distill filter` and `distill run` killed with SIGKILL at random moments.

Each command first runs once uninterrupted (the reference). Then the same command is started into a new folder
and killed K times, each time at a random moment after it has written something new (so every kill lands in
the middle of real work: between rows, during a Parquet write, inside the math-verify pool), and restarted
with `--resume` (`distill run` resumes by itself). The last start is left to finish. The result must be the
reference's: the same set of ids, no id twice, every Parquet file readable, the same filter stats.

SIGKILL goes to the whole process group, so worker processes (the math-verify pool, trainers) die with it, as
on a preempted node. `rows_lost` counts ids of the reference that are missing plus ids written twice.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from benchmarks.checks import Outcome


def run(work: Path, quick: bool, kills: int | None = None, seed: int = 0) -> list[Outcome]:
    kills = kills or 5  # the default, quick or not: quick runs smaller commands, not fewer kills
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    try:
        model, prompts = _teacher(work, quick), _prompts(work, 16 if quick else 40)
    except Exception as exc:  # the table must still print: report the setup failure as an unsurvived check
        return [Outcome("crash", "setup", 1, 0, note=f"{type(exc).__name__}: {exc}")]
    # Only the filter's input is the same for both runs; samples regenerated after a kill may differ in content
    # (sampling), so for generate and run the stats compared are the counts that must not change.
    checks = [
        ("generate", lambda out: _generate_args(model, prompts, out), False),
        ("filter", lambda out: _filter_args(work, out, quick), True),
        ("run (between stages)", lambda out: _run_args(work, model, prompts, out), False),
    ]
    outcomes = []
    for name, args, same_stats in checks:
        try:
            outcomes.append(_crash_check(work / name.split()[0], name, args, kills, rng, same_stats))
        except Exception as exc:
            outcomes.append(Outcome("crash", name, kills, 0, note=f"{type(exc).__name__}: {exc}"))
    return outcomes


def _teacher(work: Path, quick: bool) -> str:
    """The tiny in-process Llama for CI; SmolLM2-135M through transformers for the full run."""
    if not quick:
        from distill.models import resolve_model

        return resolve_model("smollm2-135m")
    from tests.conftest import build_tiny_model

    path = work / "tiny-model"
    if not (path / "config.json").exists():
        build_tiny_model(path)
    return str(path)


def _prompts(work: Path, n: int) -> Path:
    path = work / "prompts.jsonl"
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _generate_args(model: str, prompts: Path, out: Path) -> list[str]:
    # Tiny files and frequent flushes: many moments at which a kill can land mid-write. No response cache: the
    # crashed run would find the reference run's samples there and finish before a kill could land.
    return ["generate", "--model", model, "--source", str(prompts), "-n", "3", "--max-tokens", "48", "--batch-size",
            "4", "--rows-per-file", "4", "--flush-seconds", "0.5", "-q", "--no-cache", "--out", str(out)]  # fmt: skip


def _filter_args(work: Path, out: Path, quick: bool) -> list[str]:
    source = work / "filter-input"
    if not (source / "stats.json").exists():
        from benchmarks.synth import write_generate_output

        write_generate_output(source, 3000 if quick else 20000, samples=4, seed=1, rows_per_file=500)
        (source / "stats.json").write_text("{}", encoding="utf-8")
    return ["filter", str(source), "--verifiers", "math,format,language", "--dedupe", "near", "--batch-size", "64",
            "--rows-per-file", "200", "-q", "--out", str(out)]  # fmt: skip


def _run_args(work: Path, model: str, prompts: Path, out: Path) -> list[str]:
    recipe = {
        "out": str(out),
        "generate": {"source": str(prompts), "model": model, "num_samples": 2, "max_tokens": 32, "batch_size": 4,
                     "rows_per_file": 4, "flush_seconds": 0.5, "cache": False},
        "filter": {"verifiers": {"length": {"min_tokens": 0}}, "rows_per_file": 4, "batch_size": 4},
        "train": {"student": model, "max_steps": 6, "batch_size": 2, "max_length": 128, "quiet": True,
                  "trl": {"save_steps": 2}},
    }  # fmt: skip
    path = work / f"recipe-{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return ["run", str(path)]


def _crash_check(folder: Path, name: str, make_args, kills: int, rng: random.Random, same_stats: bool) -> Outcome:
    reference, crashed = folder / "reference", folder / "crashed"
    started = time.monotonic()
    _run_to_end(make_args(reference))
    reference_seconds = time.monotonic() - started
    expected = _outputs(reference)

    args = make_args(crashed)
    landed, notes = 0, []
    for attempt in range(kills):
        resume = ["--resume"] if attempt and args[0] != "run" else []
        if _kill_once(args + resume, crashed, rng, reference_seconds):
            landed += 1
            notes.append(str(_rows_on_disk(crashed)))
        else:
            break  # the command finished before the kill: nothing left to interrupt
    _run_to_end(args + (["--resume"] if args[0] != "run" else []))
    got = _outputs(crashed)

    lost = 0
    for key, ids in expected["ids"].items():
        counts = Counter(got["ids"].get(key, []))
        lost += len(set(ids) - set(counts)) + sum(n - 1 for n in counts.values() if n > 1)
    problems = [p for p in got["unreadable"]]
    keys = None if same_stats else ("samples", "total")
    if _stats(got["stats"], keys) != _stats(expected["stats"], keys):
        problems.append(f"stats differ from the reference: {_stats(got['stats'], keys)}")
    note = f"{landed} kills landed (rows on disk at each: {', '.join(notes) or '-'})"
    if problems:
        note += "; " + "; ".join(problems[:3])
    survived = landed if not problems and lost == 0 else 0
    return Outcome("crash", name, landed, survived, rows_lost=lost, note=note)


def _kill_once(args: list[str], out: Path, rng: random.Random, reference_seconds: float) -> bool:
    """Start the command, wait until it writes something new, then SIGKILL it a random moment later."""
    before = _files(out)
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    deadline = time.monotonic() + max(600.0, 5 * reference_seconds)
    while process.poll() is None and time.monotonic() < deadline:
        if _files(out) - before:
            time.sleep(rng.uniform(0.0, min(2.0, reference_seconds / 10)))
            break
        time.sleep(0.05)
    if process.poll() is not None:
        _check_exit(process, args)
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return True


def _run_to_end(args: list[str]) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "distill", *args], capture_output=True, text=True, timeout=1800,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    _check_exit(process, args)


def _check_exit(process, args: list[str]) -> None:
    if process.returncode != 0:
        stderr = process.stderr if isinstance(process.stderr, str) else process.stderr.read().decode()
        raise RuntimeError(f"`distill {' '.join(args[:1])}` exited {process.returncode}: {stderr.strip()[-300:]}")


def _files(out: Path) -> set[tuple[str, int]]:
    """Finished Parquet files and checkpoints under `out` (name and size): what counts as new work written."""
    if not out.exists():
        return set()
    found = set()
    for path in out.rglob("*"):
        if path.name.startswith("."):
            continue
        if path.suffix == ".parquet" or path.name.startswith("checkpoint-"):
            try:
                found.add((str(path), path.stat().st_size))
            except FileNotFoundError:  # renamed or deleted by the running command meanwhile
                pass
    return found


def _stats(stats: dict, keys) -> dict:
    return stats if keys is None else {k: {n: v.get(n) for n in keys} for k, v in stats.items()}


def _rows_on_disk(out: Path) -> int:
    rows = 0
    for path in out.rglob("*.parquet"):
        if not path.name.startswith("."):
            try:
                rows += pq.ParquetFile(path).metadata.num_rows
            except Exception:  # a file is checked for readability at the end, not here
                pass
    return rows


def _outputs(out: Path) -> dict:
    """The ids of every output folder of `out` (generate data, filter data and rejected), the stats, and the
    Parquet files that cannot be read."""
    ids: dict[str, list[str]] = {}
    stats: dict[str, dict] = {}
    unreadable = []
    for path in sorted(out.rglob("*.parquet")):
        if path.name.startswith(".") or "checkpoint" in str(path):
            continue
        try:
            table = pq.read_table(path, columns=["id"])
        except Exception as exc:
            unreadable.append(f"unreadable {path.relative_to(out)}: {exc}")
            continue
        key = str(path.parent.relative_to(out))
        ids.setdefault(key, []).extend(table.column("id").to_pylist())
    for path in sorted(out.rglob("stats.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        # How long and how much this run did differ between an interrupted run and a clean one; what it holds not.
        volatile = {"generated_this_run", "seconds_this_run", "tokens_per_second"}
        stats[str(path.parent.relative_to(out))] = {k: v for k, v in data.items() if k not in volatile}
    return {"ids": ids, "stats": stats, "unreadable": unreadable}
