"""Stage benchmarks (issue 7 d, e, f): filter throughput and memory, dedupe scaling, SFT packing.

    python -m benchmarks.stages [--quick] [--work DIR] [--only filter,dedupe,sft] [--json OUT.json]

`run(quick, work)` returns one item per line of the table, each `{"name", "ours", "baseline", "unit", "ratio",
"target", "met"}` (ratio = ours / baseline; informational rows have target and met None). Inputs come from
benchmarks/synth.py (seeded). Every measured command runs as its own subprocess, as a user runs it.

**Filter throughput.** Ours: the wall time of the whole `python -m distill filter IN --verifiers
math,format,language --out OUT -q` (start-up, the spawn of the math pool's workers, reading, the three verifiers,
writing and stats included), default workers (os.cpu_count()). Baseline: a single-process loop over
math-verify as a script would write it (`parse(gold)`, `parse(answer)`, `verify`) on the rows that have a gold,
timed over the loop only (after a warm-up call, so its imports are not counted: in its favour). It does less
than the filter (no format or language check, no output); the ratio is rows per second, ours over baseline. In
quick mode the baseline loop runs on the first rows of the same input (the rate is per row; the rows are drawn
independently).

**Filter memory: what grows with the input.** The filter streams record batches (`--batch-size`, 256 rows) and
flushes kept and rejected rows every `--rows-per-file` (10,000) rows, so rows in flight are bounded. What does
grow: `Tally.prompts` and `Tally.prompts_kept`, one prompt id per distinct prompt (for stats.json's
"prompts_without_kept_sample"), so ~100 bytes per prompt, ~25 MB for 1M rows at 4 samples per prompt; the
verifier and domain Counters are bounded by the number of reasons and domains. Flags that add per-prompt state
and are off by default: `--dedupe exact|near` (a decision per prompt id and ~1 KB per kept prompt: measured
separately below), `--max-per-prompt` (a Counter per prompt) and `--select best` (a heap per prompt). The real
recipes (recipes/r1-distill-qwen-7b.yaml) use none of them, so the measured run uses the defaults. The
10k-row run already holds a full write buffer (10k rows), so it is a fair floor.

Peak RSS is that of the whole process tree: the filter, its math workers and multiprocessing's resource
tracker, summed, polled every 50 ms with psutil (`/proc/<pid>/statm` of each process in
`Process.children(recursive=True)`). A sum of RSS counts shared pages (libraries, the interpreter) once per
process, so it overstates the machine's real use, equally at every size.

Scale: math-verify costs ~5-7 ms a row on one core (sympy), so 1M rows with the math verifier take hours on
2 cores. Full mode measures the tree with math,format,language at 10k and 100k rows, and the 1M point with
`--verifiers format` (the same streaming path, writers and tally; only the verifier work differs, which holds no
per-row state), against 10k rows with the same flags. Quick mode: 1k vs 10k rows with math,format,language.

**Dedupe.** `PromptDeduper(threshold 0.8).check_batch` over 100k and 1M synthetic prompts (10% near or exact
copies of earlier prompts), in batches of 256 (the filter's batch size; with one sample per prompt every item
is new), each size in its own subprocess. Time is the sum of the check_batch calls (prompt generation not
counted); memory is the subprocess's peak RSS (`ru_maxrss`) and its growth over the RSS just before the
deduper was built. Recall: the share of injected copies found (exact or near).

**SFT packing.** `python -m distill train DATA --packing` vs `--no-packing`, each a subprocess, on the same
synthetic filter output (long-tailed assistant turns), student the embedded SmolLM2-135M in fp32 on CPU, LoRA
r=16 on all linear layers (the CPU recipe, recipes/students/smollm2-135m.yaml), sdpa attention, no gradient
checkpointing, the same per-device batch (sequences without packing, packs with it), gradient accumulation 1,
max length and number of steps. Tokens per second = TRL's `num_tokens` (logged each step to trainer_state.json:
the attention mask's sum without packing, i.e. non-pad tokens, and the flattened length with padding-free
packing, which has no pads) over `train_runtime` (train_results.json; the training loop only, not loading the
model or tokenizing). The first step is a warm-up on both sides and stays in.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.items import format_table, item

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


# --------------------------------------------------------------------------------------------------------------
# process-tree memory
# --------------------------------------------------------------------------------------------------------------


class TreePeak:
    """Polls a process and its descendants every `interval` seconds; keeps the peak of their summed RSS."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self._root = psutil.Process(pid)
        self._psutil = psutil
        self.interval = interval
        self.peak = 0  # bytes, summed over the tree
        self.peak_main = 0  # bytes, the root process alone
        self.most_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._root] + self._root.children(recursive=True)
            except self._psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except self._psutil.Error:
                    continue
                total += rss
                if proc is self._root:
                    self.peak_main = max(self.peak_main, rss)
            self.peak = max(self.peak, total)
            self.most_processes = max(self.most_processes, len(procs))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(command: list[str], cwd: Path | None = None) -> dict:
    """Run a command; its wall time and its process tree's peak RSS. Raises with stderr's tail on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = TreePeak(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    peak.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed ({proc.returncode}): {stderr[-2000:]}")
    return {
        "wall_s": wall,
        "peak_rss": peak.peak,
        "peak_rss_main": peak.peak_main,
        "processes": peak.most_processes,
        "stdout": stdout,
        "stderr": stderr,
    }


# --------------------------------------------------------------------------------------------------------------
# filter
# --------------------------------------------------------------------------------------------------------------

FILTER_VERIFIERS = "math,format,language"
MB = 1024 * 1024


def _input(work: Path, rows: int) -> Path:
    from benchmarks.synth import write_generate_output

    folder = work / f"generate-{rows}"
    if not (folder / "stats.json").exists():
        write_generate_output(folder, rows, samples=4, seed=SEED)
    return folder


def run_filter(work: Path, source: Path, verifiers: str, label: str) -> dict:
    out = work / f"filter-{label}"
    result = run_measured(
        _python("-m", "distill", "filter", str(source), "--verifiers", verifiers, "--out", str(out), "-q",
                "--overwrite")
    )  # fmt: skip
    result["stats"] = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    return result


def baseline_math_verify(source: Path, limit: int | None) -> tuple[float, int]:
    """(rows per second, rows) of a plain single-process math-verify loop: parse gold, parse answer, verify."""
    import pyarrow.parquet as pq
    from math_verify import parse, verify

    table = pq.read_table(source / "data", columns=["gold", "answer"])
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    verify(parse("\\boxed{1}"), parse("\\boxed{1}"))  # imports and first-use caches: not timed
    started = time.perf_counter()
    for row in rows:
        if row["gold"] is None:  # nothing to check against (general prompts); the filter skips them too
            continue
        verify(parse(row["gold"]), parse(row["answer"] or ""))
    return len(rows) / (time.perf_counter() - started), len(rows)


def bench_filter(quick: bool, work: Path) -> list[dict]:
    items = []
    throughput_rows = 10_000 if quick else 20_000
    baseline_rows = 2_000 if quick else throughput_rows

    # Throughput (and in quick mode, the larger RSS point too).
    source = _input(work, throughput_rows)
    ours = run_filter(work, source, FILTER_VERIFIERS, f"{throughput_rows}")
    ours_rate = throughput_rows / ours["wall_s"]
    base_rate, base_rows = baseline_math_verify(source, baseline_rows)
    note = f"{throughput_rows // 1000}k rows" + (
        f", baseline on {base_rows // 1000}k" if base_rows != throughput_rows else ""
    )
    items.append(item(f"filter rows/s, math,format,language vs math-verify loop ({note})", ours_rate, base_rate,
                      "rows/s", ">= 1.7"))  # fmt: skip
    items.append(item("filter ms/row (ours, wall / rows) vs math-verify ms/row", 1000 / ours_rate, 1000 / base_rate,
                      "ms/row", None))  # fmt: skip

    # Peak RSS of the process tree. The write buffers hold up to --rows-per-file (10,000) rows as Python dicts,
    # so below 10k rows RSS grows with the input by design: both sizes compared are at least 10k.
    items.append(item(f"filter peak RSS (tree) {throughput_rows // 1000}k rows, {FILTER_VERIFIERS} (of which main "
                      "process)", ours["peak_rss"] / MB, ours["peak_rss_main"] / MB, "MB", None))  # fmt: skip
    if not quick:
        small = run_filter(work, _input(work, 10_000), FILTER_VERIFIERS, "10000")
        big = run_filter(work, _input(work, 100_000), FILTER_VERIFIERS, "100000")
        items.append(item(f"filter peak RSS (tree) 100k vs 10k rows, {FILTER_VERIFIERS}", big["peak_rss"] / MB,
                          small["peak_rss"] / MB, "MB", "<= 1.5"))  # fmt: skip
        items.append(item("filter peak RSS (main process) 100k vs 10k rows", big["peak_rss_main"] / MB,
                          small["peak_rss_main"] / MB, "MB", None))  # fmt: skip
    # The streaming path alone at scale (1M rows with the math verifier would take hours on 2 cores).
    large = 100_000 if quick else 1_000_000
    big = run_filter(work, _input(work, large), "format", f"{large}-format")
    small = run_filter(work, _input(work, 10_000), "format", "10000-format")
    label = f"{large // 1000}k" if large < 1_000_000 else "1M"
    items.append(item(f"filter peak RSS (tree) {label} vs 10k rows, --verifiers format", big["peak_rss"] / MB,
                      small["peak_rss"] / MB, "MB", "<= 1.5"))  # fmt: skip
    items.append(item(f"filter rows/s {label} vs 10k rows, --verifiers format", large / big["wall_s"],
                      10_000 / small["wall_s"], "rows/s", None))  # fmt: skip
    return items


# --------------------------------------------------------------------------------------------------------------
# dedupe
# --------------------------------------------------------------------------------------------------------------


def dedupe_job(num_prompts: int, batch: int = 256, near_fraction: float = 0.1) -> dict:
    """Run in a subprocess: time PromptDeduper.check_batch over synthetic prompts; memory; recall of the copies."""
    import numpy as np  # noqa: F401  (imported before the RSS reference point)

    from benchmarks.synth import dedupe_prompts
    from distill.filter.dataset.dedupe import PromptDeduper

    batches = dedupe_prompts(num_prompts, near_fraction, seed=SEED, batch=batch)
    first = next(batches)  # builds the vocabulary before the reference point
    rss_before = _rss_now()
    deduper = PromptDeduper(threshold=0.8)
    spent = 0.0
    copies = found = false_drops = 0
    for chunk in _chain(first, batches):
        started = time.perf_counter()
        verdicts = deduper.check_batch([(prompt_id, text) for prompt_id, text, _ in chunk])
        spent += time.perf_counter() - started
        for (_, _, source), verdict in zip(chunk, verdicts, strict=True):
            copies += source is not None
            found += source is not None and verdict is not None
            false_drops += source is None and verdict is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "prompts": num_prompts,
        "seconds": spent,
        "peak_rss": peak,
        "growth": peak - rss_before,
        "copies": copies,
        "found": found,
        "false_drops": false_drops,
        "counts": deduper.counts,
    }


def _chain(first, rest):
    yield first
    yield from rest


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_dedupe(num_prompts: int) -> dict:
    code = f"import json; from benchmarks.stages import dedupe_job; print(json.dumps(dedupe_job({num_prompts})))"
    result = subprocess.run(_python("-c", code), env=_env(), capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"dedupe job failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_dedupe(quick: bool, work: Path) -> list[dict]:
    sizes = (20_000, 200_000) if quick else (100_000, 1_000_000)
    small, big = run_dedupe(sizes[0]), run_dedupe(sizes[1])
    label = f"{sizes[1] // 1000}k vs {sizes[0] // 1000}k prompts"
    items = [
        item(f"dedupe time {label} (check_batch, batches of 256)", big["seconds"], small["seconds"], "s", "<= 12"),
        item(f"dedupe peak RSS {label}", big["peak_rss"] / MB, small["peak_rss"] / MB, "MB", None),
        item(f"dedupe RSS growth {label} (peak - before)", big["growth"] / MB, small["growth"] / MB, "MB", None),
    ]
    for run in (small, big):
        n = run["prompts"]
        items.append(item(f"dedupe recall of injected copies, {n // 1000}k prompts (found / injected)", run["found"],
                          run["copies"], "prompts", None))  # fmt: skip
        items.append(item(f"dedupe distinct prompts dropped, {n // 1000}k prompts (dropped / prompts)",
                          run["false_drops"], n, "prompts", None))  # fmt: skip
    return items


# --------------------------------------------------------------------------------------------------------------
# SFT packing
# --------------------------------------------------------------------------------------------------------------


def run_train(work: Path, data: Path, packing: bool, steps: int, batch: int, max_length: int) -> dict:
    out = work / f"train-{'packing' if packing else 'no-packing'}"
    command = _python(
        "-m", "distill", "train", str(data), "--out", str(out), "--overwrite", "-q",
        "--chat-template", "think-preserving", "--lora", "--dtype", "float32", "--attn-implementation", "sdpa",
        "--no-gradient-checkpointing", "--packing" if packing else "--no-packing",
        "--max-length", str(max_length), "--batch-size", str(batch), "--gradient-accumulation-steps", "1",
        "--max-steps", str(steps),
    )  # fmt: skip
    result = run_measured(command)
    metrics = json.loads((out / "train_results.json").read_text(encoding="utf-8"))
    state_file = out / "trainer_state.json"
    history = json.loads(state_file.read_text(encoding="utf-8"))["log_history"] if state_file.exists() else []
    tokens = max((entry.get("num_tokens", 0) for entry in history), default=0)
    return {
        "tokens": tokens,
        "runtime": metrics["train_runtime"],
        "steps": metrics.get("global_step"),
        "wall_s": result["wall_s"],
        "peak_rss": result["peak_rss"],
    }


def bench_sft(quick: bool, work: Path) -> list[dict]:
    from benchmarks.synth import write_sft_output

    steps, batch, max_length, rows = (2, 4, 512, 200) if quick else (6, 4, 1024, 400)
    data = work / "sft-data"
    if not (data / "data").exists():
        # Real R1 traces: median ~4-8k tokens under a 32k max length. Keep that ratio: the median reasoning is
        # max_length / 8 (in ~4-character tokens), so a few percent of the rows reach max_length and are cut.
        # The prompt and the final answer are short next to the reasoning, as in R1 data.
        write_sft_output(data, rows, seed=SEED, median_tokens=max_length / 8, answer_chars=(40, 200))
    packed = run_train(work, data, True, steps, batch, max_length)
    padded = run_train(work, data, False, steps, batch, max_length)
    packed_rate, padded_rate = packed["tokens"] / packed["runtime"], padded["tokens"] / padded["runtime"]
    shape = f"{steps} steps x {batch} per step, max_length {max_length}, LoRA fp32 CPU"
    return [
        item(f"SFT tokens/s --packing vs --no-packing ({shape})", packed_rate, padded_rate, "tokens/s", ">= 1.5"),
        item("SFT real tokens per step --packing vs --no-packing", packed["tokens"] / steps, padded["tokens"] / steps,
             "tokens", None),
        item("SFT seconds per step --packing vs --no-packing", packed["runtime"] / steps, padded["runtime"] / steps,
             "s", None),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------------------

PARTS = {"filter": bench_filter, "dedupe": bench_dedupe, "sft": bench_sft}


def run(quick: bool, work: Path, only: list[str] | None = None) -> list[dict]:
    items = []
    for name, part in PARTS.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        items.extend(part(quick, folder))
        print(f"[stages] {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: a few minutes on 2 cores")
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    parser.add_argument("--only", help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write the items to this file")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        items = run(args.quick, args.work, only)
    else:
        with tempfile.TemporaryDirectory(prefix="distill-stages-") as tmp:
            items = run(args.quick, Path(tmp), only)
    print(format_table(items))
    if args.json:
        args.json.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return 0 if all(i["met"] is not False for i in items) else 1


if __name__ == "__main__":
    sys.exit(main())
