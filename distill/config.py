"""Stage configs: dataclass defaults < recipe YAML < command-line flags; unknown keys name the near key."""

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError
from distill.secrets import scrub_config


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

    def __post_init__(self):
        if isinstance(self.stop, str):  # `stop: "###"` in a recipe: one stop string, not one per character
            self.stop = [self.stop]

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
        check_sampling(self.temperature, self.top_p)
        if self.num_prompts is not None and self.num_prompts < 1:
            raise DistillError(f"--num-prompts must be at least 1, got {self.num_prompts}")
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


def shown(value, limit: int = 80) -> str:
    """A value from a user's file or flags, for an error message: on one line, with control characters and lone
    surrogates escaped (they garble the terminal or cannot be printed at all), and cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def check_sampling(temperature: float, top_p: float) -> None:
    """Engines take these as they come; NaN or a negative temperature would fail deep inside one, or not at all."""
    if not math.isfinite(temperature) or temperature < 0:
        raise DistillError(f"--temperature must be a number of 0 or more, got {temperature}")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise DistillError(f"--top-p must be in (0, 1], got {top_p}")


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(cls, data: dict, where: str) -> None:
    """Refuse keys the dataclass does not have, naming the closest known key."""
    names = field_names(cls)
    for key in data:
        if not isinstance(key, str):  # YAML reads `1:` or `null:` as a number or null, never a name
            raise DistillError(
                f"key `{shown(key)}` in {where} is not a name: write the key as text, e.g. `{names[0]}`"
            )
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean `{near[0]}`?)" if near else ""
            raise DistillError(f"unknown key `{shown(key)}` in {where}{hint}")


def check_types(cls, data: dict, where: str) -> None:
    """Refuse a value of the wrong type, naming the key and the type it takes.

    YAML decides types by the look of a value (`5` is a number, `1e-5` is text, `no` is false), and a value of
    the wrong type would otherwise fail much later, inside a stage, as a traceback.
    """
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _fits(value, hints[key]):
            hint = ""
            if isinstance(value, str) and _fits(1.0, hints[key]):
                hint = " (YAML reads 1e-5 as text: write 1.0e-5)" if _is_float(value) else ""
            raise DistillError(
                f"`{key}` in {where} must be {_describe(hints[key])}, got {_kind(value)} `{shown(value)}`{hint}"
            )


def _fits(value, annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):  # a bool is an int to Python, never to a user; an int is a fine float
        return isinstance(value, int if annotation is int else (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:
        # One string for a list of them: the stages wrap it (`inputs: out/generate`)
        if isinstance(value, str):
            return not args or _fits(value, args[0])
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if annotation is dict or origin is dict:
        if args and args[1] is dict:  # verifier name -> options: also a list of names or "math,format"
            if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                return True
            # `math:` with nothing after it reads as null: that verifier with its default options
            return isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, dict | None) for k, v in value.items()
            )
        return isinstance(value, dict) and (
            not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
        )
    return True  # a type this check does not know: the stage checks it


def _describe(annotation) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(annotation) is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}"
    if typing.get_origin(annotation) is dict:
        return "a mapping of verifier names to options" if args[1] is dict else "a mapping of keys to values"
    names = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _kind(value) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "text"}
    return kinds.get(
        type(value),
        "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__,
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_yaml(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise DistillError(f"config file not found: {path}") from None
    except OSError as exc:  # a folder, no permission
        raise DistillError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DistillError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except yaml.YAMLError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise DistillError(f"config file {path} is not valid YAML: {shown(lines[0], limit=200)}") from None
    except RecursionError:
        raise DistillError(f"config file {path} nests too deeply to read: flatten its lists and mappings") from None
    except ValueError:  # the one ValueError YAML lets through: int() of a number too long to convert
        raise DistillError(
            f"config file {path} holds a number with more than {sys.get_int_max_str_digits()} digits: shorten it"
        ) from None
    if not isinstance(data, dict):
        raise DistillError(f"config file {path} must hold a mapping of keys to values")
    return data


def build_config(cls, recipe: dict | None, overrides: dict, where: str = "the recipe"):
    """Defaults < recipe < overrides (the flags a user typed)."""
    if recipe is not None and not isinstance(recipe, dict):
        raise DistillError(f"{where} must be a mapping of keys to values, got {_kind(recipe)}")
    merged: dict = {}
    if recipe:
        check_keys(cls, recipe, where)
        check_types(cls, recipe, where)
        merged.update(recipe)
    check_keys(cls, overrides, "the command line")
    check_types(cls, overrides, "the command line")
    merged.update(overrides)
    return cls(**merged)


def dump_config(config, path: Path) -> None:
    """Write `config.resolved.yaml`. Configs hold the names of secret variables, never their values.

    Written under a temporary name and renamed: shards of one run rewrite it while others may read it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(scrub_config(dataclasses.asdict(config)), sort_keys=False), encoding="utf-8")
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
    decontam_overlap: float = 0.5  # a shared n-gram counts when the pair's word overlap reaches this; 0: n-gram only
    input_format: str = "auto"  # auto | distill | messages | sharegpt | openr1 | columns (see filter/inputs.py)
    map: dict[str, str] = field(default_factory=dict)  # field -> column, for input_format columns
    pass_rate: str | None = None  # MIN:MAX: keep only prompts whose share of passing samples lies inside
    consensus: str = "none"  # none | majority: the majority final answer is the gold of prompts without one
    min_agreement: float = 0.5  # share of a prompt's samples that must agree for a majority gold
    batch_size: int = 256
    rows_per_file: int = 10000
    resume: bool = False  # finish an interrupted run into the same folder
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
        if self.resume and self.overwrite:
            raise DistillError("--resume and --overwrite contradict each other: pass one")
