"""`distill filter --backend ray` against the local backend on this machine (issue 16): rows/s, same input, side by
side, and the same output.

Both sides are the real command (`python -m distill filter ...`) in a fresh process on the same synthetic
`distill generate` output (benchmarks/synth.py), with `--verifiers math,format --dedupe near`. Rounds alternate
which backend goes first, and each figure is the median over rounds. The Ray side starts its own local Ray
(`ray.init()` with no address) inside the timed window, as a user's first `--backend ray` on a laptop does, so
the small input shows that fixed start-up and the large one the per-row overhead a long run pays. Every round
also checks that both outputs keep and reject the same ids and write byte-identical stats.json: a faster wrong
answer would not count.

    python benchmarks/ray_filter.py [--quick] [--rows N] [--rounds R]
    python benchmarks/run.py --only ray
"""

import argparse
import json
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


def measure(rows: int, rounds: int, work: Path) -> tuple[list[dict], dict]:
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
    local_s, ray_s = statistics.median(walls["local"]), statistics.median(walls["ray"])
    summary = {"rows": rows, "rounds": rounds, "local_s": walls["local"], "ray_s": walls["ray"]}
    label = f"{rows // 1000}k rows, {VERIFIERS}, dedupe near, median of {rounds}"
    return [item(f"filter rows/s --backend ray vs local ({label})", rows / ray_s, rows / local_s, "rows/s",
                 TARGET)], summary  # fmt: skip


def run(quick: bool, work: Path) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    items = []
    if not quick:  # the small input shows the fixed start-up cost; informational
        small, _ = measure(4_000, 2, work)
        small[0]["target"], small[0]["met"] = None, None
        items += small
    main_items, _ = measure(10_000 if quick else 40_000, 2 if quick else 3, work)
    return items + main_items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows, 2 rounds")
    parser.add_argument("--rows", type=int, help="one size only: this many rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distill-ray-bench-") as tmp:
        work = args.work or Path(tmp)
        if args.rows:
            items, summary = measure(args.rows, args.rounds, work)
            print(json.dumps(summary))
        else:
            items = run(args.quick, work)
    print(format_table(items))
    print(f"{(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
