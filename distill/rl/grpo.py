"""`distill rl`: GRPO on TRL's GRPOTrainer, the filter's verifiers as rewards (R1-Zero's recipe).

Read top to bottom: prompts from any generate source -> a dataset with the R1 instruction in the user turn (the
model's chat template applies it, as in generate) -> one reward function per verifier, weighted -> GRPOTrainer ->
rewards.jsonl each logging step -> the final model and report.html in the output folder.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from distill.config import CPU_LOGITS_BYTES as LOGITS_BYTES
from distill.config import GenerateConfig
from distill.errors import DistillError, near_hint
from distill.generate.sources import load_prompts
from distill.io import check_output, clear_folder, local_paths
from distill.models import resolve_model
from distill.rl.report import write_report
from distill.rl.rewards import RewardSpec, make_reward_function, parse_reward

REWARDS_LOG = "rewards.jsonl"
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
# Correctness rewards, in order of preference, whose mean is the logged pass rate.
PASS_REWARDS = ("math", "code")


@dataclass
class RlConfig:
    # Prompts: any generate source (file, folder, hub dataset, reasoning-gym:TASK)
    source: str = ""
    split: str = "train"
    prompt_column: str | None = None
    answer_column: str | None = None
    id_column: str | None = None
    domain: str | None = None
    system_prompt: str | None = None  # none, as in R1
    prompt_template: str | None = None  # None: R1's boxed instruction in the user turn (as generate)
    num_prompts: int | None = None
    seed: int = 0
    source_options: dict[str, Any] = field(default_factory=dict)
    # Policy
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct; aliases and local folders work
    out: str = ""
    # Rewards: verifier name -> weight and options
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("math", 1.0), RewardSpec("format", 0.2)])
    # GRPO
    num_generations: int = 8  # the group size G
    # R1 used 0.001: a small KL term that keeps the policy near the base model. TRL defaults to 0 (no reference
    # model, less memory); we follow R1, since a tiny policy with sparse rewards otherwise drifts into gibberish.
    beta: float = 0.001
    epsilon: float = 0.2
    epsilon_high: float | None = None  # DAPO's clip-higher, e.g. 0.28
    loss_type: str = "grpo"
    scale_rewards: str = "group"  # group (GRPO), batch, none (Dr. GRPO)
    max_completion_length: int = 256
    temperature: float = 1.0
    learning_rate: float = 1e-6
    max_steps: int = 100
    per_device_train_batch_size: int | None = None  # None: num_generations (one prompt per step)
    gradient_accumulation_steps: int = 1
    logging_steps: int = 1
    save_steps: int = 50
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    bf16: bool = False  # GPU only; CPU trains in fp32 (bf16 matmuls are slow on AVX2 CPUs)
    use_vllm: bool = False
    vllm_mode: str = "colocate"  # colocate or server
    trl: dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig field, passed through
    resume: bool = False
    overwrite: bool = False


def prompt_rows(config: RlConfig) -> list[dict]:
    """The prompts as TRL's conversational dataset: `prompt` (messages) plus gold, tests, domain, problem."""
    source = GenerateConfig(
        source=config.source,
        split=config.split,
        prompt_column=config.prompt_column,
        answer_column=config.answer_column,
        id_column=config.id_column,
        domain=config.domain,
        system_prompt=config.system_prompt,
        prompt_template=config.prompt_template,
        num_prompts=config.num_prompts,
        seed=config.seed,
        source_options=dict(config.source_options),
    )
    return [
        {"prompt": p.messages, "gold": p.gold, "tests": p.tests, "domain": p.domain, "problem": p.problem}
        for p in load_prompts(source)
    ]


