"""`distill rl`: the click command. distill/cli.py adds it to the group with `main.add_command(rl_command)`."""

import click

from distill.cli_utils import _fail_cleanly, _key_values, prompt_source_options
from distill.recipe import load_yaml
from distill.rl.grpo import rl_config, run_rl
from distill.rl.rewards import parse_option, parse_reward


@click.command("rl")
@click.argument("prompts", required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML: flat, or a recipe's `rl:`.")
@click.option("--model", help="Policy to train: alias, Hugging Face id or folder.  [default: embedded SmolLM2-135M]")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (model, rewards.jsonl, report.html).")
@prompt_source_options(
    "Prompts, instead of PROMPTS: a .jsonl/.json/.parquet/.csv file, a datasets folder or hub id, or "
    "reasoning-gym:TASK."
)
@click.option(
    "--reward",
    multiple=True,
    metavar="NAME=WEIGHT",
    help="A verifier as reward: math, format, language, code, length, repetition. Repeatable.  "
    "[default: math=1.0 format=0.2]",
)
@click.option(
    "--reward-option", multiple=True, metavar="NAME.KEY=VALUE", help="e.g. math.extraction=lenient. Repeatable."
)
@click.option("-G", "--num-generations", type=int, help="Group size: completions per prompt.  [default: 8]")
@click.option("--beta", type=float, help="KL coefficient (R1: 0.001; TRL's default is 0).  [default: 0.001]")
@click.option("--epsilon", type=float, help="Clip range.  [default: 0.2]")
@click.option("--epsilon-high", type=float, help="Upper clip (DAPO clip-higher, e.g. 0.28).  [default: epsilon]")
@click.option("--loss-type", help="grpo, dr_grpo, dapo or bnpo.  [default: grpo]")
@click.option("--scale-rewards", help="group (GRPO), batch or none (Dr. GRPO).  [default: group]")
@click.option("--max-completion-length", type=int, help="Tokens per completion.  [default: 256]")
@click.option("--temperature", type=float, help="Sampling temperature.  [default: 1.0]")
@click.option("--learning-rate", "--lr", type=float, help="[default: 1e-6]")
@click.option("--max-steps", type=int, help="Optimizer steps.  [default: 100]")
@click.option("--batch-size", type=int, help="Completions per device per step.  [default: num-generations]")
@click.option("--save-steps", type=int, help="Checkpoint every N steps.  [default: 50]")
@click.option("--lora/--no-lora", default=None, help="Train LoRA adapters only.")
@click.option("--bf16/--no-bf16", default=None, help="bf16 (GPU). CPU always trains in fp32.")
@click.option("--vllm", type=click.Choice(["colocate", "server"]), help="Generate with vLLM (GPU).")
@click.option("--trl", multiple=True, metavar="KEY=VALUE", help="Any other GRPOConfig field. Repeatable.")
@click.option("--resume", is_flag=True, default=None, help="Continue from the last checkpoint in --out.")
@click.option("--overwrite", is_flag=True, default=None, help="Delete an existing --out first.")
@_fail_cleanly
def rl_command(prompts, config_file, reward, reward_option, source_option, trl, vllm, batch_size, **flags):
    """GRPO (R1-Zero style) on PROMPTS with the filter's verifiers as rewards.

    PROMPTS is any generate source: a file, folder, hub dataset or reasoning-gym:TASK.
    """

    values = {}
    if config_file:
        section = load_yaml(config_file)
        values.update(section.get("rl", section))
    if prompts and flags.get("source"):
        raise click.UsageError("give the prompts once: PROMPTS or --source")
    values.update({k: v for k, v in flags.items() if v is not None})
    if prompts:
        values["source"] = prompts
    if batch_size is not None:
        values["per_device_train_batch_size"] = batch_size
    if vllm:
        values["use_vllm"], values["vllm_mode"] = True, vllm
    if source_option:
        values["source_options"] = {
            **values.get("source_options", {}),
            **_key_values(source_option, "--source-option"),
        }
    if trl:
        values["trl"] = {**values.get("trl", {}), **_key_values(trl, "--trl")}
    config = rl_config(values)
    if reward:
        config.rewards = [parse_reward(r) for r in reward]
    for text in reward_option:
        name, key, value = parse_option(text)
        spec = next((s for s in config.rewards if s.name == name), None)
        if spec is None:
            raise click.BadParameter(
                f"no --reward {name}: add it before giving it options", param_hint="--reward-option"
            )
        spec.options[key] = value
    out = run_rl(config)
    click.echo(str(out))
