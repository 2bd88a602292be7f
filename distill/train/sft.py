"""`distill train`: supervised fine-tuning of a student on `distill filter` output, as R1's distillation did.

One function, `run_train`, top to bottom in the manner of open-r1's sft.py: find the data, pick the precision
for the device, load and check the student's chat template, prepare the output folder, build TRL's SFTConfig
(plus a peft LoraConfig for --lora / --qlora), train with TRL's SFTTrainer, save model or adapter, tokenizer,
generation config, config.resolved.yaml and metrics. TRL does the tokenizing, masking, packing and training.

CPU vs GPU:
- Precision: bf16 weights and bf16 training on a GPU that has it (fp32 weights with fp16 autocast on one that
  does not); fp32 on CPU. TRL's SFTConfig defaults to bf16=True, and bf16 on an AVX2 CPU made one LoRA step of
  SmolLM2-135M take 40 s instead of 1.8 s, so we always say which.
- Attention: flash_attention_2 on GPU when flash-attn is installed, else sdpa.
- Packing: --packing uses TRL's best-fit-decreasing strategy, which TRL always runs padding-free (sequences
  flattened into one row, boundaries in position_ids). With flash attention the boundaries go to the varlen
  kernels; with sdpa/eager, transformers builds a block-diagonal causal mask from the position_ids (TRL passes
  use_cache=False, which that needs), so documents do not attend to each other there either: correct, but the
  mask costs O(length^2) memory, hence the warning on GPU without flash-attn. tests/test_train.py checks this.
- Assistant-only loss (default): TRL masks everything outside the template's {% generation %} span with -100,
  on CPU and GPU alike; see distill/train/templates.py for which templates qualify.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import yaml

from distill.config import CPU_LOGITS_BYTES as LOGITS_BYTES
from distill.config import FULL_FINETUNE_LR, LORA_LR, TrainConfig
from distill.errors import DistillError, MissingDependency, near_hint
from distill.io import check_output as check_output_folder
from distill.io import clear_folder, local_paths
from distill.models import model_label, resolve_model, vocab_hash
from distill.settings import dump_config
from distill.train.kd import check_vocabulary, collate, kd_dataset, kd_trainer_class
from distill.train.templates import PROBE, check_template, resolve_template, without_generation_markers

if TYPE_CHECKING:
    from datasets import Dataset
    from trl import SFTTrainer

# SFTConfig arguments that TrainConfig owns: set them with the train option, not through `trl:`.
OWNED_TRL_KEYS = {
    "output_dir": "out",
    "learning_rate": "learning_rate",
    "lr_scheduler_type": "lr_scheduler_type",
    "warmup_steps": "warmup_ratio",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "gradient_checkpointing": "gradient_checkpointing",
    "max_length": "max_length",
    "packing": "packing",
    "train_sampling_strategy": "group_by_length",
    "assistant_only_loss": "assistant_only_loss",
    "bf16": "dtype",
    "fp16": "dtype",
    "seed": "seed",
}
KD_CACHE = ".kd-rows"  # --method kd: the tokenized rows, memory-mapped during training, removed at the end
MIN_LR_RATE = 0.1  # cosine_with_min_lr decays to 10% of the peak (open-r1's OpenR1-Distill-7B)


def run_train(config: TrainConfig) -> "tuple[SFTTrainer, dict]":
    """Fine-tune `config.student` on `config.data` into `config.out`; returns (trainer, metrics)."""
    config.validate()
    import torch  # torch: seconds to import; only where a model runs
    from accelerate import PartialState  # imports torch; only where a model trains
    from transformers import AutoTokenizer  # imports torch; only where a model runs

    try:
        from peft import LoraConfig  # imports torch; only for LoRA
        from trl import SFTConfig, SFTTrainer  # imports torch; only where a model trains
    except ImportError as exc:
        raise MissingDependency("trl and peft", 'pip install "distill[train]"') from exc

    out = Path(config.out)
    student_label = model_label(config.student)

    # Everything wrong with the input, the output folder included, is found before anything is written, and the
    # cheap checks come before loading the data (800k long traces take a while).
    last_checkpoint = check_output(out, config)
    files = find_data_files(config.data)

    # Device and precision.
    on_gpu = torch.cuda.is_available() and not config.trl.get("use_cpu", False)
    dtype, bf16, fp16 = choose_precision(config.dtype, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    attn = config.attn_implementation or (
        "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    )
    quantization_config = None
    if config.qlora:
        if not on_gpu:
            raise DistillError("--qlora needs a CUDA GPU (bitsandbytes 4-bit kernels): on CPU use --lora instead")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingDependency("bitsandbytes (for --qlora)", "pip install bitsandbytes")
        from transformers import BitsAndBytesConfig  # imports torch; only where a model runs

        quantization_config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
            # Storing the 4-bit weights in the compute dtype lets FSDP / ZeRO-3 shard them (QLoRA + FSDP recipe).
            bnb_4bit_quant_storage=torch.bfloat16 if bf16 else torch.float16,
        )

    # Student tokenizer and chat template: refuse one that drops <think>, or that cannot mask the prompt.
    student_path = resolve_model(config.student)
    try:
        tokenizer = AutoTokenizer.from_pretrained(student_path)
    except (OSError, ValueError) as exc:
        raise DistillError(f"cannot load the student {student_label}: {str(exc).splitlines()[0]}") from None
    template, template_name, end_of_turn = resolve_template(config.chat_template, tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    kd = config.method == "kd"
    if kd:  # the template renders only the prompt; the completion is the teacher's own tokens
        check_vocabulary(files, student_label, vocab_hash(tokenizer))
    else:
        check_template(tokenizer, None, config.assistant_only_loss, student_label)

    # TRL arguments: ours, then the pass-through ones.
    trl_args = sft_arguments(
        config, out, dtype=dtype, bf16=bf16, fp16=fp16, attn=attn, end_of_turn=end_of_turn, on_gpu=on_gpu
    )
    if kd:  # rows come tokenized, with the teacher's log-probs beside them, through our collator
        trl_args.update(assistant_only_loss=False, packing=False, remove_unused_columns=False,
                        dataset_kwargs={"skip_prepare_dataset": True})  # fmt: skip
    trl_args = merge_trl_arguments(trl_args, config.trl, SFTConfig)
    dataset = None if kd else load_messages(files, quiet=config.quiet)

    # Output folder: every process writes only after all have checked (below), so they all agree.
    state = PartialState()
    if state.is_main_process:
        if config.overwrite:
            clear_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        resolved = dataclasses.replace(
            config,
            student=student_label,
            chat_template=template_name or config.chat_template,
            learning_rate=trl_args["learning_rate"],
            dtype=dtype,
            attn_implementation=attn,
        )
        dump_config(resolved, out / "config.resolved.yaml")
    state.wait_for_everyone()
    kd_counts = None
    if kd:
        dataset, kd_counts = kd_dataset(files, tokenizer, config.max_length, out / KD_CACHE, quiet=config.quiet)

    if config.packing and on_gpu and "flash" not in attn and state.is_main_process:
        print(
            f"warning: packing with {attn} attention builds a block-diagonal mask of max_length^2 per batch; "
            "install flash-attn for the varlen kernels",
            file=sys.stderr,
        )
    peft_config = None
    if config.lora:
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            task_type="CAUSAL_LM",
        )
    args = SFTConfig(**trl_args)
    if state.is_main_process:
        kind = ("QLoRA" if config.qlora else "LoRA") + f" r={config.lora_r}" if config.lora else "full fine-tuning"
        start = f"resuming from {last_checkpoint}" if last_checkpoint else "from step 0"
        batching = (
            "packing" if config.packing else "length-grouped batches" if config.group_by_length else "random batches"
        )
        if config.resume and not last_checkpoint:
            start = f"no checkpoint-* in {out} to resume from: starting at step 0"
        print(
            f"training {student_label} ({kind}) on {len(dataset)} rows: {dtype} on {'cuda' if on_gpu else 'cpu'}, "
            f"{attn} attention, {batching}, "
            f"{loss_text(config)} loss, lr {args.learning_rate:g}, "
            f"{start}",
            file=sys.stderr,
        )
    trainer_class = SFTTrainer if on_gpu else cpu_trainer_class()
    extra = {}
    if kd:
        trainer_class = kd_trainer_class(SFTTrainer)
        trainer_class.ce_weight = config.ce_weight
        extra["data_collator"] = collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    trainer = trainer_class(
        model=student_path,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        quantization_config=quantization_config,
        **extra,
    )

    # Train. The trainer prints its log lines to stdout; stdout is for results, so they go to stderr.
    start_step = _checkpoint_step(last_checkpoint)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=last_checkpoint)
    elapsed = time.perf_counter() - started
    steps_this_run = trainer.state.global_step - start_step
    metrics = dict(result.metrics)
    metrics.update(
        {
            "train_rows": len(dataset),
            "global_step": trainer.state.global_step,
            "resumed_from_step": start_step,
            "steps_this_run": steps_this_run,
            "seconds_per_step": round(elapsed / steps_this_run, 4) if steps_this_run else None,
            "final_loss": _last_loss(trainer.state.log_history),
        }
    )
    if kd_counts is not None:  # every row accounted for: trained on, or dropped and why
        metrics.update({f"kd_{key}": value for key, value in kd_counts.items()})

    # Save: model (or adapter), tokenizer, generation config, trainer state, and metrics last: train_results.json
    # marks a finished run (distill run skips a train stage that has it).
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    model.config.use_cache = True  # off for training; inference wants it back
    if template is not None:
        tokenizer.chat_template = _template_to_save(tokenizer, template)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            model.generation_config.save_pretrained(str(out))  # eos includes the template's end-of-turn token
        trainer.save_state()  # trainer_state.json: the loss curve
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)  # train_results.json and all_results.json
    if kd and state.is_main_process:
        shutil.rmtree(out / KD_CACHE, ignore_errors=True)
    return trainer, metrics


def loss_text(config: TrainConfig) -> str:
    if config.method == "kd":
        return f"KD ({config.ce_weight:g} cross-entropy + {1 - config.ce_weight:g} top-k forward KL)"
    return "assistant-only" if config.assistant_only_loss else "full-sequence"


def find_data_files(paths: list[str]) -> list[str]:
    """Parquet, JSONL or JSON files (DIR/data/*, DIR/* or files) with a `messages` column (TRL conversational) or
    `prompt` and `completion` columns: filter outputs, or any dataset already in one of TRL's shapes."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _train_files(path / "data") or _train_files(path)
        else:
            raise DistillError(f"training data {path} does not exist: pass a `distill filter` output folder")
        if not found:
            raise DistillError(
                f"no Parquet, JSONL or JSON files in {path}: pass a `distill filter` output folder (DIR/data/)"
            )
        files += found
    kinds = {_columns_kind(file) for file in files}
    if len(kinds) > 1:
        raise DistillError("the training files mix `messages` and prompt/completion columns: pass one kind")
    return [str(f) for f in files]


TRAIN_SUFFIXES = (".parquet", ".jsonl", ".json")


def _train_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in TRAIN_SUFFIXES and not p.name.startswith("."))


def _column_names(file: Path) -> list[str]:
    if file.suffix in (".jsonl", ".json"):
        text = file.read_text(encoding="utf-8")
        try:
            first = json.loads(text)[0] if text.lstrip().startswith("[") else json.loads(text.splitlines()[0])
        except (ValueError, IndexError):
            raise DistillError(f"cannot read {file} as JSON lines or a JSON list of records") from None
        return list(first) if isinstance(first, dict) else []
    try:
        return pq.read_schema(file).names
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DistillError(f"cannot read {file} as Parquet: {str(exc).splitlines()[0]}") from None


def _columns_kind(file: Path) -> str:
    names = _column_names(file)
    if "messages" in names:
        return "messages"
    if "prompt" in names and "completion" in names:
        return "prompt_completion"
    hint = " (it is a `distill generate` output: run `distill filter` on it first)" if "completion" in names else ""
    raise DistillError(
        f"{file} has no `messages` column nor `prompt` and `completion` columns{hint}: training needs the output "
        "of `distill filter` or a dataset in TRL's conversational shape"
    )


def load_messages(files: list[str], quiet: bool = False) -> "Dataset":
    """A `messages` column as a datasets.Dataset (memory-mapped, so 800k long traces do not fill RAM).

    Prompt/completion rows become messages: a string prompt is the user turn and a string completion the
    assistant turn; lists of turns (TRL's conversational prompt/completion) are joined as they are.
    """
    import datasets  # ~2 s to import; only for datasets folders and hub ids

    if quiet:
        datasets.disable_progress_bars()
    builder = "parquet" if files[0].endswith(".parquet") else "json"
    kind = _columns_kind(Path(files[0]))
    columns = ["messages"] if kind == "messages" else ["prompt", "completion"]
    dataset = datasets.load_dataset(builder, data_files=files, split="train")
    dataset = dataset.select_columns(columns)
    if len(dataset) == 0:
        raise DistillError(f"the training data has no rows ({len(files)} file(s)): nothing to train on")
    if kind == "prompt_completion":
        dataset = dataset.map(_to_messages, remove_columns=columns, desc="prompt/completion -> messages")
    first = dataset[0]["messages"]
    if not isinstance(first, list) or not any(isinstance(m, dict) and m.get("role") == "assistant" for m in first):
        raise DistillError(
            "the `messages` column must hold conversations with an assistant turn ([{role, content}, ...])"
        )
    return dataset


def _to_messages(row: dict) -> dict:
    def turns(value, role: str) -> list[dict]:
        if isinstance(value, list):
            return [{"role": t["role"], "content": t["content"]} for t in value]
        return [{"role": role, "content": "" if value is None else str(value)}]

    return {"messages": turns(row["prompt"], "user") + turns(row["completion"], "assistant")}


def choose_precision(requested: str, on_gpu: bool, gpu_has_bf16: bool) -> tuple[str, bool, bool]:
    """(weights dtype, bf16, fp16): bf16 on a GPU that has it, fp16 autocast on one that does not, fp32 on CPU."""
    if requested == "auto":
        if not on_gpu:
            return "float32", False, False
        return ("bfloat16", True, False) if gpu_has_bf16 else ("float32", False, True)
    if requested == "bfloat16":
        return "bfloat16", True, False
    if requested == "float16":
        return "float32", False, True  # fp16 weights cannot be trained directly: fp32 master weights, fp16 autocast
    return "float32", False, False


def sft_arguments(
    config: TrainConfig,
    out: Path,
    *,
    dtype: str,
    bf16: bool,
    fp16: bool,
    attn: str,
    end_of_turn: str | None,
    on_gpu: bool,
) -> dict:
    """The SFTConfig arguments distill decides (before `trl:` pass-through)."""
    learning_rate = config.learning_rate or (LORA_LR if config.lora else FULL_FINETUNE_LR)
    args = {
        "output_dir": str(out),
        "learning_rate": learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "gradient_checkpointing": on_gpu if config.gradient_checkpointing is None else config.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},  # as open-r1; reentrant breaks with LoRA/DDP
        "max_length": config.max_length,
        "packing": config.packing,
        "packing_strategy": "bfd",  # whole sequences, never cut across rows; TRL makes it padding-free
        # Packed rows carry no padding to save; otherwise rows are shuffled, cut into megabatches (up to 50 batches,
        # a quarter of a small set), each sorted by length and cut into batches (transformers' LengthGroupedSampler)
        "train_sampling_strategy": "group_by_length" if config.group_by_length and not config.packing else "random",
        "assistant_only_loss": config.assistant_only_loss,
        "bf16": bf16,  # always explicit: TRL's default is bf16=True, which crawls on CPUs
        "fp16": fp16,
        "model_init_kwargs": {"dtype": dtype, "attn_implementation": attn},
        "seed": config.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 500,
        "save_total_limit": 1,  # a checkpoint to resume from; a 7B one with optimizer state is ~100 GB
        "report_to": "none",
        "disable_tqdm": config.quiet,
        "dataloader_pin_memory": on_gpu,  # pinning is for copies to a GPU
    }
    if config.lr_scheduler_type == "cosine_with_min_lr":
        args["lr_scheduler_kwargs"] = {"min_lr_rate": MIN_LR_RATE}
    if end_of_turn:
        # A shipped template ends assistant turns with its own token (<|im_end|>, <|eot_id|>, ...): make it the
        # eos, so TRL adds it to the generation config and the trained student stops there.
        args["eos_token"] = end_of_turn
    return args


def cpu_trainer_class() -> type:
    """SFTTrainer with the model's own loss head on CPUs.

    TRL 1.x always computes the loss through its fused LM head (`trl.kernels.chunked_logprob`): the hidden states
    go through the output layer in vocabulary tiles that the backward pass recomputes, which saves GPU memory.
    Without Triton the tiles run as torch ops over every position (padding included) and cost far more than the
    logits they avoid: profiled on SmolLM2-135M (vocabulary 49k, batch 4 x 512, fp32, 2 cores) the tiles took 3 s
    of a 9 s step, and `distill train` ran at 0.79x (full) and 0.63x (LoRA) a bare transformers loop on the same
    batches (benchmarks/train_speed.py). The model's own head and cross-entropy give the same loss (labels shifted
    the same way, -100 ignored, normalized by `num_items_in_batch`); only TRL's entropy metric is dropped, and the
    token accuracy and token count are kept from the logits. A batch whose fp32 logits (and their gradient) would
    pass LOGITS_BYTES (a Qwen vocabulary of 152k at 8 x 4096 tokens: 20 GB) still takes TRL's tiles."""
    import torch  # torch: seconds to import; only where a model runs
    from transformers import Trainer  # imports torch; only where a model runs
    from trl import SFTTrainer  # imports torch; only where a model trains

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            plain = (
                self.args.loss_type == "nll"
                and self.compute_loss_func is None
                and self.label_smoother is None
                and not self.aux_loss_enabled
                and "labels" in inputs
                and inputs["labels"].numel() * self.model.config.get_text_config().vocab_size * 4 <= LOGITS_BYTES
            )
            if not plain:  # DFT, label smoothing, MoE aux loss, logits too big to hold: TRL's own path
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            skip = self._positions_without_targets(inputs["labels"])
            if skip:  # no logits for the prompt columns that no row of the batch learns from
                inputs["labels"] = inputs["labels"][:, skip:]
                inputs["logits_to_keep"] = inputs["input_ids"].size(1) - skip
            loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                labels = inputs["labels"][:, 1:]
                mask = labels != -100
                hits = (outputs.logits[:, :-1].argmax(-1) == labels) & mask
                valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
                correct = self.accelerator.gather_for_metrics(hits.sum()).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            if mode == "train":  # as SFTTrainer counts them: attention-mask tokens, or the packed row's length
                if "attention_mask" in inputs:
                    local = inputs["attention_mask"].sum()
                else:
                    local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
                self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

        def _positions_without_targets(self, labels: "torch.Tensor") -> int:
            """Leading columns whose logits predict no label in any row: the shared prompt part of a batch.

            The logits at column t predict labels[t + 1], so columns up to one before the first label are skipped;
            the model's loss then sees labels[:, skip:] against logits_to_keep = length - skip and shifts them the
            same way, giving the same loss. The output layer is about a fifth of SmolLM2-135M's work per token and
            the prompt a fifth of the proof's rows."""
            if not self._keeps_logits:
                return 0
            targets = (labels != -100).any(dim=0).nonzero()
            return max(int(targets[0]) - 1, 0) if len(targets) else 0

        @functools.cached_property
        def _keeps_logits(self) -> bool:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            return "logits_to_keep" in inspect.signature(base.forward).parameters

    return CpuSFTTrainer


def merge_trl_arguments(args: dict, passthrough: dict, sft_config_cls: type) -> dict:
    """`trl:` / `--trl KEY=VALUE` on top of ours: unknown keys name the near one; owned keys name the option."""
    names = [f.name for f in dataclasses.fields(sft_config_cls)]
    merged = dict(args)
    for key, value in passthrough.items():
        if key in OWNED_TRL_KEYS:
            option = OWNED_TRL_KEYS[key]
            raise DistillError(
                f"set `{key}` with the train option `{option}` (--{option.replace('_', '-')}), not through trl"
            )
        if key not in names:
            raise DistillError(f"unknown TRL SFTConfig argument `{key}`{near_hint(key, names)}")
        if key in ("model_init_kwargs", "gradient_checkpointing_kwargs", "lr_scheduler_kwargs") and isinstance(
            value, dict
        ):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


def check_output(out: Path, config: TrainConfig) -> str | None:
    """Refuse an existing output without --resume/--overwrite, or one that is, holds or lies inside the data or
    the student's folder; return the checkpoint to resume from, if any."""
    busy = check_output_folder(
        out,
        inputs=local_paths([*config.data, config.student]),
        resume=config.resume,
        overwrite=config.overwrite,
        holds="a training run",
    )
    if not busy:
        return None
    if config.overwrite and not _is_train_output(out):
        raise DistillError(
            f"refusing to overwrite {out}: it is not a `distill train` output (no config.resolved.yaml)"
        )
    if config.resume:
        from transformers.trainer_utils import get_last_checkpoint  # imports torch; only where a model runs

        return get_last_checkpoint(str(out))
    return None


def _is_train_output(out: Path) -> bool:
    try:
        resolved = yaml.safe_load((out / "config.resolved.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(resolved, dict) and "student" in resolved and "lora" in resolved


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0

    state = Path(checkpoint) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError):
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _last_loss(log_history: list[dict]) -> float | None:
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def _template_to_save(tokenizer, template: str) -> str:
    """Save the template without {% generation %} tags when that renders the same (other jinja engines lack them)."""
    stripped = without_generation_markers(template)
    try:
        same = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=stripped) == (
            tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=template)
        )
    except Exception:  # noqa: BLE001 - any rendering failure means: keep the template as trained
        same = False
    return stripped if same else template
