"""The cards of `distill publish`: README.md for a dataset (what made it: teacher, sampling, verifiers, counts) and
for a model (base model, data, training parameters, evaluation, how to load it), with the Hub's metadata.

A card never shows a secret or someone's home directory: option names that look like secrets are left out, local
paths are shown by their last component, and the finished text goes through distill.secrets.scrub (Hugging Face
tokens, and credentials inside URLs such as a judge's base_url).

License: a dataset of traces inherits the teacher's terms (and the prompt source's), and a student those of its
base model and data, which a tool cannot decide. So the default is `other`, with a card section that says whose
terms apply and a warning on stderr; --license sets the real identifier (e.g. mit for DeepSeek-R1 traces).
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import yaml

from distill.config import DEFAULT_LICENSE
from distill.errors import DistillError
from distill.io import data_files
from distill.models import ALIASES, EMBEDDED, model_label
from distill.secrets import scrub

if TYPE_CHECKING:
    from distill.config import PublishConfig

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded teacher is, for cards
DATASET_TAGS = ["reasoning", "distillation", "synthetic"]
MODEL_TAGS = ["reasoning", "distillation", "sft", "trl"]
SIZE_CATEGORIES = [
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]
SECRET_KEY = re.compile(r"token|secret|password|api_key|credential", re.IGNORECASE)
RUN_CONTROL = {"resume", "overwrite", "quiet", "num_processes", "num_machines", "accelerate_config"}


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket of a row count."""
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1T"


# --------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------


