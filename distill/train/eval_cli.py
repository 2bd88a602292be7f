"""`distill eval`: the click command. It parses flags, builds an EvalConfig and calls run_eval()."""

import click

from distill.cli_utils import _fail_cleanly, _key_values, _verifier_options, prompt_source_options, section_and_flags

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.command("eval", context_settings=CONTEXT)
@click.argument("models", nargs=-1)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML with eval settings (a flat mapping or a recipe with an `eval:` section); flags override it.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Name of a model in the table and summary; repeat once per model, in the same order.  [default: MODEL]",
)
@prompt_source_options(
    "Benchmark: a .jsonl/.json/.parquet/.csv file, a datasets folder or hub id, or reasoning-gym:TASK."
)
@click.option("--engine", help="transformers, vllm or openai.  [default: transformers]")
@click.option("--base-url", help="openai engine: server URL; MODEL is then the served model name.")
@click.option(
    "--api-key-env", help="openai engine: environment variable holding the API key.  [default: OPENAI_API_KEY]"
)
@click.option("--max-concurrency", type=int, help="openai engine: requests in flight.  [default: 64]")
@click.option("--tensor-parallel-size", "-tp", type=int, help="vllm engine: GPUs per model replica.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    help="[default: bf16 on GPU, fp32 on CPU]",
)
@click.option("--max-model-len", type=int, help="vllm engine: context length.")
@click.option(
    "--gpu-memory-utilization", type=float, help="vllm engine: memory fraction.  [default: 0.9 GPU, 0.4 CPU]"
)
@click.option("--engine-arg", multiple=True, metavar="KEY=VALUE", help="vllm engine: any other vllm.LLM argument.")
@click.option("--batch-size", type=int, help="transformers engine: prompts per batch.  [default: 8]")
@click.option("--device", help="transformers engine: cpu, cuda, cuda:1 ...  [default: cuda if available]")
@click.option("-n", "--samples", "num_samples", type=int, help="k: samples per prompt.  [default: 4]")
@click.option("--temperature", type=float, help="[default: 0.6]")
@click.option("--top-p", type=float, help="[default: 0.95]")
@click.option("--max-tokens", type=int, help="New tokens per sample.  [default: 32768]")
@click.option("--prefill-think/--no-prefill-think", default=None, help="Start the assistant turn with <think>\\n.")
@click.option(
    "--verifiers", help="Comma-separated correctness checks.  [default: math (math, science) and code (code)]"
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="VERIFIER.KEY=VALUE",
    help="A verifier option, e.g. math.extraction=lenient for weak models. Repeatable.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, default=None, help="Complete the missing samples of an existing evaluation.")
@click.option("--overwrite", is_flag=True, default=None, help="Delete an existing evaluation first.")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar.")
@click.pass_context
@_fail_cleanly
def eval_command(ctx, models, config_file, labels, source_option, engine_arg, options, **flags):
    """pass@1 (mean of k samples, ± standard error) and pass@k of MODELs on a benchmark, side by side.

    MODEL is an alias, a Hugging Face id, a local folder or a LoRA adapter folder (merged into its base for
    the run); none means the embedded SmolLM2. Samples are verified as `distill filter` verifies them.
    """
    from distill.config import build_config
    from distill.train.eval import EvalConfig, format_table, run_eval

    recipe, overrides = section_and_flags(ctx, config_file, "eval", flags)
    if models:
        overrides["models"] = list(models)
    if labels:
        overrides["labels"] = list(labels)
    if source_option:
        overrides["source_options"] = _key_values(source_option, "--source-option")
    if engine_arg:
        overrides["engine_args"] = _key_values(engine_arg, "--engine-arg")
    config = build_config(EvalConfig, recipe, overrides, where=config_file or "the recipe")
    _verifier_options(options, config.verifiers)
    summary = run_eval(config)
    click.echo(format_table(summary))
    click.echo(f"summary: {config.out}/summary.json (per-sample verdicts: {config.out}/<model>/samples.parquet)")
