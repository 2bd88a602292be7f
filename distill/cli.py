"""The `distill` command line: thin wrappers that parse flags, build a config and call run_<stage>()."""

import json

import click

from distill import __version__
from distill.cli_utils import (
    _default,
    _fail_cleanly,
    _verifier_options,
    engine_options,
    prompt_source_options,
    sampling_options,
    section_and_flags,
    teacher_flags,
)
from distill.config import FilterConfig, GenerateConfig
from distill.engines.cache import ResponseCache
from distill.errors import DistillError
from distill.filter.dataset.inputs import parse_map
from distill.filter.dataset.mix import mix
from distill.filter.report import write_report
from distill.filter.run import run_filter
from distill.generate.run import cancel_batches, run_generate
from distill.generate.stats import check_folder
from distill.hub_cli import publish_group
from distill.pipeline import describe, plan, run_steps, select
from distill.recipe import load_recipe
from distill.rl.cli import rl_command
from distill.settings import build_config
from distill.train.cli import train_command
from distill.train.eval import format_table
from distill.train.eval_cli import eval_command


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
@prompt_source_options(
    "Prompts: a .jsonl/.json/.parquet/.csv file, a datasets folder or hub id, or reasoning-gym:TASK."
)
@click.option(
    "--model",
    help="Teacher: alias (smollm2-135m, deepseek-r1, ...), Hugging Face id or local folder. "
    "[default: the embedded SmolLM2-135M-Instruct]",
)
@engine_options()
@sampling_options(("-n", "--num-samples"), "Samples per prompt.", "GenerateConfig")
@click.option(
    "--no-think",
    is_flag=True,
    default=None,
    help="Answer without chain of thought: prefill an empty think block (R1's trivial general queries).",
)
@click.option(
    "--logprobs",
    type=int,
    metavar="K",
    help="Store the teacher's top-K token ids and log-probs at every completion token (for `distill train "
    "--method kd`).  [default: 0, off]",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, default=None, help="Complete the missing samples of an existing output.")
@click.option("--overwrite", is_flag=True, default=None, help="Delete an existing output first.")
@click.option("--retry-errors", is_flag=True, default=None, help="With --resume: regenerate rows that failed.")
@click.option("--rows-per-file", type=int, help="Rows per Parquet file.  [default: 1000]")
@click.option("--flush-seconds", type=float, help="Write finished rows at least this often.  [default: 60]")
@click.option("--num-shards", type=int, help="Hosts sharing this run (each writes its own files).  [default: 1]")
@click.option("--shard-index", type=int, help="This host's shard, 0..num-shards-1.  [default: 0]")
@click.option(
    "--budget",
    type=float,
    help="openai engines: USD this output may cost (at the --price-* flags); the run stops before it would pass it, "
    "requests in flight counted, and resumes with a larger one.",
)
@click.option("--max-total-tokens", type=int, help="openai engines: the same limit in prompt + completion tokens.")
@click.option(
    "--stop-timeout",
    type=float,
    help="Seconds a first Ctrl-C (or SIGTERM) waits for requests in flight; a second one quits at once.  "
    f"[default: {_default('stop_timeout', 'GenerateConfig')}]",
)
@click.option(
    "--cancel", is_flag=True, default=None, help="openai-batch: cancel this output's running batches, and stop."
)
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar.")
@click.pass_context
@_fail_cleanly
def generate(ctx, config_file, source_option, engine_arg, **flags):
    """Sample chain-of-thought traces from a teacher into <out>/data/*.parquet (resumable)."""
    recipe, overrides = section_and_flags(ctx, config_file, "generate", flags)
    teacher_flags(overrides, source_option, engine_arg)
    config = build_config(GenerateConfig, recipe, overrides, where=config_file or "the recipe")
    if config.cancel:
        cancelled = cancel_batches(config)
        click.echo(f"cancelled {len(cancelled)} batches{': ' + ', '.join(cancelled) if cancelled else ''}")
        return
    stats = run_generate(config)
    click.echo(generate_summary(stats, config.out))


def generate_summary(stats: dict, out: str) -> str:
    """The line a finished generate prints: rows, errors, tokens, and what this run paid."""
    tokens = f"{stats['completion_tokens']} completion tokens"
    if stats.get("reasoning_tokens"):
        tokens += f" ({stats['reasoning_tokens']} reasoning)"
    paid = f", ${stats['cost_usd_this_run']:.4f} this run" if stats.get("cost_usd_this_run") is not None else ""
    cache = stats.get("cache")
    cached = f", {cache['hits']} from the cache" if isinstance(cache, dict) and cache["hits"] else ""
    return (
        f"wrote {stats['samples']} samples for {stats['prompts']} prompts to {out}/data ({stats['errors']} errors, "
        f"{tokens}, {stats['tokens_per_second']} tok/s this run{paid}{cached})"
    )


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@_fail_cleanly
def stats(folder):
    """Validate a generate output: counts, duplicate ids, unreadable files; print totals."""
    report, problems = check_folder(folder)
    for key, value in report.items():
        click.echo(f"{key:>20}: {value}")
    if problems:
        raise DistillError(f"{folder} has problems: " + "; ".join(problems))