def dataset_card(folder: Path, repo_id: str, rows: int, license: str) -> str:
    """README.md of a dataset: Hub metadata, then what made it (teacher, sampling, verifiers, counts), then use."""
    stats = _read_json(folder / "stats.json")
    own = _read_yaml(folder / "config.resolved.yaml")
    # A filter output names its generate inputs; their resolved configs say how the prompts were made.
    inputs = own.get("inputs") or []
    generate_configs = [own] if "source" in own else [_read_yaml(Path(i) / "config.resolved.yaml") for i in inputs]
    teachers, samplings, domains, vocabularies = {}, set(), {}, set()
    columns: list[str] = []
    for path in data_files(folder / "data"):
        schema = pq.read_schema(path)
        columns += [n for n in schema.names if n not in columns]
        wanted = ("teacher", "sampling", "domain", "teacher_tokenizer", "teacher_vocab_hash")
        present = [c for c in wanted if c in schema.names]
        table = pq.read_table(path, columns=present).to_pydict()
        pairs = zip(table.get("teacher_tokenizer", []), table.get("teacher_vocab_hash", []), strict=True)
        vocabularies.update(pair for pair in pairs if pair[0] is not None)
        for teacher in table.get("teacher", []):
            teachers[teacher] = teachers.get(teacher, 0) + 1
        samplings.update(table.get("sampling", []))
        for domain in table.get("domain", []):
            domains[domain] = domains.get(domain, 0) + 1

    meta = {
        "license": license,
        "task_categories": ["text-generation"],
        "tags": DATASET_TAGS,
        "size_categories": [size_category(rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
    }
    name = repo_id.split("/")[-1]
    teacher_text = ", ".join(f"`{_public_model(t)}`" for t in teachers) or "unknown"
    lines = [
        f"# {name}",
        "",
        "Chain-of-thought traces in the DeepSeek-R1 style: a teacher answered each prompt several times, writing "
        "its reasoning in a `<think>` block before the answer, and rejection sampling kept the samples the "
        "verifiers accepted. Made with `distill` (generate, then filter).",
        "",
        "| | |",
        "| --- | --- |",
        f"| rows | {rows:,} |",
        f"| teacher | {teacher_text} |",
    ]
    for sampling in sorted(s for s in samplings if s):
        lines.append(f"| sampling | {_sampling_text(sampling)} |")
    sources = sorted({_public_name(c["source"]) for c in generate_configs if c.get("source")})
    if sources:
        lines.append(f"| prompt source | {', '.join(f'`{s}`' for s in sources)} |")
    templates = {c.get("prompt_template") for c in generate_configs if c}
    if templates - {None}:
        lines.append(f"| prompt template | {', '.join(repr(t) for t in sorted(templates - {None}))} |")
    elif generate_configs and any(generate_configs):
        lines.append("| prompt | R1's: no system prompt, \"Please reason step by step, and put your final answer "
                     "within \\boxed{}.\" after math problems |")  # fmt: skip
    generated = [stats] if "source" in own else [_read_json(Path(i) / "stats.json") for i in inputs]
    if generation := _generation_text([g for g in generated if "completion_tokens" in g]):
        lines.append(f"| generation | {generation} |")
    if vocabularies:
        top_k = sorted({c.get("logprobs") for c in generate_configs if c and c.get("logprobs")})
        names = ", ".join(f"`{_public_model(n)}` (vocabulary {h or 'unknown'})" for n, h in sorted(vocabularies))
        lines.append(f"| teacher log-probs | top-{'/'.join(map(str, top_k)) or 'k'} per token; tokenizer {names} |")
    verifiers = own.get("verifiers") or {name: {} for name in stats.get("verifiers", {})}
    if verifiers:
        lines.append(f"| verifiers | {_verifiers_text(verifiers)} |")
    if "kept" in stats and "total" in stats:
        share = f" ({stats['kept'] / stats['total']:.1%})" if stats["total"] else ""
        lines.append(f"| kept | {stats['kept']:,} of {stats['total']:,} samples{share} |")
    if "prompts" in stats:
        lines.append(f"| prompts | {stats['prompts']:,} |")
    if domains:
        lines.append(f"| domains | {', '.join(f'{d} {n:,}' for d, n in sorted(domains.items()))} |")
    drops = {k[len("dropped_") :]: v for k, v in stats.items() if k.startswith("dropped_") and v}
    if drops:
        lines += ["", "Dropped samples by reason: " + ", ".join(f"{r} {n:,}" for r, n in sorted(drops.items())) + "."]
    if "messages" in columns:
        lines += [
            "",
            "The `messages` column is TRL's conversational format: the prompt's turns, then an assistant turn "
            "`<think>\\n…\\n</think>\\n\\n<answer>`. The other columns keep the raw material: "
            + ", ".join(f"`{c}`" for c in columns if c != "messages")
            + ".",
        ]
    if vocabularies:
        lines += [
            "",
            "`token_ids` are the generated tokens (after any prefill) in the teacher's vocabulary; at each, "
            "`top_token_ids` and `top_logprobs` hold the teacher's most likely next tokens and their log-probs at "
            "temperature 1, most likely first: material for logit distillation (`distill train --method kd`) of a "
            "student with the same tokenizer.",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'dataset = load_dataset("{repo_id}", split="train")',
        "```",
        "",
        "Fine-tune a student with TRL's SFTTrainer, which reads the `messages` column (check that the student's "
        "chat template keeps the `<think>` block: some reasoning templates strip it):",
        "",
        "```python",
        "from datasets import load_dataset",
        "from trl import SFTConfig, SFTTrainer",
        "",
        f'dataset = load_dataset("{repo_id}", split="train").select_columns(["messages"])',
        "trainer = SFTTrainer(",
        '    model="Qwen/Qwen2.5-1.5B-Instruct",',
        "    train_dataset=dataset,",
        '    args=SFTConfig(output_dir="student", num_train_epochs=2),  # R1 distilled for 2 epochs',
        ")",
        "trainer.train()",
        "```",
        "",
        "## License",
        "",
        _license_text(
            license,
            f"the traces were written by {teacher_text}",
            "the teacher's license terms and those of the prompt source",
        ),
        "",
    ]
    return scrub(_front_matter(meta) + "\n".join(lines))


def _generation_text(generated: list[dict]) -> str:
    """What sampling the teacher took, from the generate outputs' stats.json: tokens (reasoning among them) and the
    USD paid at the prices the runs were given (rows from the response cache cost nothing again)."""
    if not generated:
        return ""
    keys = ("samples", "prompt_tokens", "completion_tokens", "reasoning_tokens")
    total = {k: sum(g.get(k) or 0 for g in generated) for k in keys}
    text = f"{total['samples']:,} samples, {total['prompt_tokens']:,} prompt and "
    text += f"{total['completion_tokens']:,} completion tokens"
    if total["reasoning_tokens"]:
        text += f" ({total['reasoning_tokens']:,} of them reasoning)"
    costs = [g["cost_usd"] for g in generated if g.get("cost_usd") is not None]
    if costs:
        text += f"; ${sum(costs):,.2f} paid for them, at the prices the runs were given"
    return text


def _sampling_text(sampling_json: str) -> str:
    try:
        s = json.loads(sampling_json)
    except (json.JSONDecodeError, TypeError):
        return str(sampling_json)
    parts = [
        f"temperature {s.get('temperature')}",
        f"top-p {s.get('top_p')}",
        f"up to {s.get('max_tokens')} new tokens",
    ]
    if s.get("stop"):
        parts.append(f"stop {s['stop']}")
    if s.get("prefill"):
        parts.append("assistant turn prefilled with `<think>`")
    return ", ".join(parts)


def _verifiers_text(verifiers: dict) -> str:
    parts = []
    for name, options in verifiers.items():
        shown = {k: v for k, v in (options or {}).items() if not SECRET_KEY.search(str(k))}
        parts.append(f"{name} ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else name)
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def model_card(folder: Path, model_dir: Path, repo_id: str, config: "PublishConfig", summary: dict | None) -> str:
    """README.md of a model: base model, data, training parameters, evaluation, how to load it."""
    train = _read_yaml(folder / "config.resolved.yaml") or _read_yaml(folder.parent / "config.resolved.yaml")
    adapter = _read_json(model_dir / "adapter_config.json") if (model_dir / "adapter_config.json").exists() else None
    base = (
        config.base_model
        or train.get("student")
        or train.get("model")
        or (adapter or {}).get("base_model_name_or_path")
    )
    base_id = _hub_model_id(base) if isinstance(base, str) else None
    dataset = config.dataset or _dataset_from(train)

    meta: dict = {"license": config.license}
    if base_id:
        meta["base_model"] = base_id
        meta["base_model_relation"] = "adapter" if adapter else "finetune"
    if dataset and _looks_like_hub_id(dataset):
        meta["datasets"] = [dataset]
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = MODEL_TAGS + (["lora"] if adapter else [])

    name = repo_id.split("/")[-1]
    method = "full fine-tuning"
    if adapter:
        method = (
            f"LoRA (r={adapter.get('r')}, alpha={adapter.get('lora_alpha')}, modules {adapter.get('target_modules')})"
        )
    lines = [
        f"# {name}",
        "",
        "A student distilled from reasoning traces in the DeepSeek-R1 style: supervised fine-tuning only, no RL, "
        "as R1's distilled models were made. Made with `distill` (generate, filter, train).",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | {f'`{_public_model(base)}`' if base else 'unknown'} |",
        f"| dataset | {f'`{_public_name(dataset)}`' if dataset else 'not recorded'} |",
        f"| method | {method} |",
    ]
    params = _training_parameters(train)
    if params:
        lines += ["", "## Training parameters", "", "| parameter | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in params.items()]
    # What the trainer reported (train_results.json, written by `distill train` through TRL's save_metrics).
    results = {k: v for k, v in _read_json(model_dir / "train_results.json").items() if isinstance(v, int | float)}
    if results:
        lines += ["", "Training results: " + ", ".join(f"{k} {v}" for k, v in results.items()) + "."]
    if summary:
        lines += ["", "## Evaluation", "", *_eval_lines(summary)]
    load = (
        ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
         f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
         f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")']
        if adapter
        else ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")']
    )  # fmt: skip
    lines += [
        "",
        "## Use",
        "",
        "Sample as R1's models are sampled: temperature 0.6, top-p 0.95, no system prompt, the instruction in the "
        "user turn.",
        "",
        "```python",
        *load,
        "",
        'messages = [{"role": "user", "content": "What is 7 * 8? Please reason step by step, and put your final '
        'answer within \\\\boxed{}."}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
        "return_dict=True)",
        "output = model.generate(**inputs, max_new_tokens=4096, do_sample=True, temperature=0.6, top_p=0.95)",
        'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "## License",
        "",
        _license_text(config.license, "this model was fine-tuned from "
                      + (f"`{_public_model(base)}`" if base else "its base model"),
                      "the base model's license and the terms of the training data (and of its teacher)"),
        "",
    ]  # fmt: skip
    return scrub(_front_matter(meta) + "\n".join(lines))


def _training_parameters(train: dict) -> dict:
    """Scalar settings of the training config, one level of nesting flattened; never secrets or local paths."""
    out = {}
    for key, value in train.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            secret = bool(SECRET_KEY.search(name)) and "max_" not in name  # max_tokens is a length, not a secret
            if secret or v is None or isinstance(v, dict | list):
                continue
            if name in RUN_CONTROL or re.search(r"(^|_)(dir|out|path|file|url|ip|port|host|rank)s?($|_)", name):
                continue  # how the run was driven or where it ran, not how the model was trained
            if isinstance(v, str) and _is_local_path(v):
                continue
            out[name] = v
    return out


def _eval_lines(summary: dict) -> list[str]:
    k = summary.get("samples_per_prompt")
    sampling = summary.get("sampling") or {}
    lines = [
        f"`distill eval` on `{_public_name(str(summary.get('source', '')))}` ({summary.get('prompts')} prompts, "
        f"{k} samples each, temperature {sampling.get('temperature')}, top-p {sampling.get('top_p')}, up to "
        f"{sampling.get('max_tokens')} new tokens; verifiers {', '.join(summary.get('verifiers', {})) or '-'}). "
        "pass@1 is the mean over the samples, ± its standard error over prompts.",
        "",
        f"| model | pass@1 | pass@{k} | samples |",
        "| --- | --- | --- | --- |",
    ]
    for label, m in summary.get("models", {}).items():
        pass1 = "-" if m.get("pass@1") is None else f"{m['pass@1']:.1%}"
        if m.get("pass@1_se") is not None:
            pass1 += f" ± {m['pass@1_se']:.1%}"
        at_k = (m.get("pass@k") or {}).get(str(k))
        lines.append(
            f"| {_public_name(label)} | {pass1} | {'-' if at_k is None else f'{at_k:.1%}'} | {m.get('samples')} |"
        )
    return lines


def read_eval_summary(path: str) -> dict:
    summary = _read_json(Path(path))
    if not summary:
        raise DistillError(f"eval summary not found or empty: {path} (pass the summary.json of `distill eval`)")
    if not isinstance(summary.get("models"), dict):
        raise DistillError(f"{path} is not a `distill eval` summary: it has no `models`")
    return summary


def _dataset_from(train: dict) -> str | None:
    for key in ("dataset", "dataset_name", "train_dataset", "data"):
        value = train.get(key)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and value:
            return value
    return None


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def _license_text(license: str, whose: str, terms: str) -> str:
    if license == DEFAULT_LICENSE:
        return (
            f"`other`: {whose}, so its use is subject to {terms}. The publisher has not named a license; "
            "check those terms before use."
        )
    return f"`{license}`. Note that {whose}: check that {terms} allow this use."


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DistillError(f"{path} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DistillError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name)) and not Path(name).exists()


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or (os.sep in value and Path(value).exists())


def _public_name(name: str) -> str:
    """What a card may say about a source or model: hub ids and reasoning-gym tasks as they are, local paths by
    their last component only (a card never shows someone's home directory)."""
    if name.startswith("reasoning-gym:") or _looks_like_hub_id(name):
        return name
    return Path(name).name or name


def _public_model(name: str | None) -> str:
    return _hub_model_id(name) or _public_name(name or "unknown")


def _hub_model_id(name: str | None) -> str | None:
    """The hub id of a model name (aliases resolved, the embedded model named), or None for a local folder."""
    if not name:
        return None
    label = model_label(name)
    if label == EMBEDDED or ALIASES.get(name.lower()) == EMBEDDED:
        return EMBEDDED_HUB_ID
    return label if _looks_like_hub_id(label) else None


def print_license_warning(license: str) -> None:
    if license == DEFAULT_LICENSE:
        print(
            "note: license is `other` (the teacher's or base model's terms apply); pass --license to name one",
            file=sys.stderr,
        )
