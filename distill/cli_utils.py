"""Helpers shared by the command modules: one-line errors, KEY=VALUE flags."""

import functools
import os
import sys

import click
from click.core import ParameterSource

from distill.errors import DistillError
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
            raise click.ClickException(scrub(str(exc))) from None  # no credentials in a URL or token
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
        try:
            out[key] = yaml.safe_load(value)
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
    from distill.config import load_yaml

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


def prompt_source_options(source_help: str):
    """The prompt-source flags that `generate` and `eval` share; their names are GenerateConfig's fields."""
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
        click.option("--seed", type=int, help="Seed for procedural sources and the engine.  [default: 0]"),
        click.option(
            "--source-option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Option of the source, e.g. reasoning-gym task settings (max_terms=2). Repeatable.",
        ),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
