"""`distill eval`: pass@1 (averaged over k samples) and pass@k of one or more models on a benchmark.

The same machinery as the data pipeline, so a score means what a kept sample means: prompts come from the same
sources as `distill generate` (files, datasets folders, `reasoning-gym:TASK`), samples from the same engines
through `run_generate`, and verdicts from the same verifiers as `distill filter`. For every model:

    OUT/<slug>/generations/   a `distill generate` output (Parquet, resumable with --resume)
    OUT/<slug>/samples.parquet one row per sample: id, prompt_id, sample_index, correct (true/false/null), reason
    OUT/summary.json           per model: pass@1 ± standard error, pass@k for k = 1..n, counts, tokens

A sample that could not be checked (`correct` null: no or unparseable gold, no tests, a generation error) counts
as not correct in pass@k. That is the conservative reading and the same for every model, so comparisons stay
fair; the summary reports how many there were (`unverified`) next to the score.

LoRA adapters (a folder with adapter_config.json) are merged into their base once per run, into
OUT/<slug>/merged, and that plain folder is what the engine loads, whichever engine it is: vLLM then runs it at
full speed without `enable_lora` (which needs a LoRARequest per call and caps the rank), and the transformers
engine needs no second code path. The merged copy is deleted when the model's samples are done (a --resume
merges again), so a large student does not leave a second copy of its weights behind.
"""

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill.config import EvalConfig, GenerateConfig, SampledConfig
from distill.errors import DistillError, MissingDependency
from distill.filter.verifiers.base import Verdict
from distill.filter.verifiers.registry import build_verifier, check_options, verifier_class
from distill.generate.run import run_generate
from distill.generate.sources import Prompt, load_prompts
from distill.io import (
    check_output,
    clear_folder,
    data_files,
    local_paths,
    write_json_atomic,
    write_table_atomic,
    write_text_atomic,
)
from distill.models import EMBEDDED, default_label, resolve_model
from distill.schema import GENERATE_SCHEMA
from distill.secrets import scrub_config
from distill.settings import dump_config, field_names
from distill.train.compare import format_gain, gain_between, held_out, lenient_correct, per_prompt_rates

VERIFY_BATCH = 256  # rows per verify_batch call: enough to keep the math worker pool busy, little memory
MERGED = "merged"
MERGED_MARKER = "distill-merged-v1"

# One row per sample of one model; `correct` is null when no verifier could decide.
EVAL_SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("correct", pa.bool_()),
        pa.field("reason", pa.string(), nullable=False),  # "ok", "<verifier>_<reason>", "generate_error", ...
        pa.field("details", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("truncated", pa.bool_()),
        pa.field("completion_tokens", pa.int32()),
        # The same sample read by the math verifier with lenient extraction (null outside math/science), so the
        # table can show strict and lenient side by side without generating again.
        pa.field("correct_lenient", pa.bool_()),
    ]
)


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), for n samples, c correct.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials of the plain formula.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def standard_error(rates: list[float]) -> float | None:
    """Standard error of the mean of per-prompt pass rates: sample std (ddof=1) / sqrt(prompts).

    None with fewer than two prompts, where the spread cannot be estimated.
    """
    if len(rates) < 2:
        return None
    mean = sum(rates) / len(rates)
    variance = sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)
    return math.sqrt(variance) / math.sqrt(len(rates))


