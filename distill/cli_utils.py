"""Helpers shared by the command modules: one-line errors, KEY=VALUE flags."""

import functools
import os
import sys

import click
from click.core import ParameterSource

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


def _verifier_options(pairs: tuple[str, ...]) -> dict:
    """`--option math.extraction=lenient` -> {"math": {"extraction": "lenient"}}."""
    out: dict = {}
    for key, value in _key_values(pairs, "--option").items():
        name, dot, option = key.partition(".")
        if not dot or not option:
            raise click.BadParameter(f"expected VERIFIER.OPTION=VALUE, got `{key}`", param_hint="--option")
        out.setdefault(name, {})[option] = value
    return out


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
    overrides = {k: v for k, v in flags.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    return recipe, overrides
