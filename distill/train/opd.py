"""`distill train --method opd`: on-policy distillation. The student samples completions of the prompts, the teacher
scores every token of them, and the student is trained to minimise the per-token reverse KL to the teacher on its
own samples (Agarwal et al. 2024; Qwen3; Thinking Machines' "On-Policy Distillation", 2025).

Read top to bottom: the teacher as generate takes it and the prompts as generate reads them -> which TRL trainer
distils (below) -> its config from ours (`trl:` passes any other field through) -> train, resumable from the last
checkpoint -> the student, `opd.jsonl` (one line a step) and report.html with the curves.

TRL does the work; this module picks the trainer and wraps it thinly (TRL is pinned in pyproject.toml):
- same tokenizer, teacher in this process: `trl.DistillationTrainer`, the full-vocabulary generalized JSD (beta 1:
  reverse KL), the teacher's logits tiled through its head so the full logits are never held;
- a served teacher (`--base-url`, a `vllm serve` of it): `trl.experimental.server_distillation`, which sends the
  student's token ids to the server's /v1/completions with `prompt_logprobs` and takes the reverse KL on the sampled
  token plus a tail bucket (the mass outside it), since a server returns top-k log-probs only; same tokenizer;
- another tokenizer (teacher in this process): `trl.experimental.gold` with its ULD loss, which aligns the two
  tokenizations of the same text by bytes (both tokenizers byte-level BPE).

Defaults that avoid the known failure modes: start from an SFT'd student (a warning otherwise: OPD from a cold start
makes the teacher score text it would never write), the tail bucket on the server path, gradient-norm clipping at
1.0, the learning rates of the published recipes (2e-5 full, 1e-4 LoRA). One gradient step per batch of fresh
samples, so the samples are always the current policy's and there is no stale ratio to clip.

Per step, besides TRL's loss, the student's samples get two numbers that mean the same on every path:
`teacher_logprob`, the teacher's log-probability of the student's completion per completion token, and
`reverse_kl`, the sampled-token estimate of KL(student || teacher) per token: the mean of log q(x) - log p(x) over
the student's samples x (unbiased at temperature 1). Across tokenizers both are taken per student token over the
same completion text.
"""

import contextlib
import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from distill.config import OPD_FULL_LR, OPD_LORA_LR, EngineConfig, GenerateConfig, TrainConfig
from distill.engines.openai_engine import safe_url
from distill.errors import DistillError, MissingDependency, near_hint
from distill.generate.sources import load_prompts
from distill.io import check_output as check_output_folder
from distill.io import clear_folder, local_paths
from distill.models import model_label, resolve_model, vocab_hash
from distill.rl.report import write_curves
from distill.settings import build_config
from distill.settings import dump_config as write_resolved
from distill.train.sft import MIN_LR_RATE, _checkpoint_step, _is_train_output, choose_precision
from distill.train.templates import resolve_template

OPD_LOG = "opd.jsonl"
PLOTS = [
    (["reverse_kl"], "reverse KL to the teacher per token (sampled-token estimate)"),
    (["teacher_logprob"], "teacher log-prob of the student's samples per token"),
    (["completion_length"], "mean completion length (tokens)"),
    (["loss"], "training loss (TRL's divergence)"),
]
# DistillationConfig / GOLDConfig fields that TrainConfig owns: set them with the train option, not through `trl:`
OWNED = {"output_dir": "out", "learning_rate": "learning_rate", "max_steps": "max_steps", "beta": "beta",
         "temperature": "temperature", "max_completion_length": "max_completion_length", "seed": "seed",
         "per_device_train_batch_size": "batch_size", "num_train_epochs": "epochs"}  # fmt: skip