def grpo_args(config: RlConfig, out: Path, use_cpu: bool) -> Any:
    from trl import GRPOConfig  # imports torch; only where a model trains

    if config.loss_type not in LOSS_TYPES:
        raise DistillError(f"unknown loss type `{config.loss_type}`: choose from {', '.join(LOSS_TYPES)}")
    if config.num_generations < 2:
        raise DistillError("num_generations must be at least 2: GRPO's baseline is the group mean")
    if use_cpu and (config.bf16 or config.use_vllm):
        raise DistillError("bf16 and vLLM generation need a GPU: drop --bf16/--vllm on CPU")
    scale = {"none": False, "false": False}.get(str(config.scale_rewards).lower(), config.scale_rewards)
    args = dict(
        output_dir=str(out),
        num_generations=config.num_generations,
        per_device_train_batch_size=config.per_device_train_batch_size or config.num_generations,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        beta=config.beta,
        epsilon=config.epsilon,
        epsilon_high=config.epsilon_high,
        loss_type=config.loss_type,
        scale_rewards=scale,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        reward_weights=[r.weight for r in config.rewards],
        use_cpu=use_cpu,
        bf16=config.bf16,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        seed=config.seed,
        report_to=[],
        save_only_model=False,
    )
    if args["epsilon_high"] is None:
        args.pop("epsilon_high")
    args.update(config.trl)  # --trl KEY=VALUE wins
    try:
        return GRPOConfig(**args)
    except TypeError as exc:
        raise DistillError(f"GRPOConfig refused an argument ({exc}): check the --trl keys") from None
    except ValueError as exc:
        raise DistillError(f"GRPO settings do not fit together: {exc}") from None


def cpu_grpo_trainer_class() -> type:
    """GRPOTrainer whose per-token log-probabilities come from the model's own head on CPUs.

    TRL 1.x scores completions through its fused LM head (`trl.kernels.chunked_logprob`), tiles over the
    vocabulary that save GPU memory; without Triton they run as torch ops over every position and cost more than
    the logits they avoid (the same head cost `distill train` 0.79x a bare loop: distill/train/sft.py). Here the
    model returns the logits of the completion positions only (`logits_to_keep`), and log-softmax, the gathered
    log-probabilities and the entropy are taken from them: the same values (tests/test_rl.py compares both) at the
    policy, the old policy and the reference model alike. Images, MoE aux losses and logits past LOGITS_BYTES keep
    TRL's path."""
    import torch  # torch: seconds to import; only where a model runs
    from trl import GRPOTrainer  # imports torch; only where a model trains

    class CpuGRPOTrainer(GRPOTrainer):
        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
            compute_aux_loss=False, **multimodal,
        ):  # fmt: skip
            vocab = model.config.get_text_config().vocab_size if hasattr(model, "config") else None
            size = input_ids.size(0) * (logits_to_keep + 1) * (vocab or 0) * 4
            if compute_aux_loss or any(v is not None for v in multimodal.values()) or not vocab or size > LOGITS_BYTES:
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                    **multimodal,
                )  # fmt: skip
            batch_size = batch_size or input_ids.size(0)
            all_logps, all_entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
                with self.accelerator.autocast():
                    # logits_to_keep + 1 positions: the one before the completion predicts its first token
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1,
                                   use_cache=False).logits[:, :-1]  # fmt: skip
                log_probs = torch.log_softmax(logits.float() / self.temperature, dim=-1)
                targets = ids[:, -logits_to_keep:]
                keep = mask[:, -logits_to_keep:] != 0  # as TRL's head: 0 where the completion is padding
                logps = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                all_logps.append(logps.masked_fill(~keep, 0.0))
                if compute_entropy:  # with its gradient: TRL's entropy bonus (entropy_coef) trains on it
                    entropy = -(log_probs.exp() * log_probs).sum(-1)
                    all_entropies.append(entropy.masked_fill(~keep, 0.0))
            entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
            return torch.cat(all_logps, dim=0), entropies, None

    return CpuGRPOTrainer


def rewards_callback(path: Path, reward_names: list[str]):
    from transformers import TrainerCallback  # imports torch; only where a model runs

    pass_name = next((n for n in PASS_REWARDS if n in reward_names), None)

    class RewardsLog(TrainerCallback):
        """One JSON line per logging step: each reward's mean, the weighted total, pass rate, length, KL."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, "reward": _num(logs.get("reward"))}
            for name in reward_names:
                row[f"reward_{name}"] = _num(logs.get(f"rewards/{name}/mean"))
            row["pass_rate"] = row.get(f"reward_{pass_name}") if pass_name else None
            row["completion_length"] = _num(logs.get("completions/mean_length"))
            row["kl"] = _num(logs.get("kl"))
            row["loss"] = _num(logs.get("loss"))
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    return RewardsLog()


def _num(value) -> float | None:
    """A JSON-safe number: NaN (no reward this step) becomes null."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def check_out(out: Path, config: RlConfig) -> None:
    """The shared output checks (distill/io.py): no existing output without --resume/--overwrite, and --out is
    never the prompts or the policy's folder, nor inside or around them (--overwrite would delete them)."""

    check_output(
        out,
        inputs=local_paths([config.source, config.model]),
        resume=config.resume,
        overwrite=config.overwrite,
        holds="an RL run",
    )
    if config.resume and not last_checkpoint(out):
        raise DistillError(f"--resume: {out} holds no checkpoint-*/ folder: run without --resume")