def summarize(samples: list[dict]) -> dict:
    """pass@1 ± se and pass@k (k = 1..the fewest samples any prompt has) from per-sample rows."""
    per_prompt: dict[str, list[int]] = {}  # prompt -> [samples, correct]
    for s in samples:
        counts = per_prompt.setdefault(s["prompt_id"], [0, 0])
        counts[0] += 1
        counts[1] += s["correct"] is True
    rates = [c / n for n, c in per_prompt.values()]
    lenient = None
    if samples and all(s.get("correct_lenient") is not None for s in samples):
        lenient_rates = list(per_prompt_rates(samples, "correct_lenient").values())
        lenient = (sum(lenient_rates) / len(lenient_rates), standard_error(lenient_rates))
    max_k = min((n for n, _ in per_prompt.values()), default=0)
    pass_k = {
        str(k): sum(pass_at_k(n, c, k) for n, c in per_prompt.values()) / len(per_prompt) for k in range(1, max_k + 1)
    }
    se = standard_error(rates)
    tokens = sum(s["completion_tokens"] or 0 for s in samples)
    return {
        "pass@1": round(sum(rates) / len(rates), 6) if rates else None,
        "pass@1_se": None if se is None else round(se, 6),
        "pass@k": {k: round(v, 6) for k, v in pass_k.items()},
        "pass@1_lenient": None if lenient is None else round(lenient[0], 6),
        "pass@1_lenient_se": None if lenient is None or lenient[1] is None else round(lenient[1], 6),
        "prompts": len(per_prompt),
        "samples": len(samples),
        "correct": sum(s["correct"] is True for s in samples),
        "unverified": sum(s["correct"] is None for s in samples),
        "errors": sum(s["reason"] == "generate_error" for s in samples),
        "truncated": sum(bool(s["truncated"]) for s in samples),
        "completion_tokens": tokens,
        "mean_completion_tokens": round(tokens / len(samples), 1) if samples else None,
    }


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def run_eval(config: EvalConfig) -> dict:
    """Sample, verify and score every model; write OUT/summary.json last and return it."""
    config.validate()
    models = list(config.models) or [None]
    labels = list(config.labels) or [default_label(m) for m in models]
    slugs = [slugify(label) for label in labels]
    _check_unique(labels, slugs)
    out = Path(config.out)
    # Everything that can be wrong with the input is found before the output folder is touched.
    prompts, excluded = benchmark_prompts(config, out)
    verifiers = build_verifiers(config.verifiers, {p.domain for p in prompts})
    try:
        _prepare_output(out, config)
        dump_config(config, out / "config.resolved.yaml")
        if config.exclude:  # the held-out benchmark is what every model samples: a file of exactly its prompts
            write_held_out(prompts, out / HELD_OUT)
        summary: dict = {
            "source": config.source,
            "split": config.split,
            "prompts": len(prompts),
            "samples_per_prompt": config.num_samples,
            "sampling": {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens}
            | ({"min_p": config.min_p} if config.min_p else {}),
            "verifiers": scrub_config({v.name: config.verifiers[v.name] for v in verifiers}),
            "models": {},
        }
        if config.exclude:
            summary["excluded_training_problems"] = excluded
        for number, (model, label, slug) in enumerate(zip(models, labels, slugs, strict=True), start=1):
            if not config.quiet:
                note = f"[{number}/{len(models)}] {label}: {config.num_samples} samples x {len(prompts)} prompts"
                print(note, file=sys.stderr)
            result = evaluate_model(config, model, out / slug, prompts, verifiers)
            summary["models"][label] = {"model": model or EMBEDDED, "dir": slug, **result}
        pairs = config.gain_pairs()
        if pairs:
            wanted = {label for pair in pairs for label in pair}
            rows = {
                label: pq.read_table(out / slug / "samples.parquet").to_pylist()
                for label, slug in zip(labels, slugs, strict=True)
                if label in wanted
            }
            gains = [gain_between(summary, rows, before, after) for before, after in pairs]
            summary["gain"] = gains[0]  # the first pair, where a summary has always kept it
            if len(gains) > 1:
                summary["gains"] = gains
    finally:
        for verifier in verifiers:
            verifier.close()
    # summary.json is written last, whole or not at all: its presence marks the evaluation complete.
    write_json_atomic(summary, out / "summary.json")
    return summary