def teacher_config(teacher: str | dict) -> EngineConfig:
    """The teacher in generate's engine keys: a model name runs here (transformers), a mapping may name a server."""
    values = {"model": teacher} if isinstance(teacher, str) else dict(teacher)
    config = build_config(EngineConfig, values, {}, "train.teacher")
    config.validate()
    if config.engine == "openai" and not config.base_url:
        raise DistillError("a served teacher needs its URL: pass --base-url, e.g. http://127.0.0.1:8000/v1")
    if config.engine == "vllm":
        raise DistillError(
            "an OPD teacher runs in this process with transformers, or behind `vllm serve` (pass --base-url): "
            "drop engine vllm"
        )
    return config


def prompt_rows(prompts: dict) -> list[list[dict]]:
    """The prompts' chat messages, read as generate reads them (the R1 instruction in the user turn)."""

    return [p.messages for p in load_prompts(GenerateConfig(**prompts))]


def run_opd(config: TrainConfig) -> dict:
    """Distil `config.teacher` into `config.student` on-policy; returns the run's metrics."""
    config.validate()
    import torch  # torch: seconds to import; only where a model runs
    from transformers import AutoTokenizer  # imports torch; only where a model runs

    try:
        import trl  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("trl and peft", 'pip install "distill[train]"') from exc

    out = Path(config.out)
    teacher = teacher_config(config.teacher)
    student_label = model_label(config.student)
    # A server named without a model serves its own: name it by its address
    served_unnamed = teacher.engine == "openai" and not teacher.model
    teacher_label = safe_url(teacher.base_url) if served_unnamed else model_label(teacher.model)
    last_checkpoint = check_output(out, config, teacher)
    rows = prompt_rows(config.prompts)
    if not rows:
        raise DistillError(f"the prompt source {config.prompts['source']} gave no prompts: check --source")

    on_gpu = torch.cuda.is_available() and not config.trl.get("use_cpu", False)
    dtype, bf16, fp16 = choose_precision(config.dtype, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    student_path = resolve_model(config.student)
    tokenizer = _tokenizer(AutoTokenizer, student_path, f"the student {student_label}")
    template, template_name, _ = resolve_template(config.chat_template, tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.padding_side = "left"  # the student samples from left-padded prompts
    kind, teacher_path = _pair(teacher, tokenizer, student_label, teacher_label, AutoTokenizer)
    warn_cold_start(student_path, student_label)
    if kind == "cross":
        warn_cross_tokenizer(student_label, teacher_label)

    learning_rate = config.learning_rate or (OPD_LORA_LR if config.lora else OPD_FULL_LR)
    args = _arguments(config, out, kind, teacher, teacher_path, learning_rate, dtype, bf16, fp16, on_gpu)

    from accelerate import PartialState  # imports torch; only where a model trains

    state = PartialState()  # under `accelerate launch`, one process writes the folder, after all have checked
    log = out / OPD_LOG
    if state.is_main_process:
        if config.overwrite and not config.resume:
            clear_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        resolved = dataclasses.replace(
            config, student=student_label, learning_rate=learning_rate, dtype=dtype,
            chat_template=template_name or config.chat_template,
            teacher=teacher_label if isinstance(config.teacher, str) else dataclasses.asdict(teacher),
        )  # fmt: skip
        write_resolved(resolved, out / "config.resolved.yaml", {"opd_trainer": kind})
        if not last_checkpoint:
            log.unlink(missing_ok=True)
    state.wait_for_everyone()

    peft_config = None
    if config.lora:
        from peft import LoraConfig  # imports torch; only for LoRA

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules, task_type="CAUSAL_LM")  # fmt: skip
    trainer = _trainer(kind, student_path, teacher_path, args, rows, tokenizer, peft_config, log)
    print(
        f"on-policy distillation of {student_label} from {teacher_label} ({_KINDS[kind]}) on {len(rows)} prompts: "
        f"{dtype} on {'cuda' if on_gpu else 'cpu'}, lr {learning_rate:g}, beta {config.beta:g}, "
        f"{'resuming from ' + last_checkpoint if last_checkpoint else 'from step 0'}",
        file=sys.stderr,
    )
    start_step = _step_of(last_checkpoint)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for results; TRL prints its log lines there
        result = trainer.train(resume_from_checkpoint=last_checkpoint)
    steps = trainer.state.global_step - start_step
    seconds = time.perf_counter() - started

    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    model.config.use_cache = True
    with contextlib.redirect_stdout(sys.stderr):
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            tokenizer.padding_side = "right"
            tokenizer.save_pretrained(str(out))
            model.generation_config.save_pretrained(str(out))
        trainer.save_state()
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    metrics = {
        **result.metrics,
        "prompts": len(rows),
        "opd_trainer": kind,
        "global_step": trainer.state.global_step,
        "resumed_from_step": start_step,
        "steps_this_run": steps,
        "seconds_per_step": round(seconds / steps, 2) if steps else None,
        "final_reverse_kl": logged[-1].get("reverse_kl") if logged else None,
        "final_teacher_logprob": logged[-1].get("teacher_logprob") if logged else None,
    }

    if trainer.is_world_process_zero():
        write_curves(out, logged, "distill train --method opd", PLOTS)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.save_metrics("train", metrics)  # train_results.json last: it marks a finished run
    return metrics


_KINDS = {
    "local": "same tokenizer, TRL DistillationTrainer",
    "server": "served teacher, TRL ServerDistillationTrainer",
    "cross": "another tokenizer, TRL GOLD with ULD",
}


def check_output(out: Path, config: TrainConfig, teacher: EngineConfig) -> str | None:
    """The output checks of train (distill/io.py), with the teacher's folder and the prompts among the inputs;
    returns the checkpoint to resume from."""

    busy = check_output_folder(
        out,
        inputs=local_paths([config.student, teacher.model, config.prompts.get("source")]),
        resume=config.resume,
        overwrite=config.overwrite,
        holds="a training run",
    )
    if busy and config.overwrite and not _is_train_output(out):
        raise DistillError(
            f"refusing to overwrite {out}: it is not a `distill train` output (no config.resolved.yaml)"
        )
    if busy and config.resume:
        from transformers.trainer_utils import get_last_checkpoint  # imports torch; only where a model runs

        return get_last_checkpoint(str(out))
    return None


def _tokenizer(auto, path: str, what: str):
    try:
        tokenizer = auto.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise DistillError(f"cannot load {what}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _pair(teacher: EngineConfig, tokenizer, student: str, teacher_label: str, auto) -> tuple[str, str]:
    """Which trainer: ("local" | "server" | "cross", the teacher's folder, id or URL)."""
    mine = vocab_hash(tokenizer)
    if teacher.engine == "openai":
        # The server scores the student's token ids, so it must share the student's tokenizer; checked when the
        # served model's name has a local tokenizer (an alias, a folder, a cached hub id)
        try:
            if not teacher.model:
                raise ValueError("the server's own model")
            theirs = vocab_hash(auto.from_pretrained(resolve_model(teacher.model), local_files_only=True))
        except (OSError, ValueError, DistillError, TypeError):
            theirs = None
            print(f"warning: no local tokenizer for `{teacher_label}`: the server must share the student's",
                  file=sys.stderr)  # fmt: skip
        if theirs is not None and theirs != mine:
            raise DistillError(
                f"the served teacher's tokenizer `{teacher_label}` ({theirs}) is not the student {student}'s "
                f"({mine}): a server scores the student's token ids, so it needs the same one; run the teacher here "
                "(drop --base-url) for a cross-tokenizer distillation"
            )

        if importlib.util.find_spec("vllm") is None:  # TRL's client of the server refuses to load without it
            raise MissingDependency("vllm (TRL's client of a served teacher needs it)", 'pip install "distill[vllm]"')
        return "server", teacher.base_url.rstrip("/").removesuffix("/v1")
    path = resolve_model(teacher.model)
    theirs = vocab_hash(_tokenizer(auto, path, f"the teacher {teacher_label}"))
    return ("local" if theirs == mine else "cross"), path


def warn_cold_start(student_path: str, student: str) -> None:
    """OPD is meant to polish an SFT'd student; from a base model its samples are text the teacher would never
    write, the reverse KL is huge and the first steps go to the format (the cold start problem)."""
    trained = Path(student_path) / "train_results.json"
    if not trained.is_file():
        print(
            f"warning: the student {student} is not a `distill train` output: on-policy distillation works best "
            "from a student already fine-tuned on the teacher's traces (SFT first, as recipes/opd-cpu.yaml does)",
            file=sys.stderr,
        )


def warn_cross_tokenizer(student: str, teacher: str) -> None:
    """Measured, not assumed: on the quickstart's pair (SmolLM2 student, Qwen teacher) GOLD's ULD loss fell while the
    student moved away from the teacher and lost 11.5 points strict (benchmarks/RESULTS.md, benchmarks/opd.py)."""
    print(
        f"warning: {student} and {teacher} have different tokenizers, so OPD runs on GOLD's ULD loss, which compares "
        "the two distributions sorted by probability, not token by token; on the quickstart's pair it made the SFT'd "
        "student worse (benchmarks/RESULTS.md). Prefer a teacher with the student's tokenizer, and compare against "
        "the SFT'd student with `distill eval` before using the result",
        file=sys.stderr,
    )


def _arguments(config, out, kind, teacher, teacher_path, learning_rate, dtype, bf16, fp16, on_gpu) -> Any:
    """The TRL config of the chosen trainer: ours, then `trl:` pass-through."""
    if kind == "local":
        from trl import DistillationConfig as Config  # imports torch; only where a model trains
    elif kind == "server":
        from trl.experimental.server_distillation import ServerDistillationConfig as Config
    else:
        from trl.experimental.gold import GOLDConfig as Config  # imports torch; only where a model trains
    args = {
        "output_dir": str(out),
        "learning_rate": learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        # With a step count, the warmup in whole steps rounded down: transformers rounds a ratio up, so a short run
        # (the one-step check, 16 steps on a CPU) would spend its first step at a learning rate of 0
        "warmup_steps": int(config.warmup_ratio * config.max_steps) if config.max_steps else config.warmup_ratio,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "gradient_checkpointing": on_gpu if config.gradient_checkpointing is None else config.gradient_checkpointing,
        "bf16": bf16,  # explicit: TRL defaults to bf16, which crawls on CPUs
        "fp16": fp16,
        "use_cpu": not on_gpu,
        "seed": config.seed,
        "max_grad_norm": 1.0,
        "beta": config.beta,
        "temperature": config.temperature,
        "top_p": 1.0,  # sample the student's own distribution: the reverse KL is an expectation under it
        "max_completion_length": config.max_completion_length,
        "model_init_kwargs": {"dtype": dtype},
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 50,
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": config.quiet,
    }
    if config.lr_scheduler_type == "cosine_with_min_lr":
        args["lr_scheduler_kwargs"] = {"min_lr_rate": MIN_LR_RATE}
    if kind != "server":
        args["teacher_model_init_kwargs"] = {"dtype": dtype}
    if kind == "server":
        # top-1 (the sampled token) is all TRL's server path computes with beta > 0; the tail bucket keeps the rest
        # of the mass in the loss (without it a top-1 divergence is clamped to nothing: verl saw 89% of steps at 0)
        args.update(teacher_model_server_url=teacher_path, loss_top_k=1 if config.beta > 0 else 20, loss_add_tail=True)
    if kind == "cross":
        args.update(lmbda=1.0, use_uld_loss=True, teacher_tokenizer_name_or_path=teacher_path,
                    max_length=config.max_length, uld_use_hybrid_loss=True)  # fmt: skip
    for key, value in config.trl.items():
        if key in OWNED:
            raise DistillError(f"set `{key}` with the train option `{OWNED[key]}`, not through trl")
        if key not in {f.name for f in dataclasses.fields(Config)}:
            raise DistillError(f"unknown TRL {Config.__name__} argument `{key}`{near_hint(key, args)}")
        args[key] = value
    try:
        return Config(**args)
    except ValueError as exc:
        raise DistillError(f"the OPD settings do not fit together: {str(exc).splitlines()[0]}") from None


def _trainer(kind, student_path, teacher_path, args, rows, tokenizer, peft_config, log: Path):
    from datasets import Dataset  # ~2 s to import; only for datasets folders and hub ids

    callbacks = [_LogCallback(log)]
    if kind == "cross":
        # GOLD reads TRL's chat-ML rows; the empty assistant turn only marks where the completion starts
        data = Dataset.from_list([{"messages": [*m, {"role": "assistant", "content": ""}]} for m in rows])
        return _cross_class()(model=student_path, teacher_model=teacher_path, args=args, train_dataset=data,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)  # fmt: skip
    data = Dataset.from_list([{"prompt": m} for m in rows])
    if kind == "server":
        return _server_class()(model=student_path, args=args, train_dataset=data, processing_class=tokenizer,
                               peft_config=peft_config, callbacks=callbacks)  # fmt: skip
    return _local_class()(model=student_path, teacher_model=teacher_path, args=args, train_dataset=data,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)  # fmt: skip


# -- the per-step numbers ------------------------------------------------------------------------------------------


class _Metrics:
    """Mixed into each TRL trainer: sums of the student's and the teacher's log-probs of the student's completions,
    reported (and reset) at every log."""

    def _opd_record(self, student_logprob: float, teacher_logprob: float, tokens: int, sequences: int) -> None:
        sums = self.__dict__.setdefault("_opd_sums", [0.0, 0.0, 0, 0])
        for i, value in enumerate((student_logprob, teacher_logprob, tokens, sequences)):
            sums[i] += value

    def log(self, logs: dict, start_time: float | None = None) -> None:
        student, teacher, tokens, sequences = self.__dict__.pop("_opd_sums", [0.0, 0.0, 0, 0])
        if tokens and "loss" in logs:
            logs["reverse_kl"] = (student - teacher) / tokens
            logs["teacher_logprob"] = teacher / tokens
            logs["completion_length"] = tokens / sequences
        super().log(logs, start_time)


def token_logprobs(hidden, head, ids, chunk: int = 512):
    """log-softmax(head(hidden))[ids] per position, `chunk` positions at a time (the vocabulary logits of a whole
    batch are never held at once); no gradient."""
    import torch  # torch: seconds to import; only where a model runs

    with torch.no_grad():
        flat, targets = hidden.detach().reshape(-1, hidden.size(-1)), ids.reshape(-1)
        parts = []
        for start in range(0, flat.size(0), chunk):
            logits = head(flat[start : start + chunk].to(head.weight.dtype)).float()
            picked = logits.gather(-1, targets[start : start + chunk].unsqueeze(-1)).squeeze(-1)
            parts.append(picked - logits.logsumexp(-1))
        return torch.cat(parts).view(ids.shape)


def _local_class() -> type:
    from trl import DistillationTrainer  # imports torch; only where a model trains

    class LocalDistillation(_Metrics, DistillationTrainer):
        """The base computes the student's and the teacher's hidden states at the completion tokens; they are kept
        (detached) to score the sampled tokens through each model's head."""

        def _get_last_hidden_state(self, unwrapped_model, *args, **kwargs):
            hidden = super()._get_last_hidden_state(unwrapped_model, *args, **kwargs)
            self.__dict__.setdefault("_opd_hidden", []).append(hidden.detach())
            return hidden

        def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
            self._opd_hidden = []
            result = super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
            if self.model.training and len(self._opd_hidden) == 2:
                student_hidden, teacher_hidden = self._opd_hidden
                ids, mask = inputs["completion_ids"], inputs["completion_mask"].bool()
                unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
                student = token_logprobs(student_hidden, unwrapped_student.get_output_embeddings(), ids)
                teacher = token_logprobs(teacher_hidden, unwrapped_teacher.get_output_embeddings(), ids)
                self._opd_record(float(student[mask].sum()), float(teacher[mask].sum()), int(mask.sum()), len(ids))
            self._opd_hidden = []
            return result

    return LocalDistillation


def _server_class() -> type:
    from trl.experimental.server_distillation import ServerDistillationTrainer

    class ServerDistillation(_Metrics, ServerDistillationTrainer):
        """The server's log-prob of each sampled token is kept beside TRL's loss."""

        def _get_teacher_token_logprobs_from_server(self, inputs, aligned_prompt_length):
            result = super()._get_teacher_token_logprobs_from_server(inputs, aligned_prompt_length)
            self._opd_actual = (result["actual_logprobs"], aligned_prompt_length)
            return result

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch  # torch: seconds to import; only where a model runs

            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            if self.model.training:
                width, ids = inputs["prompt_ids"].size(1), inputs["completion_ids"]
                mask = inputs["completion_mask"].bool()
                with torch.no_grad():
                    logprobs = torch.log_softmax(outputs.logits[:, width - 1 : -1].float(), dim=-1)
                    student = logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
                # TRL placed the teacher's values from the batch's shortest prompt on: shift them to the completion
                actual, prompt_length = self._opd_actual
                teacher = torch.zeros_like(student)
                window = actual[:, width - prompt_length : width - prompt_length + ids.size(1)]
                teacher[:, : window.size(1)] = torch.nan_to_num(window, neginf=0.0)
                mask[:, window.size(1) :] = False
                self._opd_record(float(student[mask].sum()), float(teacher[mask].sum()), int(mask.sum()), len(ids))
            return (loss, outputs) if return_outputs else loss

    return ServerDistillation


def _cross_class() -> type:
    from trl.experimental.gold import GOLDTrainer  # imports torch; only where a model trains
    from trl.experimental.gold.gold_trainer import build_teacher_inputs_from_texts

    class CrossTokenizerDistillation(_Metrics, GOLDTrainer):
        """The teacher's logits are caught with a forward hook; its completion tokens are found by tokenizing the
        same texts as GOLD does."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch  # torch: seconds to import; only where a model runs

            caught = {}
            hook = self.teacher_model.register_forward_hook(lambda m, a, o: caught.update(logits=o.logits.detach()))
            try:
                loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            finally:
                hook.remove()
            if self.model.training and "logits" in caught and "original_completion_text" in inputs:
                with torch.no_grad():
                    labels = inputs["labels"][:, 1:]
                    mask = labels != -100
                    student = _picked(outputs.logits[:, :-1], labels)
                    _, teacher_labels, _, _ = build_teacher_inputs_from_texts(
                        self.teacher_tokenizer, inputs["original_prompt_text"], inputs["original_completion_text"],
                        use_extended_uld=self.uld_loss_fn.use_extended_uld,
                    )  # fmt: skip
                    teacher_labels = teacher_labels[:, 1:].to(caught["logits"].device)
                    teacher = _picked(caught["logits"][:, :-1], teacher_labels)
                    self._opd_record(float(student[mask].sum()), float(teacher[teacher_labels != -100].sum()),
                                     int(mask.sum()), len(labels))  # fmt: skip
            return (loss, outputs) if return_outputs else loss

    return CrossTokenizerDistillation


def _picked(logits, labels):
    """log-softmax(logits)[labels], 0 where labels is -100."""
    import torch  # torch: seconds to import; only where a model runs

    safe = labels.clamp(min=0)
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logprobs.masked_fill(labels == -100, 0.0)


def _log_callback_class():
    from transformers import TrainerCallback  # imports torch; only where a model runs

    class LogCallback(TrainerCallback):
        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step}
            for key in ("loss", "reverse_kl", "teacher_logprob", "completion_length", "learning_rate", "grad_norm"):
                row[key] = _number(logs.get(key))
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    return LogCallback


def _LogCallback(path: Path):  # noqa: N802 - a class made on first use (transformers is imported late)
    return _log_callback_class()(path)


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _step_of(checkpoint: str | None) -> int:
    return _checkpoint_step(checkpoint)
