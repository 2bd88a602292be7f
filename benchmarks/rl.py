"""GRPO on SmolLM2-135M (R1-Zero style, rule rewards only): held-out pass@1 before and after, over seeds.

    python benchmarks/rl.py            # 3 training seeds, 30 steps each, 48 held-out prompts x 4 samples
    python benchmarks/rl.py --quick    # 1 seed, 6 steps, 16 prompts x 2 samples (a smoke run, not a claim)

Training prompts: reasoning-gym basic_arithmetic (one-digit sums and differences), seed 0. Held out: the same task
generated with seed 1000, less every sum a training prompt has (distill.train.compare.problem_key), so no training
problem is evaluated. Rewards: lenient math (last number) 1.0 + format
(\\boxed{}, no think block required) 0.2. Each model is sampled once with `distill eval` (the lenient verifier);
strict (boxed) correctness is read from the same generations, so a format-only gain (more boxes, same numbers)
shows as strict rising with lenient flat. Gains get 95% intervals from a paired bootstrap over prompts, per seed
and for the mean over seeds. Appends a section to benchmarks/RESULTS.md.
"""

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.config import EvalConfig  # noqa: E402
from distill.filter.verifiers.registry import build_verifier  # noqa: E402
from distill.rl.grpo import RlConfig, run_rl  # noqa: E402
from distill.rl.rewards import RewardSpec  # noqa: E402
from distill.train.eval import run_eval  # noqa: E402

TASK = "reasoning-gym:basic_arithmetic"
TASK_OPTIONS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}
MODEL = "smollm2-135m"
TOKENS = 96
LR = 2e-5  # 1e-5 moved the policy little in 6 steps (KL 0.0016, quick run); 30 steps of one prompt need more


def train(seed: int, steps: int, out: Path) -> float:
    start = time.time()
    run_rl(
        RlConfig(
            source=TASK,
            source_options=TASK_OPTIONS,
            num_prompts=max(steps, 8),
            seed=0,
            model=MODEL,
            out=str(out),
            rewards=[
                RewardSpec("math", 1.0, {"extraction": "lenient", "workers": 0}),
                RewardSpec("format", 0.2, {"require_think": False}),
            ],
            num_generations=8,
            max_completion_length=TOKENS,
            learning_rate=LR,
            max_steps=steps,
            save_steps=steps,
            trl={"seed": seed, "data_seed": seed},
            overwrite=True,
        )
    )
    return time.time() - start


def per_prompt_rates(folder: Path, strict) -> tuple[dict, dict]:
    """prompt -> lenient and strict pass rate, from samples.parquet and the generations it was verified from."""
    samples = pq.read_table(folder / "samples.parquet").to_pylist()
    lenient: dict[str, list] = {}
    for s in samples:
        lenient.setdefault(s["prompt_id"], []).append(s["correct"] is True)
    rows = []
    for f in sorted((folder / "generations").rglob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    strict_hits: dict[str, list] = {}
    for row in rows:
        strict_hits.setdefault(row["prompt_id"], []).append(strict.verify(row).passed is True)
    mean = lambda d: {k: sum(v) / len(v) for k, v in d.items()}  # noqa: E731
    return mean(lenient), mean(strict_hits)


def paired_bootstrap(before: dict, after: dict, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    ids = sorted(before)
    diffs = [after[i] - before[i] for i in ids]
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in ids) / len(ids) for _ in range(n))
    return sum(diffs) / len(diffs), means[int(0.025 * n)], means[int(0.975 * n) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default="/tmp/distill-bench-rl")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args()
    seeds, steps, prompts, samples = ([0], 6, 16, 2) if args.quick else ([0, 1, 2], 30, 48, 4)
    work = Path(args.work)
    begun = time.time()
    models, labels, train_seconds = [MODEL], ["base"], []
    for seed in seeds:
        out = work / f"rl-seed{seed}"
        train_seconds.append(train(seed, steps, out))
        models.append(str(out))
        labels.append(f"rl-seed{seed}")
    run_eval(
        EvalConfig(
            models=models,
            labels=labels,
            source=TASK,
            source_options=TASK_OPTIONS,
            seed=1000,
            num_prompts=prompts,
            num_samples=samples,
            max_tokens=TOKENS,
            # 64 samples a batch: 100 s a model for 48 x 4 samples on 2 cores, against ~165 s in batches of 16 and
            # 106 s on vLLM CPU with its engine start (measured 2026-11-28)
            batch_size=64,
            verifiers={"math": {"extraction": "lenient", "workers": 0}},
            # held out means held out: the one-digit sums RL trained on are left out (2 of the first 48 were)
            exclude=[{"source": TASK, "source_options": TASK_OPTIONS, "seed": 0, "num_prompts": max(steps, 8)}],
            out=str(work / "eval"),
            overwrite=True,
            quiet=True,
        )
    )
    strict = build_verifier("math", {"extraction": "boxed", "workers": 0})
    rates = {label: per_prompt_rates(work / "eval" / label, strict) for label in labels}
    lines = [
        "| model | lenient pass@1 | strict pass@1 | lenient gain [95% CI] | strict gain [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        lenient, strict_rates = rates[label]
        row = [
            label,
            f"{sum(lenient.values()) / len(lenient):.3f}",
            f"{sum(strict_rates.values()) / len(strict_rates):.3f}",
        ]
        if label == "base":
            row += ["", ""]
        else:
            for kind in (0, 1):
                gain, low, high = paired_bootstrap(rates["base"][kind], rates[label][kind])
                row.append(f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append("| " + " | ".join(row) + " |")
    if len(seeds) > 1:  # the mean over training seeds, per prompt, against the base
        pooled = []
        for kind in (0, 1):
            mean_after = {
                p: sum(rates[f"rl-seed{s}"][kind][p] for s in seeds) / len(seeds) for p in rates["base"][kind]
            }
            gain, low, high = paired_bootstrap(rates["base"][kind], mean_after)
            pooled.append(f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"| mean of {len(seeds)} seeds | | | {pooled[0]} | {pooled[1]} |")
    table = "\n".join(lines)
    elapsed = time.time() - begun
    header = (
        f"\n## distill rl: GRPO on SmolLM2-135M ({'quick' if args.quick else 'full'})\n\n"
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{platform.processor() or 'cpu'}, {os.cpu_count()} CPUs, load average at the end "
        f"{os.getloadavg()[0]:.1f} (1 min) / {os.getloadavg()[2]:.1f} (15 min)\n"
        f"- command: `python benchmarks/rl.py{' --quick' if args.quick else ''}`\n"
        f"- training: {TASK} {json.dumps(TASK_OPTIONS)}, seed 0 prompts, {steps} steps x 8 completions of <= {TOKENS} "
        f"tokens, rewards math(lenient)=1.0 + format=0.2, beta 0.001, lr {LR:g}; seeds {seeds}; "
        f"train seconds {[round(s) for s in train_seconds]}\n"
        f"- held out: seed 1000, {prompts} prompts x {samples} samples, temperature 0.6; "
        f"total {elapsed / 60:.1f} min\n\n"
    )
    print(header + table)
    if not args.no_write:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write(header + table + "\n")


if __name__ == "__main__":
    main()