def evaluate_model(config: EvalConfig, model: str | None, folder: Path, prompts: list[Prompt], verifiers) -> dict:
    """Generate (or complete) the samples of one model, verify them, write samples.parquet, return its metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    remote = config.engine in ("openai", "openai-batch")
    base = adapter_base(model) if not remote else None  # a server serves its own adapters
    load = model
    try:
        if base is not None:
            load = str(merge_adapter(Path(model), base, folder / MERGED, quiet=config.quiet))
        held_out_file = folder.parent / HELD_OUT if config.exclude else None
        run_generate(generate_config(config, load, folder / "generations", held_out_file))
    finally:
        shutil.rmtree(folder / MERGED, ignore_errors=True)
    lenient = any(v.name == "math" for v in verifiers)  # a lenient column only where a math verifier applies
    samples = verify_samples(folder / "generations", prompts, config.num_samples, verifiers, lenient)
    write_table_atomic(pa.Table.from_pylist(samples, schema=EVAL_SAMPLES_SCHEMA), folder / "samples.parquet")
    result = summarize(samples)
    if base is not None:
        result["adapter_base"] = base
    return result


HELD_OUT = "prompts.jsonl"  # with `exclude`: the benchmark's prompts that no training set holds


def benchmark_prompts(config: EvalConfig, out: Path) -> tuple[list[Prompt], int]:
    """The benchmark's prompts and how many were left out: with `exclude`, the first num_prompts whose problem no
    training set holds (distill.train.compare.problem_key), read from a longer stretch of the source."""
    values = {name: getattr(config, name) for name in field_names(SampledConfig)}
    if not config.exclude:
        return load_prompts(GenerateConfig(**values)), 0
    wanted = config.num_prompts
    longer = {**values, "num_prompts": wanted * 2 + 20 if wanted else None}  # room for what is left out
    candidates = load_prompts(GenerateConfig(**longer))
    kept, _ = held_out(candidates, training_problems(config.exclude))
    kept = kept[:wanted] if wanted else kept
    excluded = sum(1 for p in candidates[: candidates.index(kept[-1]) + 1] if p not in kept) if kept else 0
    if not kept:
        raise DistillError(f"every prompt of {config.source} is in a training set (`exclude`): evaluate on others")
    if not config.quiet:
        print(f"eval: left out {excluded} prompts that a training set holds", file=sys.stderr)
    return kept, excluded


def training_problems(entries: list) -> list[str]:
    """The problems of the training data `exclude` names: folders or files with a `problem` column (generate,
    filter and mix outputs), or prompt sources in generate's keys."""
    problems: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            problems += [p.problem for p in load_prompts(GenerateConfig(**entry))]
            continue
        path = Path(entry)
        files = data_files(path / "data") if path.is_dir() else [path]
        if not files or not all(f.exists() for f in files):
            raise DistillError(f"exclude: {entry} holds no training data (a generate, filter or mix output folder)")
        for file in files:
            if file.suffix == ".jsonl":
                rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
                problems += [r["problem"] for r in rows if r.get("problem")]
            else:
                problems += [p for p in pq.read_table(file, columns=["problem"]).column(0).to_pylist() if p]
    return problems


