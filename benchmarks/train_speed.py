"""`distill train` against a plain transformers training loop: tokens/s on the same data, batch and model.

    python -m benchmarks.train_speed [--quick] [--json OUT.json]
    python -m benchmarks.train_speed --batching FILTER_OUTPUT [--epochs 1]

Both sides fine-tune the embedded SmolLM2-135M-Instruct (fp32, CPU) on the same synthetic R1-style rows
(benchmarks/synth.py), rendered with the same think-preserving chat template, batch B, max length L, no packing,
AdamW, no gradient checkpointing; once fully and once with LoRA (r 16, alpha 32, all linear layers, as
`distill train --lora`). Ours is `distill train` in a subprocess, timed by the trainer (`train_runtime`, model
loading excluded); the baseline is the bare loop: tokenize, pad to the longest row of the batch, forward,
backward, optimizer step, timed around the steps only. tokens/s counts the non-padding tokens of each side.
Each side runs in a fresh process; rounds alternate which goes first and each figure is the median.
Target: ours >= 0.9x the bare loop; what costs more is overhead worth removing (eval, checkpoints, logging,
dataloader workers, gradient checkpointing on a CPU). Both sides take rows in the order they come (ours: random
batches, --no-group-by-length), so padding costs them alike.

--batching compares `distill train`'s default length-grouped batches with random ones (--no-group-by-length) on
real traces (e.g. the proof's filtered set): seconds for the same epochs and real tokens/s, fresh processes,
full fine-tuning as benchmarks/proof.py trains (batch 4, max_length 384, fp32).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.items import format_table, item  # noqa: E402
from benchmarks.stages import _python, run_measured  # noqa: E402

SEED = 0


def ours(work: Path, data: Path, lora: bool, steps: int, batch: int, max_length: int) -> float:
    out = work / f"ours-{'lora' if lora else 'full'}"
    command = _python(
        "-m", "distill", "train", str(data), "--out", str(out), "--overwrite", "-q",
        "--chat-template", "think-preserving", *(["--lora"] if lora else []), "--dtype", "float32",
        "--attn-implementation", "sdpa", "--no-gradient-checkpointing", "--no-packing", "--no-group-by-length",
        "--max-length", str(max_length), "--batch-size", str(batch), "--gradient-accumulation-steps", "1",
        "--max-steps", str(steps),
    )  # fmt: skip
    run_measured(command)
    return _timing(out)[1]


def _timing(out: Path) -> tuple[float, float]:
    """(seconds, real tokens/s) of a finished `distill train` output, as its trainer timed and counted them."""
    runtime = json.loads((out / "train_results.json").read_text(encoding="utf-8"))["train_runtime"]
    history = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return runtime, max(entry.get("num_tokens", 0) for entry in history) / runtime


def baseline(data: Path, lora: bool, steps: int, batch: int, max_length: int) -> float:
    """The bare loop on the same rows, batches and template."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.models import embedded_model_dir
    from distill.train.templates import resolve_template

    torch.manual_seed(SEED)
    path = str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    template, _, _ = resolve_template("think-preserving", tokenizer)
    tokenizer.chat_template = template
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    rows = [r["messages"] for r in pq.read_table(sorted((data / "data").glob("*.parquet"))[0]).to_pylist()]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in rows]
    tokens, elapsed = 0, 0.0
    for step in range(steps):
        chunk = [texts[(step * batch + i) % len(texts)] for i in range(batch)]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        started = time.perf_counter()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed += time.perf_counter() - started
        tokens += int(enc["attention_mask"].sum())
    return tokens / elapsed


def batching(data: Path, work: Path, epochs: float) -> list[dict]:
    seconds, rates = {}, {}
    for grouped in (True, False):
        out = work / f"grouped-{grouped}"
        command = _python(
            "-m", "distill", "train", str(data), "--out", str(out), "--overwrite", "-q",
            "--chat-template", "think-preserving", "--lr", "1e-4", "--epochs", str(epochs), "--batch-size", "4",
            "--max-length", "384", "--no-gradient-checkpointing", "--seed", "0",
            "--group-by-length" if grouped else "--no-group-by-length",
        )  # fmt: skip
        run_measured(command)
        seconds[grouped], rates[grouped] = _timing(out)
        print(
            f"[batching] grouped={grouped}: {seconds[grouped]:.0f} s, {rates[grouped]:.1f} tokens/s", file=sys.stderr
        )
    shape = f"{epochs:g} epoch(s) of {data.name}, batch 4, full fp32 CPU"
    return [
        item(f"SFT real tokens/s length-grouped vs random batches ({shape})", rates[True], rates[False], "tokens/s",
             ">= 1.15"),
        item(f"SFT seconds length-grouped vs random batches ({shape})", seconds[True], seconds[False], "s", None),
    ]  # fmt: skip


def bare(data: Path, lora: bool, steps: int, batch: int, max_length: int) -> float:
    """The bare loop in a fresh process of its own, as `distill train` gets: neither side inherits the other's
    memory, thread pools or warm caches."""
    spec = json.dumps({"data": str(data), "lora": lora, "steps": steps, "batch": batch, "max_length": max_length})
    result = run_measured(_python("-m", "benchmarks.train_speed", "--bare-loop", spec))
    return float(result["stdout"].strip().splitlines()[-1])


def run(quick: bool, work: Path) -> list[dict]:
    from benchmarks.synth import write_sft_output

    steps, batch, max_length, rows = (4, 4, 384, 64) if quick else (12, 4, 512, 128)
    rounds = 1 if quick else 2  # run-to-run spread on a 2-core machine is ~10%: alternate who goes first
    data = work / "data"
    if not (data / "data").exists():
        write_sft_output(data, rows, seed=SEED, median_tokens=max_length / 4, answer_chars=(20, 80))
    items = []
    for lora in (False, True):
        kind = "LoRA" if lora else "full"
        shape = f"{steps} steps x batch {batch}, max_length {max_length}, {kind} fp32 CPU, median of {rounds}"
        rates: dict[str, list[float]] = {"ours": [], "bare": []}
        for r in range(rounds):
            for side in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
                shape_args = (data, lora, steps, batch, max_length)
                rate = ours(work, *shape_args) if side == "ours" else bare(*shape_args)
                rates[side].append(rate)
                print(f"[train] {kind} round {r}: {side} {rate:.1f} tokens/s", file=sys.stderr)
        med = {side: statistics.median(v) for side, v in rates.items()}
        items.append(item(f"SFT tokens/s distill train vs bare loop ({shape})", med["ours"], med["bare"], "tokens/s",
                          ">= 0.9"))  # fmt: skip
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, a few minutes on 2 cores")
    parser.add_argument("--json", type=Path, help="also write the items to this file")
    parser.add_argument("--batching", type=Path, metavar="DATA", help="grouped vs random batches on this data")
    parser.add_argument("--epochs", type=float, default=1.0, help="with --batching")
    parser.add_argument("--bare-loop", metavar="SPEC", help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args(argv)
    if args.bare_loop:
        spec = json.loads(args.bare_loop)
        print(baseline(Path(spec["data"]), spec["lora"], spec["steps"], spec["batch"], spec["max_length"]))
        return 0
    with tempfile.TemporaryDirectory(prefix="distill-train-speed-") as tmp:
        items = batching(args.batching, Path(tmp), args.epochs) if args.batching else run(args.quick, Path(tmp))
    print(format_table(items))
    if args.json:
        args.json.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return 0 if all(i["met"] is not False for i in items) else 1


if __name__ == "__main__":
    sys.exit(main())