@main.group("cache")
def cache_group():
    """The response cache: answers a teacher gave, reused by any later run that asks the same ($DISTILL_CACHE)."""


@cache_group.command("info")
@_fail_cleanly
def cache_info():
    """Where the response cache is, how many answers it holds and their size."""
    with ResponseCache() as cache:
        count, size = cache.size()
        click.echo(f"{cache.path}: {count} responses, {size / 2**20:.1f} MiB (bound {cache.max_bytes / 2**30:g} GiB)")


@cache_group.command("prune")
@click.option("--max-gb", type=float, help="Keep at most this many GiB, the most recently used.")
@click.option("--older-than", type=float, metavar="DAYS", help="Drop responses unused for this many days.")
@click.option("--all", "everything", is_flag=True, help="Drop every response.")
@_fail_cleanly
def cache_prune(max_gb, older_than, everything):
    """Drop responses from the cache (then give the space back to the disk)."""
    if max_gb is None and older_than is None and not everything:
        raise DistillError("say what to drop: --max-gb N, --older-than DAYS or --all")
    with ResponseCache() as cache:
        if everything:
            dropped = cache.clear()
        else:
            dropped = cache.prune(None if max_gb is None else int(max_gb * 2**30), older_than)
        cache.vacuum()
        count, size = cache.size()
    click.echo(f"dropped {dropped} responses; {count} left, {size / 2**20:.1f} MiB")


@main.command("filter")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML with filter settings (a flat mapping or a recipe with a `filter:` section).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--verifiers",
    help="Comma-separated, run in this order: math, code, format, language, repetition, "
    "length, judge.  [default: math,format]",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="VERIFIER.KEY=VALUE",
    help="A verifier option, e.g. math.extraction=lenient or judge.threshold=8. Repeatable.",
)
@click.option("--keep-unverified", is_flag=True, default=None, help="Keep rows a verifier could not check.")
@click.option("--select", help="all: every passing sample; best: the highest-scored per prompt.  [default: all]")
@click.option("--max-per-prompt", type=int, help="Keep at most K passing samples per prompt.")
@click.option("--dedupe", help="Drop duplicate prompts: none, exact or near (MinHash LSH).  [default: none]")
@click.option("--dedupe-threshold", type=float, help="Jaccard similarity for near duplicates.  [default: 0.8]")
@click.option(
    "--decontaminate",
    multiple=True,
    type=click.Path(exists=True),
    help="Benchmark file; prompts sharing a word n-gram with it are dropped. Repeatable.",
)
@click.option("--decontam-ngram", type=int, help="n of the overlap check.  [default: 8]")
@click.option(
    "--decontam-overlap",
    type=float,
    help="Share of the shorter text two problems sharing an n-gram must have in common to count (0: any "
    "shared n-gram).  [default: 0.5]",
)
@click.option(
    "--input-format",
    help="Layout of the inputs: auto, distill, messages, sharegpt, openr1 or columns.  [default: auto]",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Which column holds a field: problem, completion (or reasoning + answer), gold, tests, domain, id. Mapping "
    "problem/completion/reasoning/answer reads the file as columns; gold/tests/domain/id work with every layout. "
    "Plain files with conventional names (question, response, answer, ...) need none.",
)
@click.option(
    "--pass-rate", help="MIN:MAX: keep only prompts whose share of passing samples lies inside, e.g. 0.2:0.8."
)
@click.option(
    "--consensus", help="majority: prompts without gold get their samples' majority answer as gold.  [default: none]"
)
@click.option("--min-agreement", type=float, help="Share of samples that must agree for --consensus.  [default: 0.5]")
@click.option("--batch-size", type=int, help="Rows per verification batch.  [default: 256]")
@click.option("--rows-per-file", type=int, help="Rows per output Parquet file.  [default: 10000]")
@click.option("--resume", is_flag=True, default=None, help="Finish an interrupted run into the same folder.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing output folder.")
@click.option(
    "--backend",
    help="local: a process pool on this machine; ray: Ray Data stages across a cluster (pip install "
    "'distill[ray]'), the same output.  [default: local]",
)
@click.option("--ray-address", help="With --backend ray: auto, HOST:PORT or ray://HOST:PORT.  [default: a local Ray]")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar.")
@click.pass_context
@_fail_cleanly
def filter_command(ctx, inputs, config_file, options, maps, **flags):
    """Keep the good traces of generate outputs or anyone's traces (Parquet, JSONL, JSON, CSV, datasets folders):
    verifiers, dedupe, decontamination -> SFT-ready Parquet."""

    recipe, overrides = section_and_flags(ctx, config_file, "filter", flags)
    if inputs:
        overrides["inputs"] = list(inputs)
    if "decontaminate" in overrides:
        overrides["decontaminate"] = list(overrides["decontaminate"])
    if maps:
        overrides["map"] = parse_map(list(maps))
    config = build_config(FilterConfig, recipe, overrides, where=config_file or "the recipe")
    _verifier_options(options, config.verifiers)
    stats = run_filter(config)
    click.echo(_filter_table(stats))
    click.echo(
        f"kept {stats['kept']} of {stats['total']} rows: {config.out}/data (rejected: {config.out}/rejected, "
        f"stats: {config.out}/stats.json)"
    )


