"""The `distill` command line: thin wrappers that parse flags, build a config and call run_<stage>()."""

import functools
import os
import sys

import click
from click.core import ParameterSource

from distill import __version__
from distill.errors import DistillError


def _fail_cleanly(func):
    """Our errors become one line and exit 1; a traceback only with DISTILL_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DistillError as exc:
            if os.environ.get("DISTILL_DEBUG") == "1":
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished samples are saved; rerun with --resume to complete the rest", err=True)
            sys.exit(130)

    return wrapper


def _key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """KEY=VALUE flags; values are read as YAML so numbers, booleans and lists keep their types."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got `{pair}`", param_hint=flag)
        out[key] = yaml.safe_load(value)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="distill")
def main():
    """distill: generate, filter and distill reasoning traces (DeepSeek-R1 style) into student models."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML with generate settings (a flat mapping or a recipe with a `generate:` section); flags override it.",
)
@click.option(
    "--source", help="Prompts: a .jsonl/.json/.parquet/.csv file, a datasets folder or hub id, or reasoning-gym:TASK."
)
@click.option("--split", help="Split of a datasets source.  [default: train]")
@click.option("--prompt-column", help="Column with the prompt.  [default: problem, prompt, question or instruction]")
@click.option("--answer-column", help="Column with the gold answer.  [default: answer or gold, when present]")
@click.option("--id-column", help="Column with a stable prompt id.  [default: id when present, else a hash]")
@click.option("--domain", help="math, code, science or general.  [default: the domain column, else math]")
@click.option("--system-prompt", help="System prompt.  [default: none, as in R1]")
@click.option(
    "--prompt-template",
    help="User turn with {problem} in it.  [default: R1's boxed instruction "
    "for math/science, the bare prompt otherwise]",
)
@click.option("--num-prompts", type=int, help="Use the first N prompts (reasoning-gym: make N).  [default: all; 100]")
@click.option("--seed", type=int, help="Seed for procedural sources and the engine.  [default: 0]")
@click.option(
    "--source-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Option of the source, e.g. reasoning-gym task settings (max_terms=2). Repeatable.",
)
@click.option("--engine", help="Teacher backend: transformers, vllm or openai.  [default: transformers]")
@click.option(
    "--model",
    help="Teacher: alias (smollm2-135m, deepseek-r1, ...), Hugging Face id or local folder. "
    "[default: the embedded SmolLM2-135M-Instruct]",
)
@click.option("--base-url", help="openai engine: server URL, e.g. http://127.0.0.1:8000/v1.")
@click.option(
    "--api-key-env", help="openai engine: environment variable holding the API key.  [default: OPENAI_API_KEY]"
)
@click.option("--max-concurrency", type=int, help="openai engine: requests in flight.  [default: 64]")
@click.option("--request-timeout", type=float, help="openai engine: seconds per request.  [default: 600]")
@click.option("--max-retries", type=int, help="openai engine: retries on 429/5xx/connection errors.  [default: 6]")
@click.option("--tensor-parallel-size", "-tp", type=int, help="vllm engine: GPUs per model replica (tensor).")
@click.option("--pipeline-parallel-size", "-pp", type=int, help="vllm engine: pipeline stages (across nodes).")
@click.option("--data-parallel-size", "-dp", type=int, help="vllm engine: data-parallel replicas.")
@click.option(
    "--distributed-executor-backend", type=click.Choice(["mp", "ray"]), help="vllm engine: ray for multi-node."
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    help="Weights dtype.  [default: auto = bf16 on GPU, fp32 on CPU]",
)
@click.option("--max-model-len", type=int, help="vllm engine: context length.")
@click.option(
    "--gpu-memory-utilization",
    type=float,
    help="vllm engine: memory fraction (RAM on CPU). [default: 0.9 GPU, 0.4 CPU]",
)
@click.option("--engine-arg", multiple=True, metavar="KEY=VALUE", help="vllm engine: any other vllm.LLM argument.")
@click.option("--batch-size", type=int, help="transformers engine: prompts per batch.  [default: 8]")
@click.option("--device", help="transformers engine: cpu, cuda, cuda:1 ...  [default: cuda if available]")
@click.option("-n", "--num-samples", type=int, help="Samples per prompt.  [default: 1]")
@click.option("--temperature", type=float, help="[default: 0.6]")
@click.option("--top-p", type=float, help="[default: 0.95]")
@click.option("--max-tokens", type=int, help="New tokens per sample.  [default: 32768]")
@click.option("--stop", multiple=True, help="Stop string. Repeatable.")
@click.option("--prefill-think/--no-prefill-think", default=None, help="Start the assistant turn with <think>\\n.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, default=None, help="Complete the missing samples of an existing output.")
@click.option("--overwrite", is_flag=True, default=None, help="Delete an existing output first.")
@click.option("--retry-errors", is_flag=True, default=None, help="With --resume: regenerate rows that failed.")
@click.option("--rows-per-file", type=int, help="Rows per Parquet file.  [default: 1000]")
@click.option("--flush-seconds", type=float, help="Write finished rows at least this often.  [default: 60]")
@click.option("--num-shards", type=int, help="Hosts sharing this run (each writes its own files).  [default: 1]")
@click.option("--shard-index", type=int, help="This host's shard, 0..num-shards-1.  [default: 0]")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar.")
@click.pass_context
@_fail_cleanly
def generate(ctx, config_file, source_option, engine_arg, **flags):
    """Sample chain-of-thought traces from a teacher into <out>/data/*.parquet (resumable)."""
    from distill.config import GenerateConfig, build_config, load_yaml
    from distill.generate.run import run_generate

    recipe = None
    if config_file:
        recipe = load_yaml(config_file)
        recipe = recipe.get("generate", recipe)
    overrides = {k: v for k, v in flags.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    for key in ("stop",):  # multiple options are never None; keep them only when given
        if key in overrides and not overrides[key]:
            del overrides[key]
        elif key in overrides:
            overrides[key] = list(overrides[key])
    if source_option:
        overrides["source_options"] = _key_values(source_option, "--source-option")
    if engine_arg:
        overrides["engine_args"] = _key_values(engine_arg, "--engine-arg")
    config = build_config(GenerateConfig, recipe, overrides, where=config_file or "the recipe")
    stats = run_generate(config)
    click.echo(
        f"wrote {stats['samples']} samples for {stats['prompts']} prompts to {config.out}/data "
        f"({stats['errors']} errors, {stats['completion_tokens']} completion tokens, "
        f"{stats['tokens_per_second']} tok/s this run)"
    )


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@_fail_cleanly
def stats(folder):
    """Validate a generate output: counts, duplicate ids, unreadable files; print totals."""
    from distill.generate.stats import check_folder

    report, problems = check_folder(folder)
    for key, value in report.items():
        click.echo(f"{key:>20}: {value}")
    if problems:
        raise DistillError(f"{folder} has problems: " + "; ".join(problems))
