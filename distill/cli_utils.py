"""Helpers shared by the command modules: one-line errors, KEY=VALUE flags."""

import dataclasses
import functools
import os
import re
import sys

import click
import yaml
from click.core import ParameterSource

import distill.config
from distill.errors import DistillError, shown
from distill.recipe import load_yaml, yaml_value
from distill.secrets import scrub


def _fail_cleanly(func):
    """Our errors become one line and exit 1; a traceback only with DISTILL_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DistillError as exc:
            if os.environ.get("DISTILL_DEBUG") == "1":
                raise
            raise click.ClickException(clip(scrub(str(exc)))) from None  # no credentials in a URL or token
        except OSError as exc:  # a path the system refuses (too long, no permission, a full disk): one line too
            if os.environ.get("DISTILL_DEBUG") == "1" or exc.strerror is None:
                raise
            where = f" {clip(scrub(str(exc.filename)))}" if exc.filename is not None else ""
            raise click.ClickException(f"cannot use{where}: {exc.strerror} (DISTILL_DEBUG=1 shows where)") from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished samples are saved; rerun with --resume to complete the rest", err=True)
            sys.exit(130)

    return wrapper


def clip(message: str, limit: int = 200) -> str:
    """An error message with every run of more than `limit` characters without a space cut short: a message may
    quote a value from a user's file, and a 10 MB value must not come back whole (on one line, whatever it holds).
    """
    return re.sub(rf"\S{{{limit + 1},}}", lambda m: shown(m.group(), limit), message.replace("\n", " "))


def _key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """KEY=VALUE flags; values are read as YAML so numbers, booleans and lists keep their types."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got `{pair}`", param_hint=flag)
        try:
            out[key] = yaml_value(value, flag)
        except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an int too long to convert
            raise click.BadParameter(f"the value of `{key}` is not valid YAML: quote it", param_hint=flag) from None
    return out


def _verifier_options(pairs: tuple[str, ...], verifiers: dict) -> None:
    """Merge `--option math.extraction=lenient` into the named verifier's options in `verifiers`."""
    for key, value in _key_values(pairs, "--option").items():
        name, dot, option = key.partition(".")
        if not dot or not option:
            raise click.BadParameter(f"expected VERIFIER.OPTION=VALUE, got `{key}`", param_hint="--option")
        if name not in verifiers:
            raise DistillError(f"--option names verifier `{name}`, which is not in --verifiers")
        verifiers[name][option] = value


