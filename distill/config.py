"""Stage configs, each setting declared once with its default and recipe key; distill/settings.py builds them
(dataclass defaults < recipe YAML < command-line flags; unknown keys name the near key)."""

import math
from dataclasses import dataclass, field
from typing import Any

from distill.engines import ENGINES
from distill.engines.base import MAX_TOKENS, MIN_P, TEMPERATURE, TOP_P, Sampling
from distill.engines.control import STOP_TIMEOUT
from distill.engines.openai_batch import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS, BATCH_POLL_SECONDS
from distill.engines.openai_engine import RATE_LIMIT_TIMEOUT, SERVER_WAIT
from distill.errors import DistillError, near_hint, shown
from distill.models import default_label
from distill.settings import check_keys, check_keys_of, check_types

# --------------------------------------------------------------------------------------------------------------
# A teacher and how to sample it: the settings generate, eval, the judge (and any later sampling stage) share,
# declared once. Recipes keep their flat keys (`temperature:` sits beside `source:`), so the groups are
# inherited, not nested: EngineConfig < TeacherConfig (+ sampling) < SampledConfig (+ prompt source, samples).
# --------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class EngineConfig:
    """Which teacher, on which engine, with that engine's options."""

    engine: str = "transformers"  # transformers, vllm, openai or openai-batch
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    # openai engine
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 64  # the most requests in flight; the engine starts below and adapts to 429s
    request_timeout: float = 600.0
    max_retries: int = 6
    rate_limit_timeout: float = RATE_LIMIT_TIMEOUT  # seconds of nothing but 429s before the run stops
    server_wait: float = SERVER_WAIT  # seconds to wait for a server that is still starting
    tokenizer: str | None = None  # counts the tokens a server leaves out; None: the model's, when found offline
    # openai-batch engine: the provider's limits per batch (OpenAI's), and how often to look at a batch
    batch_max_requests: int = BATCH_MAX_REQUESTS
    batch_max_bytes: int = BATCH_MAX_BYTES
    batch_poll_seconds: float = BATCH_POLL_SECONDS
    # What tokens cost, USD per million (none built in: a price list goes stale unnoticed). Cached input: prompt
    # tokens the server read from its prompt cache; None: the input price.
    price_input: float | None = None
    price_cached_input: float | None = None
    price_output: float | None = None
    cache: bool = True  # the response cache ($DISTILL_CACHE/responses): a request asked before is not paid again
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

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise DistillError(f"unknown engine `{shown(self.engine)}`: choose one of {', '.join(ENGINES)}")
        prices = {"price_input": self.price_input, "price_cached_input": self.price_cached_input,
                  "price_output": self.price_output}  # fmt: skip
        for name, value in prices.items():
            if value is not None and (not math.isfinite(value) or value < 0):
                raise DistillError(f"--{name.replace('_', '-')} must be a number of 0 or more, got {value}")
        if (self.price_input is None) != (self.price_output is None) or (
            self.price_cached_input is not None and self.price_input is None
        ):
            raise DistillError("prices come together: pass --price-input and --price-output (USD per 1M tokens)")
        if self.batch_max_requests < 1 or self.batch_max_bytes < 1024:
            raise DistillError("--batch-max-requests must be at least 1 and --batch-max-bytes at least 1024")


@dataclass(slots=True)
class TeacherConfig(EngineConfig):
    """A teacher and how to sample it. The defaults are R1's (engines/base.py holds them, for every engine)."""

    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    min_p: float = MIN_P  # drop tokens below min_p x the top token's probability; 0: off
    max_tokens: int = MAX_TOKENS
    stop: list[str] = field(default_factory=list)
    prefill_think: bool = False

    def __post_init__(self):
        if isinstance(self.stop, str):  # `stop: "###"` in a recipe: one stop string, not one per character
            self.stop = [self.stop]

    def validate(self) -> None:
        EngineConfig.validate(self)
        if self.max_tokens < 1:
            raise DistillError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        check_sampling(self.temperature, self.top_p, self.min_p)

    def sampling(self) -> Sampling:
        """What the engines take: one Sampling per run."""
        return Sampling(self.temperature, self.top_p, self.max_tokens, list(self.stop), self.min_p)


