"""`distill train`: the click command. distill/cli.py adds it to the group with `main.add_command(train_command)`."""

import shlex
import subprocess

import click

from distill.cli_utils import _fail_cleanly, _key_values, prompt_source_options, section_and_flags
from distill.config import TrainConfig
from distill.errors import DistillError
from distill.settings import build_config
from distill.train.launch import inside_launch, launch_command
from distill.train.opd import run_opd
from distill.train.sft import run_train


class _KeepArgs(click.Command):
    """Keeps the raw arguments in ctx.meta: `--accelerate-config` relaunches the command with them."""

    def parse_args(self, ctx, args):
        ctx.meta["distill_train_argv"] = list(args)
        return super().parse_args(ctx, args)


# The prompt-source flags (generate's), which --method opd gathers into TrainConfig.prompts
PROMPT_FLAGS = {
    **{key: key for key in ("source", "split", "prompt_column", "answer_column", "id_column", "domain")},
    **{key: key for key in ("system_prompt", "prompt_template", "num_prompts")},
    "prompt_seed": "seed",
}


@click.command("train", cls=_KeepArgs)
@click.argument("data", nargs=-1, type=click.Path())
@click.option(
    "--method",
    type=click.Choice(["sft", "kd", "opd"]),
    help="sft: on the teacher's text; kd: on its stored top-k log-probs (generate --logprobs, same tokenizer); opd: "
    "on-policy, the student samples and the teacher scores every token.  [default: sft]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML with train settings (flat, or a recipe with a `train:` section such as recipes/students/*.yaml).",
)
@click.option(
    "--student", help="Model to fine-tune: alias, Hugging Face id or folder.  [default: the embedded SmolLM2-135M]"
)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (model or adapter, tokenizer, metrics).")
@click.option(
    "--chat-template",
    help="think-preserving (a shipped template for the tokenizer's tokens), chatml, llama3, deepseek-r1 or a "
    ".jinja path.  [default: the student's own, if it keeps <think>]",
)
@click.option(
    "--assistant-only-loss/--no-assistant-only-loss",
    default=None,
    help="Loss on assistant tokens only.  [default: on]",
)
@click.option("--lora", is_flag=True, default=None, help="Train a LoRA adapter (peft) instead of all weights.")
@click.option("--qlora", is_flag=True, default=None, help="LoRA on a 4-bit base (bitsandbytes, CUDA GPU only).")
@click.option("--lora-r", type=int, help="LoRA rank.  [default: 16]")
@click.option("--lora-alpha", type=int, help="LoRA alpha.  [default: 32]")
@click.option("--lora-dropout", type=float, help="[default: 0.05]")
@click.option("--lora-target-modules", help="Comma-separated module names, or all-linear.  [default: all-linear]")
@click.option("--packing/--no-packing", default=None, help="Pack sequences (best-fit, padding-free).  [default: off]")
@click.option(
    "--group-by-length/--no-group-by-length",
    default=None,
    help="Batch rows of similar length together (less padding; not with --packing).  [default: on]",
)
@click.option("--max-length", type=int, help="Tokens per sequence (per pack with --packing).  [default: 32768]")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, help="[default: 4e-5; 2e-4 with --lora]")
@click.option("--lr-scheduler-type", help="A transformers scheduler.  [default: cosine_with_min_lr (10% floor)]")
@click.option("--warmup-ratio", type=float, help="Share of the steps spent warming up.  [default: 0.03]")
@click.option("--epochs", type=float, help="[default: 2, as R1's distilled models]")
@click.option("--max-steps", type=int, help="Stop after N optimizer steps (overrides --epochs).")
@click.option("--batch-size", type=int, help="Sequences per device per step.  [default: 1]")
@click.option("--gradient-accumulation-steps", type=int, help="[default: 1]")
@click.option(
    "--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="[default: on for GPU, off on CPU]"
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    help="[default: auto = bf16 on GPU, fp32 on CPU]",
)
@click.option(
    "--attn-implementation",
    help="sdpa, eager, flash_attention_2...  [default: flash_attention_2 if installed, else sdpa]",
)
@click.option("--seed", type=int, help="[default: 42]")
@click.option("--resume", is_flag=True, default=None, help="Continue from the last checkpoint-* in --out.")
@click.option("--overwrite", is_flag=True, default=None, help="Delete an existing --out first.")
@click.option(
    "--trl",
    "trl_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other TRL SFTConfig argument, e.g. save_steps=200 or max_grad_norm=0.2. Repeatable.",
)
@click.option(
    "--accelerate-config",
    help="Relaunch with `accelerate launch`: zero2, zero3, fsdp, ddp (recipes/accelerate) or a YAML path.",
)
@click.option("--num-processes", type=int, help="accelerate: processes over all machines.  [default: 8 per machine]")
@click.option("--num-machines", type=int, help="accelerate: machines in the job.")
@click.option("--machine-rank", type=int, help="accelerate: this machine's rank (0 on the main one).")
@click.option("--main-process-ip", help="accelerate: address of machine 0.")
@click.option("--main-process-port", type=int, help="accelerate: port on machine 0.")
@click.option(
    "--ce-weight",
    type=float,
    help="kd: share of cross-entropy on the teacher's tokens in the loss; the rest is forward KL to its top-k.  "
    "[default: 0.5]",
)
@click.option(
    "--teacher",
    help="opd: the teacher, as generate's --model: alias, folder or Hugging Face id, run here; with --base-url, the "
    "served model's name.",
)
@click.option("--base-url", help="opd: a vLLM server of the teacher, e.g. http://127.0.0.1:8000/v1 (`vllm serve`).")
@click.option("--api-key-env", help="opd: environment variable with the server's API key.  [default: OPENAI_API_KEY]")
@prompt_source_options(
    "opd: prompts, as generate's --source: a .jsonl/.json/.parquet/.csv file, a datasets folder or hub id, or "
    "reasoning-gym:TASK.",
    seed_flag="--prompt-seed",
)
@click.option("--max-completion-length", type=int, help="opd: tokens the student samples per prompt.  [default: 256]")
@click.option("--temperature", type=float, help="opd: the student's sampling temperature.  [default: 1.0]")
@click.option("--beta", type=float, help="opd: 1 reverse KL, 0 forward KL, between: generalized JSD.  [default: 1]")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bars.")
@click.pass_context
@_fail_cleanly
def train_command(ctx, data, config_file, trl_args, source_option, base_url, api_key_env, **flags):
    """Train a student: SFT on `distill filter` output (TRL; LoRA/QLoRA; many GPUs via accelerate), logit
    distillation on stored teacher log-probs (--method kd), or on-policy distillation from a teacher (--method opd)."""
    prompt_flags = {PROMPT_FLAGS[k]: flags.pop(k) for k in list(PROMPT_FLAGS)}
    recipe, overrides = section_and_flags(ctx, config_file, "train", flags)
    typed = {k: v for k, v in prompt_flags.items() if v is not None}
    if source_option:
        typed["source_options"] = _key_values(source_option, "--source-option")
    if typed:  # --source and friends add to (and beat) the recipe's `prompts:`
        overrides["prompts"] = {**((recipe or {}).get("prompts") or {}), **typed}
    if base_url or api_key_env:  # a served teacher: generate's engine keys
        teacher = overrides.get("teacher") or (recipe or {}).get("teacher")
        served = dict(teacher) if isinstance(teacher, dict) else {"model": teacher}
        served.update(engine="openai", **({"base_url": base_url} if base_url else {}))
        if api_key_env:
            served["api_key_env"] = api_key_env
        overrides["teacher"] = served
    if data:
        overrides["data"] = list(data)
    if trl_args:  # --trl adds to (and beats) the recipe's `trl:` mapping rather than replacing it
        overrides["trl"] = {**((recipe or {}).get("trl") or {}), **_key_values(trl_args, "--trl")}
    config = build_config(TrainConfig, recipe, overrides, where=config_file or "the recipe")

    if config.accelerate_config and not inside_launch():
        config.validate()
        command = launch_command(config, ctx.meta.get("distill_train_argv", []))
        click.echo(f"launching: {shlex.join(command)}", err=True)
        try:
            returncode = subprocess.run(command).returncode
        except FileNotFoundError:
            raise DistillError(
                "`accelerate` is not on PATH: pip install accelerate (and deepspeed for zero2/zero3)"
            ) from None
        ctx.exit(returncode)

    if config.method == "opd":
        metrics = run_opd(config)
        click.echo(
            f"trained {metrics['global_step']} on-policy steps on {metrics['prompts']} prompts "
            f"({metrics['seconds_per_step']} s/step, last reverse KL {metrics['final_reverse_kl']}): "
            f"{'LoRA adapter' if config.lora else 'model'} in {config.out}"
        )
        return

    _, metrics = run_train(config)
    parts = [] if metrics["final_loss"] is None else [f"final loss {metrics['final_loss']:.4f}"]
    per_step = metrics["seconds_per_step"]
    parts.append("no new steps" if per_step is None else f"{per_step:.2f} s/step")
    click.echo(
        f"trained {metrics['global_step']} steps on {metrics['train_rows']} rows ({', '.join(parts)}): "
        f"{'LoRA adapter' if config.lora else 'model'} in {config.out}"
    )