def section_and_flags(
    ctx: click.Context, config_file: str | None, section: str, flags: dict
) -> tuple[dict | None, dict]:
    """The stage's settings from a YAML file (a flat mapping, or a recipe's `section:`), and the flags the
    user actually typed: defaults < file < flags, so an untyped flag never hides a value from the file."""

    recipe = None
    if config_file:
        recipe = load_yaml(config_file)
        recipe = recipe.get(section, recipe)
        if isinstance(recipe, list):
            raise DistillError(
                f"section `{section}` of {config_file} is a list of entries: run it with `distill run {config_file}`"
            )
        if recipe is not None and not isinstance(recipe, dict):
            raise DistillError(f"section `{section}` of {config_file} must be a mapping of keys to values")
    overrides = {k: v for k, v in flags.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    return recipe, overrides


def _stack(options: list):
    """One decorator applying `options` in order, as --help shows them."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _default(name: str, stage: str = "SampledConfig") -> str:
    """The default of a setting, for --help: read from the stage's config class, never typed twice."""
    value = {f.name: f.default for f in dataclasses.fields(getattr(distill.config, stage))}[name]
    return f"{value:g}" if isinstance(value, float) else str(value)


def engine_options():
    """The engine flags of every stage that runs a teacher (generate, eval); their names are EngineConfig's fields.
    The model is not among them: generate takes --model, eval takes its models as arguments."""
    return _stack(
        [
            click.option(
                "--engine",
                help="Teacher backend: transformers, vllm, openai or openai-batch (the Batch API).  "
                "[default: transformers]",
            ),
            click.option("--base-url", help="openai engine: server URL, e.g. http://127.0.0.1:8000/v1."),
            click.option(
                "--api-key-env",
                help=f"openai engine: environment variable holding the API key.  [default: {_default('api_key_env')}]",
            ),
            click.option(
                "--max-concurrency",
                type=int,
                help="openai engine: the most requests in flight (it starts below and adapts to the server's "
                f"rate limit).  [default: {_default('max_concurrency')}]",
            ),
            click.option(
                "--request-timeout",
                type=float,
                help=f"openai engine: seconds per request.  [default: {_default('request_timeout')}]",
            ),
            click.option(
                "--max-retries",
                type=int,
                help=f"openai engines: retries on 5xx/connection errors (a 429 waits its turn instead).  "
                f"[default: {_default('max_retries')}]",
            ),
            click.option(
                "--rate-limit-timeout",
                type=float,
                help="openai engine: seconds of nothing but 429s before the run stops.  "
                f"[default: {_default('rate_limit_timeout')}]",
            ),
            click.option(
                "--server-wait",
                type=float,
                help=f"openai engines: seconds to wait for a starting server.  [default: {_default('server_wait')}]",
            ),
            click.option(
                "--tokenizer",
                help="openai engines: tokenizer (name or folder) counting the tokens a server does not report.  "
                "[default: the model's, when available offline]",
            ),
            click.option("--price-input", type=float, help="USD per 1M prompt tokens, for cost and --budget."),
            click.option(
                "--price-cached-input", type=float, help="USD per 1M cached prompt tokens.  [default: --price-input]"
            ),
            click.option("--price-output", type=float, help="USD per 1M completion tokens (reasoning included)."),
            click.option(
                "--cache/--no-cache",
                default=None,
                help="Answer from the response cache ($DISTILL_CACHE/responses) what was asked before.  "
                "[default: --cache]",
            ),
            click.option(
                "--batch-max-requests",
                type=int,
                help=f"openai-batch: requests per batch.  [default: {_default('batch_max_requests')}]",
            ),
            click.option(
                "--batch-max-bytes",
                type=int,
                help=f"openai-batch: bytes per batch input file.  [default: {_default('batch_max_bytes')}]",
            ),
            click.option(
                "--batch-poll-seconds",
                type=float,
                help=f"openai-batch: seconds between looks at a batch.  [default: {_default('batch_poll_seconds')}]",
            ),
            click.option(
                "--tensor-parallel-size", "-tp", type=int, help="vllm engine: GPUs per model replica (tensor)."
            ),
            click.option(
                "--pipeline-parallel-size", "-pp", type=int, help="vllm engine: pipeline stages (across nodes)."
            ),
            click.option("--data-parallel-size", "-dp", type=int, help="vllm engine: data-parallel replicas."),
            click.option(
                "--distributed-executor-backend",
                type=click.Choice(["mp", "ray"]),
                help="vllm engine: ray for multi-node.",
            ),
            click.option(
                "--dtype",
                type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
                help="Weights dtype.  [default: auto = bf16 on GPU, fp32 on CPU]",
            ),
            click.option("--max-model-len", type=int, help="vllm engine: context length."),
            click.option(
                "--gpu-memory-utilization",
                type=float,
                help="vllm engine: memory fraction (RAM on CPU). [default: 0.9 GPU, 0.4 CPU]",
            ),
            click.option(
                "--engine-arg", multiple=True, metavar="KEY=VALUE", help="vllm engine: any other vllm.LLM argument."
            ),
            click.option(
                "--batch-size",
                type=int,
                help=f"transformers engine: prompts per batch.  [default: {_default('batch_size')}]",
            ),
            click.option("--device", help="transformers engine: cpu, cuda, cuda:1 ...  [default: cuda if available]"),
        ]
    )


def sampling_options(samples_flags: tuple[str, ...], samples_help: str, stage: str):
    """The sampling flags of every stage that samples a teacher; their names are TeacherConfig's fields."""
    samples_help = f"{samples_help}  [default: {_default('num_samples', stage)}]"
    return _stack(
        [
            click.option(*samples_flags, "num_samples", type=int, help=samples_help),
            click.option("--temperature", type=float, help=f"[default: {_default('temperature')}]"),
            click.option("--top-p", type=float, help=f"[default: {_default('top_p')}]"),
            click.option(
                "--min-p",
                type=float,
                help="Drop tokens below MIN_P x the top token's probability (vLLM, transformers, servers that take "
                f"it).  [default: {_default('min_p')}: off]",
            ),
            click.option(
                "--max-tokens", type=int, help=f"New tokens per sample.  [default: {_default('max_tokens')}]"
            ),
            click.option("--stop", multiple=True, help="Stop string. Repeatable."),
            click.option(
                "--prefill-think/--no-prefill-think", default=None, help="Start the assistant turn with <think>\\n."
            ),
        ]
    )


def teacher_flags(overrides: dict, source_option: tuple, engine_arg: tuple) -> dict:
    """The typed flags of the shared options in a stage config's shape: repeatable ones as lists, KEY=VALUE ones
    as mappings (an untyped repeatable flag is an empty tuple, never an override)."""
    if "stop" in overrides:
        if overrides["stop"]:
            overrides["stop"] = list(overrides["stop"])
        else:
            del overrides["stop"]
    if source_option:
        overrides["source_options"] = _key_values(source_option, "--source-option")
    if engine_arg:
        overrides["engine_args"] = _key_values(engine_arg, "--engine-arg")
    return overrides


def prompt_source_options(source_help: str, seed_flag: str = "--seed"):
    """The prompt-source flags that `generate` and `eval` share; their names are SampledConfig's fields. `train`,
    whose --seed is the training seed, names the prompts' seed `--prompt-seed` (parameter `prompt_seed`)."""
    options = [
        click.option("--source", help=source_help),
        click.option("--split", help="Split of a datasets source.  [default: train]"),
        click.option(
            "--prompt-column", help="Column with the prompt.  [default: problem, prompt, question or instruction]"
        ),
        click.option("--answer-column", help="Column with the gold answer.  [default: answer or gold, when present]"),
        click.option("--id-column", help="Column with a stable prompt id.  [default: id when present, else a hash]"),
        click.option("--domain", help="math, code, science or general.  [default: the domain column, else math]"),
        click.option("--system-prompt", help="System prompt.  [default: none, as in R1]"),
        click.option(
            "--prompt-template",
            help="User turn with {problem} in it.  [default: R1's boxed instruction for math/science, the bare "
            "prompt otherwise]",
        ),
        click.option(
            "--num-prompts", type=int, help="Use the first N prompts (reasoning-gym: make N).  [default: all; 100]"
        ),
        click.option(seed_flag, type=int, help="Seed for procedural sources and the engine.  [default: 0]"),
        click.option(
            "--source-option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Option of the source, e.g. reasoning-gym task settings (max_terms=2). Repeatable.",
        ),
    ]
    return _stack(options)