@dataclass(slots=True)
class SampledConfig(TeacherConfig):
    """A teacher sampling a prompt source: what `distill generate` and `distill eval` share (and an RL stage)."""

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
    num_samples: int = 1

    def validate(self) -> None:
        TeacherConfig.validate(self)
        if self.num_samples < 1:
            raise DistillError(f"-n must be at least 1, got {self.num_samples}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise DistillError(f"--num-prompts must be at least 1, got {self.num_prompts}")


@dataclass(slots=True)
class GenerateConfig(SampledConfig):
    # Answer without chain of thought: prefill an empty think block (R1 kept trivial general queries without CoT)
    no_think: bool = False
    # Store the teacher's top-k log-probs at every completion token beside the text (0: off), for `distill train
    # --method kd`. vLLM (in-process or served) returns at most 20 unless its engine argument max_logprobs says more.
    logprobs: int = 0
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
    # Spending (openai engines): stop before this output's shard would pay more, requests in flight counted
    budget: float | None = None  # USD, at the prices above
    max_total_tokens: int | None = None  # prompt + completion tokens
    stop_timeout: float = STOP_TIMEOUT  # seconds a first Ctrl-C (or SIGTERM) waits for requests in flight
    cancel: bool = False  # openai-batch: cancel this output's batches at the provider, and stop

    def validate(self) -> None:
        if not self.source:
            raise DistillError("no prompt source: pass --source FILE|DATASET|reasoning-gym:TASK")
        if not self.out:
            raise DistillError("no output folder: pass --out DIR")
        SampledConfig.validate(self)
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
        remote = self.engine in ("openai", "openai-batch")
        if (self.budget is not None or self.max_total_tokens is not None) and not remote:
            raise DistillError("--budget and --max-total-tokens limit the openai engines: use --engine openai")
        if self.budget is not None and (not math.isfinite(self.budget) or self.budget <= 0):
            raise DistillError(f"--budget must be a positive number of USD, got {self.budget}")
        if self.budget is not None and self.price_input is None:
            raise DistillError("--budget needs prices: pass --price-input and --price-output (USD per 1M tokens)")
        if self.max_total_tokens is not None and self.max_total_tokens < 1:
            raise DistillError(f"--max-total-tokens must be at least 1, got {self.max_total_tokens}")
        if self.cancel and self.engine != "openai-batch":
            raise DistillError("--cancel cancels submitted batches: it goes with --engine openai-batch")
        if not math.isfinite(self.stop_timeout) or self.stop_timeout < 0:
            raise DistillError(f"--stop-timeout must be 0 or more seconds, got {self.stop_timeout}")
        if self.logprobs < 0:
            raise DistillError(f"--logprobs must be 0 (off) or a number of top tokens, got {self.logprobs}")


def check_sampling(temperature: float, top_p: float, min_p: float = 0.0) -> None:
    """Engines take these as they come; NaN or a negative temperature would fail deep inside one, or not at all."""
    if not math.isfinite(temperature) or temperature < 0:
        raise DistillError(f"--temperature must be a number of 0 or more, got {temperature}")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise DistillError(f"--top-p must be in (0, 1], got {top_p}")
    if not math.isfinite(min_p) or not 0 <= min_p <= 1:
        raise DistillError(f"--min-p must be in [0, 1], got {min_p}")


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
    backend: str = "local"  # local (a process pool on this machine) | ray (Ray Data, one stage per verifier)
    ray_address: str | None = None  # --backend ray: auto, HOST:PORT or ray://...; None starts a local Ray
    ray_judge_rps: float | None = None  # --backend ray: judge requests per second, all actors together
    ray_stages: dict[str, dict] = field(default_factory=dict)  # verifier -> {num_cpus, max_actors, batch_size}

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
        if self.backend not in ("local", "ray"):
            raise DistillError(
                f"unknown --backend `{self.backend}`{near_hint(self.backend, ('local', 'ray'))}: use local or ray"
            )
        if self.ray_judge_rps is not None and self.ray_judge_rps <= 0:
            raise DistillError(f"ray_judge_rps must be positive, got {self.ray_judge_rps}: requests per second")


# Correctness verifiers `distill eval` runs by default: math for math and science (it needs a gold answer), code
# for code (tests).
DEFAULT_EVAL_VERIFIERS = {"math": {}, "code": {}}


@dataclass(slots=True)
class EvalConfig(SampledConfig):
    """`distill eval`: the prompt source is the benchmark; one teacher config per model of `models`."""

    # Models: aliases, Hugging Face ids, local folders or LoRA adapter folders; none means the embedded SmolLM2.
    # (`model:` names one model, as in generate.)
    models: list[str | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # names in the table and summary, in the order of `models`
    num_samples: int = 4  # k samples per prompt (R1 used 4 to 64 depending on benchmark size)
    # Verification: name -> options, as `distill filter` takes them
    verifiers: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_EVAL_VERIFIERS.items()})
    # Two labels, [before, after]: the table ends with after's gain over before and its 95% paired bootstrap
    # interval over prompts (distill/train/compare.py)
    # (Several gains: a list of such pairs, e.g. [[before, sft], [sft, opd]], a row each.)
    gain_of: list[str] | list[list[str]] = field(default_factory=list)
    # Training data whose problems are left out of the benchmark (held out means held out): generate, filter or mix
    # output folders and files with a `problem` column, or prompt sources in generate's keys ({source, seed,
    # num_prompts, source_options, ...}). The first num_prompts prompts that no training set holds are evaluated.
    exclude: list[str | dict[str, Any]] = field(default_factory=list)
    # Output
    out: str = ""
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self):
        TeacherConfig.__post_init__(self)
        if self.models is None or isinstance(self.models, str):
            self.models = [self.models] if self.models else []
        if self.model is not None and not self.models:
            self.models = [self.model]
        if isinstance(self.labels, str):
            self.labels = [self.labels]
        if isinstance(self.exclude, str | dict):
            self.exclude = [self.exclude]
        if isinstance(self.verifiers, str):
            self.verifiers = [v.strip() for v in self.verifiers.split(",") if v.strip()]
        if isinstance(self.verifiers, list):
            self.verifiers = {name: {} for name in self.verifiers}
        self.verifiers = {name: dict(options or {}) for name, options in (self.verifiers or {}).items()}

    def validate(self) -> None:
        if not self.source:
            raise DistillError("no benchmark: pass --source FILE|DATASET|reasoning-gym:TASK")
        if not self.out:
            raise DistillError("no output folder: pass --out DIR")
        if self.num_samples < 1:
            raise DistillError(f"-n/--samples must be at least 1, got {self.num_samples}")
        SampledConfig.validate(self)
        if self.model is not None and self.models != [self.model]:
            raise DistillError("eval got both `model` and `models`: list every model under `models`")
        if self.labels and len(self.labels) != max(1, len(self.models)):
            raise DistillError(
                f"{len(self.labels)} --label for {max(1, len(self.models))} model(s): give one label per model, "
                "in the same order, or none"
            )
        if self.resume and self.overwrite:
            raise DistillError("--resume and --overwrite contradict each other: pass one of them")
        if not self.verifiers:
            raise DistillError("no verifiers: pass --verifiers, e.g. math,code")
        if self.gain_of:
            names = list(self.labels) or [default_label(m) for m in (self.models or [None])]
            for pair in self.gain_pairs():
                if len(pair) != 2 or not set(pair) <= set(names):
                    raise DistillError(
                        f"gain_of must name two of the models' labels ({', '.join(map(shown, names))}), or list "
                        f"such pairs, got {shown(self.gain_of)}"
                    )

    def gain_pairs(self) -> list[list[str]]:
        """gain_of as a list of [before, after] pairs."""
        if self.gain_of and all(isinstance(pair, list) for pair in self.gain_of):
            return [list(pair) for pair in self.gain_of]
        return [list(self.gain_of)] if self.gain_of else []


