"""Stage configs: dataclass defaults < recipe YAML < command-line flags; unknown keys name the near key."""

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError


@dataclass(slots=True)
class GenerateConfig:
    # Prompts
    source: str = ""  # file, folder, hub dataset id, or reasoning-gym:TASK
    split: str = "train"
    prompt_column: str | None = None  # None: the first of problem, prompt, question, instruction
    answer_column: str | None = None  # None: `answer` or `gold` when present
    id_column: str | None = None  # None: `id` when present, else a hash of the prompt
    domain: str | None = None  # None: the `domain` column, else math
    system_prompt: str | None = None  # R1: no system prompt
    prompt_template: str | None = None  # None: the R1 instruction for math/science, the bare prompt otherwise
    num_prompts: int | None = None
    seed: int = 0
    source_options: dict[str, Any] = field(default_factory=dict)  # e.g. reasoning-gym task settings
    # Teacher
    engine: str = "transformers"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    # openai engine
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 64
    request_timeout: float = 600.0
    max_retries: int = 6
    # vllm engine
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # "ray" for multi-node
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU (bf16 is ~25x slower on AVX2 CPUs)
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None  # None: 0.9 on GPU, 0.4 on CPU (where it means RAM)
    engine_args: dict[str, Any] = field(default_factory=dict)  # passed through to vllm.LLM
    # transformers engine
    batch_size: int = 8
    device: str | None = None  # None: cuda when available, else cpu
    # Sampling
    num_samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    stop: list[str] = field(default_factory=list)
    prefill_think: bool = False
    # Answer without chain of thought: prefill an empty think block (R1 kept trivial general queries without CoT)
    no_think: bool = False
    # Output
    out: str = ""
    resume: bool = False
    overwrite: bool = False
    retry_errors: bool = False
    rows_per_file: int = 1000
    flush_seconds: float = 60.0
    num_shards: int = 1
    shard_index: int = 0
    quiet: bool = False

    def validate(self) -> None:
        if not self.source:
            raise DistillError("no prompt source: pass --source FILE|DATASET|reasoning-gym:TASK")
        if not self.out:
            raise DistillError("no output folder: pass --out DIR")
        if self.engine not in ("transformers", "vllm", "openai"):
            raise DistillError(f"unknown engine `{self.engine}`: choose one of transformers, vllm, openai")
        if self.num_samples < 1:
            raise DistillError(f"-n must be at least 1, got {self.num_samples}")
        if self.max_tokens < 1:
            raise DistillError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise DistillError(
                f"--shard-index must be in [0, {self.num_shards}) with --num-shards {self.num_shards}, "
                f"got {self.shard_index}"
            )
        if self.resume and self.overwrite:
            raise DistillError("--resume and --overwrite contradict each other: pass one of them")
        if self.prefill_think and self.no_think:
            raise DistillError("--prefill-think and --no-think contradict each other: pass one of them")
        if self.rows_per_file < 1:
            raise DistillError(f"--rows-per-file must be at least 1, got {self.rows_per_file}")


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(cls, data: dict, where: str) -> None:
    """Refuse keys the dataclass does not have, naming the closest known key."""
    names = field_names(cls)
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean `{near[0]}`?)" if near else ""
            raise DistillError(f"unknown key `{key}` in {where}{hint}")


def load_yaml(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise DistillError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise DistillError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DistillError(f"config file {path} must hold a mapping of keys to values")
    return data


def build_config(cls, recipe: dict | None, overrides: dict, where: str = "the recipe"):
    """Defaults < recipe < overrides (the flags a user typed)."""
    merged: dict = {}
    if recipe:
        check_keys(cls, recipe, where)
        merged.update(recipe)
    check_keys(cls, overrides, "the command line")
    merged.update(overrides)
    return cls(**merged)


def dump_config(config, path: Path) -> None:
    """Write `config.resolved.yaml`. Configs hold the names of secret variables, never their values.

    Written under a temporary name and renamed: shards of one run rewrite it while others may read it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


# The verifiers `distill filter` runs when none are named: R1's rule rewards, accuracy and format.
DEFAULT_VERIFIERS = {"math": {}, "format": {}}


@dataclass(slots=True)
class FilterConfig:
    inputs: list[str] = field(default_factory=list)  # generate output folders (or their Parquet files)
    out: str = ""
    # name -> options, in the order they run; a list of names means default options
    verifiers: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_VERIFIERS.items()})
    keep_unverified: bool = False  # keep rows a verifier could not check (unparseable gold, no tests)
    select: str = "all"  # all | best (highest verifier score first, e.g. the judge's)
    max_per_prompt: int | None = None  # keep at most k passing samples per prompt
    dedupe: str = "none"  # none | exact | near (MinHash LSH over the prompts)
    dedupe_threshold: float = 0.8
    decontaminate: list[str] = field(default_factory=list)  # benchmark files: drop prompts that overlap them
    decontam_ngram: int = 8
    batch_size: int = 256
    rows_per_file: int = 10000
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self):
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if isinstance(self.decontaminate, str):
            self.decontaminate = [self.decontaminate]
        if isinstance(self.verifiers, str):
            self.verifiers = [v.strip() for v in self.verifiers.split(",") if v.strip()]
        if isinstance(self.verifiers, list):
            self.verifiers = {name: {} for name in self.verifiers}
        self.verifiers = {name: dict(options or {}) for name, options in self.verifiers.items()}

    def validate(self) -> None:
        if not self.inputs:
            raise DistillError("no input: pass one or more `distill generate` output folders")
        if not self.out:
            raise DistillError("no output folder: pass --out DIR")
        if not self.verifiers:
            raise DistillError("no verifiers: pass --verifiers, e.g. math,format")
        if self.select not in ("all", "best"):
            raise DistillError(f"unknown --select `{self.select}`: use all or best")
        if self.dedupe not in ("none", "exact", "near"):
            raise DistillError(f"unknown --dedupe `{self.dedupe}`: use none, exact or near")
        if self.max_per_prompt is not None and self.max_per_prompt < 1:
            raise DistillError(f"--max-per-prompt must be at least 1, got {self.max_per_prompt}")
        if self.batch_size < 1 or self.rows_per_file < 1:
            raise DistillError("--batch-size and --rows-per-file must be at least 1")