def _filter_table(stats: dict) -> str:
    lines = [f"{'verifier':<12} {'checked':>8} {'passed':>8} {'failed':>8} {'unverified':>10} {'pass rate':>9}"]
    for name, v in stats["verifiers"].items():
        rate = "-" if v["pass_rate"] is None else f"{v['pass_rate']:.1%}"
        lines.append(f"{name:<12} {v['checked']:>8} {v['passed']:>8} {v['failed']:>8} {v['unverified']:>10} {rate:>9}")
    drops = {k[len("dropped_") :]: n for k, n in stats.items() if k.startswith("dropped_")}
    lines.append("dropped: " + (", ".join(f"{reason} {n}" for reason, n in drops.items()) or "none"))
    if stats.get("unchecked", {}).get("rows"):
        lines.append(f"unchecked (no answer check applies): {stats['unchecked']['rows']} rows")
    lines.append(f"prompts without a kept sample: {stats['prompts_without_kept_sample']} of {stats['prompts']}")
    return "\n".join(lines)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@_fail_cleanly
def report(folder):
    """Write FOLDER/report.html for a filter output: pass rates, length histograms, judge scores, samples."""
    click.echo(str(write_report(folder)))


@main.command("mix")
@click.argument("inputs", nargs=-1, required=True, metavar="FOLDER:WEIGHT...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--total", type=int, help="Rows in the mix; needed when weights are ratios (e.g. 800000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and shuffling seed.")
@click.option("--rows-per-file", type=int, default=10000, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing mix.")
@_fail_cleanly
def mix_command(inputs, out, total, seed, rows_per_file, overwrite):
    """Mix filtered folders by counts or ratios: `reasoning:600000 general:200000`, or `r:0.75 g:0.25 --total N`."""
    pairs = []
    for item in inputs:
        folder, sep, weight = item.rpartition(":")
        if not sep or not folder:
            raise DistillError(f"expected FOLDER:WEIGHT, got `{item}` (e.g. filtered-math:600000 or general:0.25)")
        try:
            value = int(weight) if weight.isdigit() else float(weight)
        except ValueError:
            raise DistillError(f"weight `{weight}` of {folder} is neither a count nor a ratio") from None
        pairs.append((folder, value))
    stats = mix(pairs, out, total=total, seed=seed, overwrite=overwrite, rows_per_file=rows_per_file)
    click.echo(json.dumps(stats, indent=2))
    click.echo(f"wrote the mix to {out}/data")


main.add_command(train_command)
main.add_command(eval_command)
main.add_command(rl_command)
main.add_command(publish_group)


@main.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--from", "start", help="Start at this stage (rl, generate, filter, mix, train, eval, publish).")
@click.option("--until", help="Stop after this stage.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a recipe value, e.g. train.max_steps=5 or generate.math.num_prompts=4. Repeatable.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Write the outputs here instead of the recipe's `out`.")
@click.option("--dry-run", is_flag=True, help="Print what would run, and stop.")
@_fail_cleanly
def run(recipe, start, until, sets, out, dry_run):
    """Run the pipeline of a YAML recipe: complete stages are skipped, interrupted ones resumed.

    Relative input paths in the recipe (prompt files, data, benchmarks, templates) are read from the recipe's
    folder; outputs go under `out`, relative to the working directory."""
    steps = plan(load_recipe(recipe, sets, out), recipe)
    chosen = select(steps, start, until)
    click.echo(describe(steps, chosen))
    if dry_run:
        return
    run_steps(steps, chosen, lambda line: click.echo(line, err=True))
    click.echo("\noutputs:")
    for step in steps:
        extra = "  (report.html)" if (step.out / "report.html").exists() else ""
        click.echo(f"  {step.label:<18} {step.out}{extra}")
    for step in steps:
        if step.stage == "eval" and (step.out / "summary.json").exists():
            click.echo("\n" + format_table(json.loads((step.out / "summary.json").read_text(encoding="utf-8"))))