def write_held_out(prompts: list[Prompt], path: Path) -> None:
    rows = [{"id": p.prompt_id, "problem": p.problem, "answer": p.gold, "domain": p.domain, "tests": p.tests}
            for p in prompts]  # fmt: skip
    write_text_atomic("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), path)


def generate_config(
    config: EvalConfig, model: str | None, out: Path, held_out_file: Path | None = None
) -> GenerateConfig:
    """The GenerateConfig of one model's samples: every setting of the teacher, its sampling and the benchmark
    (the fields eval and generate share by class, SampledConfig, so a new one reaches both), k samples. With
    `exclude`, the benchmark is the held-out prompts file, with the same ids, answers and template."""
    values = {name: getattr(config, name) for name in field_names(SampledConfig)}
    if held_out_file is not None:
        values.update(source=str(held_out_file), split="train", prompt_column="problem", answer_column="answer",
                      id_column="id", domain=None, num_prompts=None, source_options={})  # fmt: skip
    # The eval folder was already checked (and cleared for --overwrite); generations resume inside it.
    return GenerateConfig(
        **{**values, "model": model}, out=str(out), resume=config.resume, overwrite=False, quiet=config.quiet
    )


def build_verifiers(specs: dict[str, dict], domains: set[str]) -> list:
    """The named verifiers that apply to some domain of the benchmark (a code verifier on a math benchmark would
    only start a sandbox for nothing). Unknown names and options fail here, before any sampling."""
    chosen = []
    for name, options in specs.items():
        cls = verifier_class(name)
        check_options(cls, name, options, extra=("domains",))  # also the verifiers not built: a typo is an error
        applies = options.get("domains", cls.domains)
        if set([applies] if isinstance(applies, str) else applies) & domains:
            chosen.append((name, options))
    if not chosen:
        raise DistillError(
            f"none of the verifiers ({', '.join(specs)}) checks domain {', '.join(sorted(domains))}: "
            "pass --verifiers with one that does (math for math/science, code for code, judge for general)"
        )
    return [build_verifier(name, options) for name, options in chosen]


def verify_samples(generations: Path, prompts: list[Prompt], k: int, verifiers, lenient: bool = False) -> list[dict]:
    """One result per sample of this benchmark: rows of other prompts or beyond k (an earlier, larger run resumed
    into the same folder) are not part of this evaluation."""
    order = {p.prompt_id: i for i, p in enumerate(prompts)}
    results: list[dict] = []
    for path in data_files(generations / "data"):
        parquet = pq.ParquetFile(path)
        # Files from before a column was added lack it (the usage columns): read what the file has
        columns = [c for c in GENERATE_SCHEMA.names if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=VERIFY_BATCH, columns=columns):
            rows = [r for r in batch.to_pylist() if r["prompt_id"] in order and r["sample_index"] < k]
            results.extend(_verify_rows(rows, verifiers))
            if lenient:
                for result, verdict in zip(results[len(results) - len(rows) :], lenient_correct(rows), strict=True):
                    result["correct_lenient"] = verdict
    results.sort(key=lambda s: (order[s["prompt_id"]], s["sample_index"]))
    return results


def _verify_rows(rows: list[dict], verifiers) -> list[dict]:
    verdicts: list[list[tuple[str, Verdict]]] = [[] for _ in rows]
    for verifier in verifiers:
        todo = [i for i, row in enumerate(rows) if row["error"] is None and row["domain"] in verifier.domains]
        if todo:
            for i, verdict in zip(todo, verifier.verify_batch([rows[i] for i in todo]), strict=True):
                verdicts[i].append((verifier.name, verdict))
    return [_sample_result(row, v) for row, v in zip(rows, verdicts, strict=True)]


def _sample_result(row: dict, verdicts: list[tuple[str, Verdict]]) -> dict:
    """Correct when every verifier that applies passed; wrong when one failed; null when none could decide."""
    if row["error"] is not None:
        correct, reason, details = None, "generate_error", row["error"][:200]
    elif not verdicts:
        correct, reason, details = None, "no_verifier", f"no verifier checks domain {row['domain']}"
    else:
        failed = [(n, v) for n, v in verdicts if v.passed is False]
        unsure = [(n, v) for n, v in verdicts if v.passed is None]
        name, verdict = (failed or unsure or [(None, Verdict(True, "ok"))])[0]
        correct = False if failed else None if unsure else True
        reason = "ok" if name is None else f"{name}_{verdict.reason}"
        details = verdict.details
    return {
        "id": row["id"],
        "prompt_id": row["prompt_id"],
        "sample_index": row["sample_index"],
        "domain": row["domain"],
        "correct": correct,
        "reason": reason,
        "details": details,
        "finish_reason": row["finish_reason"],
        "truncated": row["truncated"],
        "completion_tokens": row["completion_tokens"],
    }


# --------------------------------------------------------------------------------------------------------------
# Models, labels and the output folder
# --------------------------------------------------------------------------------------------------------------


def slugify(label: str) -> str:
    """A folder name for a label: `runs/sft/final` -> `runs-sft-final`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"


def _check_unique(labels: list[str], slugs: list[str]) -> None:
    for i, slug in enumerate(slugs):
        if slug in slugs[:i]:
            first = labels[slugs.index(slug)]
            raise DistillError(
                f"models `{first}` and `{labels[i]}` would share the folder {slug}: give each a --label"
            )


def adapter_base(model: str | None) -> str | None:
    """The base model of a LoRA adapter folder (its adapter_config.json), or None for a plain model."""
    if model is None:
        return None
    path = Path(model) / "adapter_config.json"
    if not path.is_file():
        return None
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise DistillError(f"{path} is not a valid adapter config: is {model} a peft adapter folder?") from None
    if not base:
        raise DistillError(f"{path} names no base_model_name_or_path: cannot tell which model the adapter is for")
    return base


def merge_adapter(adapter: Path, base: str, target: Path, quiet: bool = False) -> Path:
    """Base + LoRA adapter merged into a plain model folder (weights and tokenizer) that any engine loads."""
    if (target / MERGED_MARKER).exists():
        return target
    try:
        import torch  # torch: seconds to import; only where a model runs
        from peft import PeftModel  # imports torch; only for LoRA
        from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch; only where a model runs
    except ImportError as exc:
        raise MissingDependency("peft", 'pip install "distill[train]"') from exc
    if not quiet:
        print(f"merging adapter {adapter} into {base}", file=sys.stderr)
    base_path = resolve_model(base)
    # The adapter folder's tokenizer when it has one: training may have added tokens or a chat template.
    tokenizer_from = adapter if (adapter / "tokenizer_config.json").exists() else base_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise DistillError(
            f"cannot merge adapter {adapter} into `{base}` ({str(exc).splitlines()[0] if str(exc) else exc!r}): "
            "is the base model a local folder or in the Hugging Face cache?"
        ) from None
    shutil.rmtree(target, ignore_errors=True)  # an unfinished merge of an interrupted run
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    (target / MERGED_MARKER).write_text(f"{adapter} merged into {base}\n", encoding="utf-8")
    return target


def _prepare_output(out: Path, config: EvalConfig) -> None:
    # No model folder, adapter or benchmark file may be, hold or lie inside the output.
    busy = check_output(
        out,
        inputs=local_paths([*config.models, config.source]),
        resume=config.resume,
        overwrite=config.overwrite,
        holds="an evaluation",
        ours=_is_ours,
    )
    if busy and config.overwrite:
        clear_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # incomplete until the new summary is written


def _is_ours(path: Path) -> bool:
    if path.name in ("summary.json", "config.resolved.yaml", HELD_OUT) or (
        path.name.startswith(".") and path.suffix == ".tmp"
    ):
        return True
    return path.is_dir() and all(p.name in ("generations", "samples.parquet", MERGED) for p in path.iterdir())


def format_table(summary: dict) -> str:
    """Models side by side: pass@1 ± standard error (strict, and lenient when a math verifier applied), pass@k at
    the largest k, samples, unverified, tokens; then the gain row (after - before, 95% paired bootstrap interval)."""
    k = summary["samples_per_prompt"]
    models = summary["models"]
    lenient = any(m.get("pass@1_lenient") is not None for m in models.values())
    header = [
        "model",
        "pass@1",
        *(["lenient"] if lenient else []),
        f"pass@{k}",
        "samples",
        "unverified",
        "tokens/sample",
    ]

    def rate(value, se) -> str:
        return "-" if value is None else f"{value:.1%}" + ("" if se is None else f" ± {se:.1%}")

    rows = []
    for label, m in models.items():
        at_k = m["pass@k"].get(str(k))
        tokens = m.get("mean_completion_tokens")
        rows.append(
            [label, rate(m["pass@1"], m["pass@1_se"]),
             *([rate(m.get("pass@1_lenient"), m.get("pass@1_lenient_se"))] if lenient else []),
             "-" if at_k is None else f"{at_k:.1%}", str(m["samples"]), str(m["unverified"]),
             "-" if tokens is None else f"{tokens:.0f}"]
        )  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    for gain in summary.get("gains") or ([summary["gain"]] if summary.get("gain") else []):
        text = f"gain {gain['after']} - {gain['before']} (95% paired bootstrap over prompts): strict "
        text += format_gain(gain.get("strict", {}))
        if "lenient" in gain:
            text += ", lenient " + format_gain(gain["lenient"])
        lines.append(text)
    return "\n".join(lines)
