"""`distill filter --backend ray` against the local backend on this machine (issue 16): rows/s, same input, side by
side, and the same output.

Both sides are the real command (`python -m distill filter ...`) in a fresh process on the same synthetic
`distill generate` output (benchmarks/synth.py), with `--verifiers math,format --dedupe near`. Rounds alternate
which backend goes first, and each figure is the median over rounds. The Ray side starts its own local Ray
(`ray.init()` with no address) inside the timed window, as a user's first `--backend ray` on a laptop does.
Two sizes separate the two costs: the rate per added row between them (the target, >= 0.8x the local backend:
Ray's overhead on every row, what a long cluster run pays) and the fixed start-up that rate leaves over (Ray's
start, actor pools, the separate dedupe hashing pass; seconds, paid once). Every round
also checks that both outputs keep and reject the same ids and write byte-identical stats.json: a faster wrong
answer would not count.

    python benchmarks/ray_filter.py [--quick] [--sizes SMALL,LARGE] [--rounds R]
    python benchmarks/run.py --only ray
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.items import format_table, item  # noqa: E402
from benchmarks.stages import _input, _python, run_measured  # noqa: E402

VERIFIERS = "math,format"
TARGET = ">= 0.8"


def _ids(out: Path) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    def read(folder: str) -> list[str]:
        files = sorted((out / folder).glob("*.parquet"))
        return sorted(i for f in files for i in pq.read_table(f, columns=["id"]).column(0).to_pylist())

    return read("data"), read("rejected")


def run_backend(work: Path, source: Path, backend: str, label: str) -> dict:
    out = work / f"filter-{backend}-{label}"
    command = _python("-m", "distill", "filter", str(source), "--verifiers", VERIFIERS, "--dedupe", "near",
                      "--out", str(out), "-q", "--overwrite", "--backend", backend)  # fmt: skip
    result = run_measured(command)
    result["out"] = out
    return result


def measure(rows: int, rounds: int, work: Path) -> dict[str, list[float]]:
    """Wall seconds of each backend on `rows` rows, `rounds` times, alternating which goes first; outputs checked."""
    source = _input(work, rows)
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    for r in range(rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        results = {backend: run_backend(work, source, backend, f"{rows}-{r}") for backend in order}
        for backend, result in results.items():
            walls[backend].append(result["wall_s"])
        local_out, ray_out = results["local"]["out"], results["ray"]["out"]
        same_ids = _ids(local_out) == _ids(ray_out)
        same_stats = (local_out / "stats.json").read_bytes() == (ray_out / "stats.json").read_bytes()
        if not (same_ids and same_stats):
            raise RuntimeError(f"round {r}: ray and local outputs differ (ids {same_ids}, stats {same_stats})")
        print(f"[ray] {rows} rows, round {r}: local {results['local']['wall_s']:.1f} s, "
              f"ray {results['ray']['wall_s']:.1f} s, same ids and stats", file=sys.stderr)  # fmt: skip
    return walls


def compare(small: int, large: int, rounds: int, work: Path) -> tuple[list[dict], dict]:
    """Items: end-to-end rows/s at both sizes (informational), the per-row rate between them (the target: what a
    long run pays per row once both are started) and the fixed start-up that rate leaves over (informational)."""
    walls = {n: measure(n, rounds, work) for n in (small, large)}
    med = {n: {b: statistics.median(w[b]) for b in w} for n, w in walls.items()}
    label = f"{VERIFIERS}, dedupe near, median of {rounds}"
    items = [item(f"filter rows/s --backend ray vs local, end to end ({n // 1000}k rows, {label})",
                  n / med[n]["ray"], n / med[n]["local"], "rows/s", None) for n in (small, large)]  # fmt: skip
    more, slope, fixed = per_row_items(small, large, med, label)
    return items + more, {"walls": {str(n): w for n, w in walls.items()}, "slope": slope, "fixed_s": fixed}


def per_row_items(small: int, large: int, med: dict, label: str) -> tuple[list[dict], dict, dict]:
    """The per-added-row rate of each backend between the two sizes' median walls, and the start-up it leaves over.
    When a backend's larger run was not slower, the sizes are too close for the per-row cost to show above run-to-run
    noise: that line says so and meets nothing, rather than print a rate made of noise."""
    name = f"filter rows/s --backend ray vs local, per added row ({small // 1000}k -> {large // 1000}k rows"
    name = f"{name}: start-up excluded, {label})"
    start_up = "filter start-up --backend ray vs local (process, Ray start, actors, dedupe pass), seconds"
    added = {b: med[large][b] - med[small][b] for b in ("local", "ray")}
    if min(added.values()) <= 0:
        why = "not measurable: a larger run was not slower, so noise hides the per-row cost; use sizes further apart"
        lines = [item(f"{name} - {why}", math.nan, math.nan, "rows/s", None)]
        return lines + [item(f"{start_up} - {why}", math.nan, math.nan, "s", None)], {}, {}
    slope = {b: (large - small) / added[b] for b in added}
    fixed = {b: med[small][b] - small / slope[b] for b in slope}
    lines = [item(name, slope["ray"], slope["local"], "rows/s", TARGET)]
    return lines + [item(start_up, fixed["ray"], fixed["local"], "s", None)], slope, fixed


def run(quick: bool, work: Path) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    items, _ = compare(10_000, 40_000 if quick else 100_000, 2 if quick else 3, work)
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 40k rows, 2 rounds (about 4 minutes)")
    parser.add_argument("--sizes", help="SMALL,LARGE rows instead (default 10000,100000; quick 10000,40000)")
    parser.add_argument("--rounds", type=int, help="rounds per size (default 3; quick 2)")
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    small, large = (10_000, 40_000 if args.quick else 100_000)
    if args.sizes:
        small, large = (int(v) for v in args.sizes.split(","))
    rounds = args.rounds or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="distill-ray-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        items, summary = compare(small, large, rounds, work)
        print(json.dumps(summary))
    print(format_table(items))
    print(f"{(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
