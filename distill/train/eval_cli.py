"""`distill eval`: the click command. It parses flags, builds an EvalConfig and calls run_eval()."""

import click

from distill.cli_utils import (
    _fail_cleanly,
    _verifier_options,
    engine_options,
    prompt_source_options,
    sampling_options,
    section_and_flags,
    teacher_flags,
)
from distill.config import EvalConfig
from distill.settings import build_config
from distill.train.eval import format_table, run_eval

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
@engine_options()
@sampling_options(("-n", "--samples"), "k: samples per prompt.", "EvalConfig")
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
@click.option(
    "--exclude",
    multiple=True,
    type=click.Path(exists=True),
    help="Training data (a generate, filter or mix output, or a file with a `problem` column) whose problems are left "
    "out of the benchmark: the first --num-prompts that none holds are scored. Repeatable.",
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

    recipe, overrides = section_and_flags(ctx, config_file, "eval", flags)
    if models:
        overrides["models"] = list(models)
    if labels:
        overrides["labels"] = list(labels)
    if "exclude" in overrides:
        overrides["exclude"] = list(overrides["exclude"])
    teacher_flags(overrides, source_option, engine_arg)
    config = build_config(EvalConfig, recipe, overrides, where=config_file or "the recipe")
    _verifier_options(options, config.verifiers)
    summary = run_eval(config)
    click.echo(format_table(summary))
    click.echo(f"summary: {config.out}/summary.json (per-sample verdicts: {config.out}/<model>/samples.parquet)")
