"""TrainConfig: what `distill train` decides itself. Every other training argument passes through to TRL's
SFTConfig via `trl:` (YAML) or `--trl KEY=VALUE`, rather than being declared a second time here."""

from dataclasses import dataclass, field
from typing import Any

from distill.errors import DistillError

# Learning rates when none is given. Full fine-tuning: 4e-5, open-r1's OpenR1-Distill-7B (Qwen2.5-Math-7B on
# Mixture-of-Thoughts, recipes/OpenR1-Distill-7B/sft/config_distill.yaml; OlympicCoder-32B used the same). LoRA:
# about 10x the full fine-tuning rate ("LoRA Without Regret", Schulman et al. 2025; TRL's guide to it uses 2e-4
# for SFT). The student recipes in recipes/students/ set a rate per model size.
FULL_FINETUNE_LR = 4e-5
LORA_LR = 2e-4


@dataclass(slots=True)
class TrainConfig:
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
        if not self.data:
            raise DistillError("no training data: pass one or more `distill filter` output folders")
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