@dataclass(slots=True)
class MixConfig:
    """A recipe's `mix:` section: filter outputs by ratio (R1: 600k reasoning + 200k general, math: 3, general: 1).

    `distill mix FOLDER:WEIGHT...` takes counts or shares on the command line instead (distill/filter/dataset/mix.py).
    """

    ratio: dict[str, float] = field(default_factory=dict)  # filter name -> share
    total: int | None = None  # None: as many rows as the ratio allows from what survived the filters
    seed: int = 0
    out: str = ""

    def validate(self, filter_names: list[str] | None = None) -> None:
        """`filter_names`: the recipe's filter entries, which the ratio must name (None: not checked here)."""
        unknown = [shown(n) for n in self.ratio if filter_names is not None and n not in filter_names]
        if unknown or not self.ratio:
            raise DistillError(
                f"mix.ratio must name filter entries ({', '.join(filter_names or [])}), got {unknown or 'none'}"
            )
        shares = list(self.ratio.values())
        if not all(math.isfinite(s) and s >= 0 for s in shares) or sum(shares) <= 0:
            raise DistillError(f"mix.ratio shares must be numbers of at least 0, not all 0, got {shares}")
        if self.total is not None and self.total < 1:
            raise DistillError(f"mix.total must be at least 1, got {self.total}")