def last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint  # imports torch; only where a model runs

    return get_last_checkpoint(str(out)) if out.is_dir() else None


def run_rl(config: RlConfig) -> Path:
    """Train with GRPO; returns the output folder (final model, rewards.jsonl, report.html, config)."""
    import torch  # torch: seconds to import; only where a model runs
    from datasets import Dataset  # ~2 s to import; only for datasets folders and hub ids
    from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch; only where a model runs
    from trl import GRPOTrainer  # imports torch; only where a model trains

    if not config.source:
        raise DistillError("no prompts: pass PROMPTS (a file, folder, dataset or reasoning-gym:TASK)")
    if not config.out:
        raise DistillError("no output folder: pass --out DIR")
    if not config.rewards:
        raise DistillError("no rewards: pass --reward NAME=WEIGHT, e.g. --reward math=1.0")
    out = Path(config.out)
    check_out(out, config)
    if config.overwrite and not config.resume:
        clear_folder(out)
    out.mkdir(parents=True, exist_ok=True)

    use_cpu = not torch.cuda.is_available()
    args = grpo_args(config, out, use_cpu)
    rows = prompt_rows(config)
    model_path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    reward_funcs = [
        make_reward_function(spec, config.max_completion_length, tokenizer.eos_token_id) for spec in config.rewards
    ]
    peft_config = None
    if config.lora:
        from peft import LoraConfig  # imports torch; only for LoRA

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear")

    resolved = asdict(config)
    resolved["model_path"] = model_path
    (out / "config.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    log = out / REWARDS_LOG
    if not config.resume and log.exists():
        log.unlink()
    trainer = (cpu_grpo_trainer_class() if use_cpu else GRPOTrainer)(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[rewards_callback(log, [s.name for s in config.rewards])],
    )
    try:
        trainer.train(resume_from_checkpoint=last_checkpoint(out) if config.resume else None)
    finally:
        for func in reward_funcs:
            func.verifier.close()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    write_report(out)
    return out


def rewards_from_mapping(value) -> list[RewardSpec]:
    """A recipe's `rewards:` {name: weight} or {name: {weight: W, OPTION: V, ...}}, checked like --reward."""
    if not isinstance(value, dict) or not value:
        raise DistillError("rl.rewards must map verifier names to weights, e.g. {math: 1.0, format: 0.2}")
    specs = []
    for name, setting in value.items():
        spec = parse_reward(str(name))
        if isinstance(setting, dict):
            setting = dict(setting)
            spec.weight = float(setting.pop("weight", 1.0))
            spec.options = setting
        elif isinstance(setting, int | float) and not isinstance(setting, bool):
            spec.weight = float(setting)
        else:
            raise DistillError(f"rl.rewards.{name}: give a weight or a mapping with `weight` and options")
        specs.append(spec)
    return specs


def rl_config(values: dict) -> RlConfig:
    """An RlConfig from a recipe section or flags; an unknown key is an error naming the nearest one."""
    # `position` places the section in a `distill run` recipe (pipeline.py reads it); here it means nothing.
    names = [f.name for f in fields(RlConfig)] + ["position"]
    values = dict(values)
    values.pop("position", None)
    for key in values:
        if key not in names:
            raise DistillError(f"unknown rl setting `{key}`{near_hint(key, names)}")
    if "rewards" in values and not (
        isinstance(values["rewards"], list) and all(isinstance(r, RewardSpec) for r in values["rewards"])
    ):
        values["rewards"] = rewards_from_mapping(values["rewards"])
    return RlConfig(**values)
