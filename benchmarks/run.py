"""All of issue 7's benchmarks in one command: `python benchmarks/run.py [--quick] [--only engines,stages]`.

Every figure is a ratio of two things measured side by side in this run, on this machine, so a noisy machine
moves both sides together:

  engines   (benchmarks/engines.py) distill's vllm, openai and transformers engines against the bare loops they
            wrap: output tokens/s, plus openai throughput against concurrency
  stages    (benchmarks/stages.py) filter rows/s against a single-process math-verify loop and its peak memory
            from 10k to 1M rows, MinHash dedupe time from 100k to 1M prompts, SFT tokens/s with and without
            packing; on synthetic data from benchmarks/synth.py (long-tailed lengths like R1 traces)
  hostile   (benchmarks/hostile.py, issue 11) each verifier fed 1 MB hostile answers: the slowest against a 1 s
            target, and the time at 1 MB over the time at 256 KB (linear: ~4)
  train     (benchmarks/train_speed.py) `distill train` tokens/s, full and LoRA, against a bare transformers
            training loop on the same rows, batch and template (target >= 0.9x)
  ray       (benchmarks/ray_filter.py, issue 16) `distill filter --backend ray` rows/s against the local backend
            on the same input, outputs checked identical (target >= 0.8x)
  api       (benchmarks/api.py, issue 23) the openai engine against a fake API: throughput at a rate limit (>= 0.9x
            with <= 5% 429s, 0 rows lost), a cached rerun (0 requests, <= 5% of the time), --budget (never
            overspent, resumes to the unbudgeted rows), random SIGINTs (0 finished responses lost)

It prints one table and writes `benchmarks/results.json`: a list of items `{"name", "ours", "baseline", "unit",
"ratio", "target", "met"}`. `--quick` fits in about 10 minutes on a quiet 2-core machine; the full run takes
longer (more rounds and rows). Nothing else should run on the machine meanwhile. benchmarks/RESULTS.md records
the latest figures, the machine and the command.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import api, engines, hostile, ray_filter, stages, train_speed  # noqa: E402

PARTS = ("engines", "stages", "hostile", "train", "ray", "api")
RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    import os

    import torch

    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 10 minutes on a quiet 2-core machine")
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the results file (default: {RESULTS})")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.4, help="vLLM's memory fraction (RAM on CPU); 0.4"
    )
    args = parser.parse_args(argv)
    parts = PARTS if not args.only else [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part {unknown[0]}: choose from {', '.join(PARTS)}")

    started = time.monotonic()
    items: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        work = args.work or Path(tmp)
        if "engines" in parts:
            items += engines.run(args.quick, work / "engines", gpu_memory_utilization=args.gpu_memory_utilization)
        if "stages" in parts:
            items += stages.run(args.quick, work / "stages")
        if "hostile" in parts:
            items += hostile.run(args.quick, work / "hostile")
        if "train" in parts:
            items += train_speed.run(args.quick, work / "train")
        if "ray" in parts:
            items += ray_filter.run(args.quick, work / "ray")
        if "api" in parts:
            items += api.run(args.quick, work / "api")
    args.out.write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8")
    minutes = (time.monotonic() - started) / 60
    print(f"distill benchmarks ({'quick' if args.quick else 'full'}), {minutes:.1f} min, {machine()}")
    print(engines.format_table(items))
    missed = [i["name"] for i in items if i["met"] is False]
    print(f"targets met: {sum(i['met'] is True for i in items)} of {sum(i['met'] is not None for i in items)}")
    if missed:
        print("missed: " + "; ".join(missed))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