# Learning rates when none is given. Full fine-tuning: 4e-5, open-r1's OpenR1-Distill-7B (Qwen2.5-Math-7B on
# Mixture-of-Thoughts, recipes/OpenR1-Distill-7B/sft/config_distill.yaml; OlympicCoder-32B used the same). LoRA:
# about 10x the full fine-tuning rate ("LoRA Without Regret", Schulman et al. 2025; TRL's guide to it uses 2e-4
# for SFT). The student recipes in recipes/students/ set a rate per model size.
FULL_FINETUNE_LR = 4e-5
LORA_LR = 2e-4
# On-policy distillation moves the student less per step than SFT on new text: 2e-5 (full) and 1e-4 (LoRA) are the
# rates of Thinking Machines' on-policy distillation recipes and NeMo-RL's runs (4e-5 was worse there).
OPD_FULL_LR = 2e-5
OPD_LORA_LR = 1e-4
TRAIN_METHODS = ("sft", "kd", "opd")
# The prompt-source settings of generate (SampledConfig's fields) that an OPD run's `prompts:` takes
PROMPT_SOURCE_KEYS = ("source", "split", "prompt_column", "answer_column", "id_column", "domain", "system_prompt",
                      "prompt_template", "num_prompts", "seed", "source_options")  # fmt: skip
# On a CPU, train and rl take log-probabilities from the model's own logits (TRL's tiled head is slower there) up
# to this many bytes of fp32 logits a batch; past it, TRL's tiles again (a 152k vocabulary at 8 x 4096 is 20 GB)
CPU_LOGITS_BYTES = 2 * 2**30


@dataclass(slots=True)
class TrainConfig:
    """What `distill train` decides itself. Every other training argument passes through to TRL's SFTConfig via
    `trl:` (YAML) or `--trl KEY=VALUE`, rather than being declared a second time here (with --method opd, to the
    config of the TRL trainer that distils: DistillationConfig, ServerDistillationConfig or GOLDConfig)."""

    # How: sft (on the teacher's text), kd (on its stored top-k log-probs, from `distill generate --logprobs`; the same
    # tokenizer) or opd (on-policy: the student samples, the teacher scores every token; distill/train/opd.py)
    method: str = "sft"
    # Data and model
    data: list[str] = field(default_factory=list)  # `distill filter` output folders (DATA/data/*.parquet) or files
    student: str | None = None  # alias, Hugging Face id or folder; None: the embedded SmolLM2-135M-Instruct
    out: str = ""
    # Chat template: None keeps the student's own (checked: it must keep <think>); think-preserving picks the
    # shipped template matching the tokenizer's special tokens; chatml, llama3, deepseek-r1 or a .jinja path.
    chat_template: str | None = None
    assistant_only_loss: bool = True  # loss on the assistant turn only (needs {% generation %} in the template)
    # LoRA / QLoRA through peft (QLoRA: 4-bit NF4 base weights, needs bitsandbytes and a CUDA GPU)
    lora: bool = False
    qlora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"  # all linear layers ("LoRA Without Regret")
    # Sequences
    max_length: int = 32768  # R1's generation budget, so no trace is cut; pass less on CPU
    packing: bool = False  # best-fit-decreasing packing, padding-free (see distill/train/sft.py)
    # Without packing, batches of rows of about the same length (transformers' length-grouped sampler): random
    # batches of 4 of the proof's traces were 24% padding, grouped ones 4% (benchmarks/RESULTS.md)
    group_by_length: bool = True
    # Optimisation. R1 trained its distilled students for 2 epochs on ~800k samples; cosine decay to 10% of the
    # peak after a 3% warmup is open-r1's OpenR1-Distill-7B schedule (cosine_with_min_lr, min_lr_rate 0.1).
    learning_rate: float | None = None  # None: FULL_FINETUNE_LR, or LORA_LR with --lora/--qlora
    lr_scheduler_type: str = "cosine_with_min_lr"
    warmup_ratio: float = 0.03
    epochs: float = 2.0
    max_steps: int | None = None  # overrides epochs when set (quick runs)
    batch_size: int = 1  # per device
    gradient_accumulation_steps: int = 1
    # None: on for GPU (activation memory), off on CPU, where recomputing the forward pass costs about a third more
    # time and memory is rarely the limit for the students a CPU trains
    gradient_checkpointing: bool | None = None
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU (bf16 on an AVX2 CPU made a LoRA step 20x slower)
    attn_implementation: str | None = None  # None: flash_attention_2 on GPU when installed, else sdpa
    seed: int = 42
    # Output
    resume: bool = False  # continue from the last checkpoint-* in out
    overwrite: bool = False
    trl: dict[str, Any] = field(default_factory=dict)  # any other SFTConfig argument, e.g. save_steps, max_grad_norm
    # Many GPUs: relaunch through `accelerate launch` (see distill/train/launch.py)
    accelerate_config: str | None = None  # zero2, zero3, fsdp, ddp or a path to an accelerate YAML
    num_processes: int | None = None  # total over all machines; None: the config's, times --num-machines
    num_machines: int | None = None
    machine_rank: int | None = None
    main_process_ip: str | None = None
    main_process_port: int | None = None
    # kd: loss per token = ce_weight x cross-entropy on the teacher's token + (1 - ce_weight) x forward KL from the
    # teacher's stored top-k plus one bucket for the rest of its probability (distill/train/kd.py)
    ce_weight: float = 0.5
    # opd: the teacher, as generate takes it: a model (alias, folder, hub id) run in this process, or a mapping of
    # generate's engine keys, {model, engine: openai, base_url, api_key_env}, for a vLLM server
    teacher: str | dict[str, Any] | None = None
    # opd: the prompts, in generate's keys (PROMPT_SOURCE_KEYS: source, split, ..., num_prompts, seed, source_options)
    prompts: dict[str, Any] = field(default_factory=dict)
    max_completion_length: int = 256  # opd: tokens the student samples per prompt
    temperature: float = 1.0  # opd: the student's sampling temperature, which the loss uses too
    beta: float = 1.0  # opd: 1 reverse KL (on-policy distillation), 0 forward KL, between: generalized JSD
    quiet: bool = False

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.lora_target_modules, str) and "," in self.lora_target_modules:
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if self.qlora:  # QLoRA is LoRA on a quantized base
            self.lora = True
        self.trl = dict(self.trl or {})

    def validate(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise DistillError(
                f"unknown --method `{shown(self.method)}`{near_hint(self.method, TRAIN_METHODS)}: use sft, kd or opd"
            )
        if self.method == "opd":
            self._validate_opd()
        elif not self.data:
            raise DistillError("no training data: pass one or more `distill filter` output folders")
        if not 0 <= self.ce_weight <= 1:
            raise DistillError(f"--ce-weight must be in [0, 1], got {self.ce_weight}")
        if not self.out:
            raise DistillError("no output folder: pass --out DIR")
        if self.resume and self.overwrite:
            raise DistillError("--resume and --overwrite contradict each other: pass one of them")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise DistillError(f"--lora-r and --lora-alpha must be at least 1, got {self.lora_r}, {self.lora_alpha}")
        if self.max_length < 16:
            raise DistillError(f"--max-length must be at least 16 tokens, got {self.max_length}")
        if self.epochs <= 0:
            raise DistillError(f"--epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise DistillError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise DistillError("--batch-size and --gradient-accumulation-steps must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise DistillError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise DistillError(f"unknown --dtype `{self.dtype}`: use auto, float32, bfloat16 or float16")

    def _validate_opd(self) -> None:
        if self.data:
            raise DistillError("--method opd samples its own data: drop the DATA folders, pass --source for prompts")
        if not self.teacher:
            raise DistillError("--method opd needs a teacher: pass --teacher MODEL (and --base-url URL for a server)")
        if isinstance(self.teacher, dict):
            check_keys(EngineConfig, self.teacher, "train.teacher")
            check_types(EngineConfig, self.teacher, "train.teacher")
        check_keys_of(PROMPT_SOURCE_KEYS, self.prompts, "train.prompts")
        check_types(SampledConfig, self.prompts, "train.prompts")
        if not self.prompts.get("source"):
            raise DistillError("--method opd needs prompts: pass --source FILE|DATASET|reasoning-gym:TASK")
        if self.max_completion_length < 1:
            raise DistillError(f"--max-completion-length must be at least 1, got {self.max_completion_length}")
        if not 0 <= self.beta <= 1:
            raise DistillError(f"--beta must be in [0, 1] (1: reverse KL), got {self.beta}")
        check_sampling(self.temperature, 1.0)
        if self.temperature == 0:
            raise DistillError("--temperature must be above 0 for --method opd: the student samples")


# A dataset of traces inherits the teacher's terms (and the prompt source's), which a tool cannot decide.
DEFAULT_LICENSE = "other"


@dataclass(slots=True)
class PublishConfig:
    """`distill publish dataset|model` and a recipe's `publish:` section."""

    dataset: str | None = None  # the dataset's repo id: a recipe publishes its data there; a model card names it
    model: str | None = None  # a recipe's repo id for the trained student
    private: bool = True
    overwrite: bool = False
    revision: str | None = None  # a branch; created when missing
    commit_message: str | None = None
    license: str = DEFAULT_LICENSE
    dry_run: bool = False
    stage_dir: str | None = None  # the staged folder is kept here (required to see a dry run's files on disk)
    # models only
    eval_summary: str | None = None  # a `distill eval` summary.json: its table goes into the card
    base_model: str | None = None  # default: the training config's `student`, or the adapter's base
