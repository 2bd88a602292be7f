"""Verifiers by name, as recipes and `--verifiers` name them: the one registry. Heavy ones are imported only when
asked for (the code verifier's sandbox, the judge's engine), so naming `math` never imports torch."""

import importlib
import inspect

from distill.errors import DistillError, near_hint
from distill.filter.verifiers.base import BaseVerifier, parse_domains

# name -> (module, class), imported on first use.
VERIFIERS: dict[str, tuple[str, str]] = {
    "math": ("distill.filter.verifiers.math", "MathVerifier"),
    "format": ("distill.filter.verifiers.rules", "FormatVerifier"),
    "language": ("distill.filter.verifiers.language", "LanguageVerifier"),
    "repetition": ("distill.filter.verifiers.rules", "RepetitionVerifier"),
    "length": ("distill.filter.verifiers.rules", "LengthVerifier"),
    "code": ("distill.filter.verifiers.code", "CodeVerifier"),
    "judge": ("distill.filter.verifiers.judge", "JudgeVerifier"),
}
NAMES = tuple(VERIFIERS)
# Verifiers whose verdict says whether the answer is right; where none of them could decide, the judge does.
CORRECTNESS = ("math", "code")


def verifier_class(name: str) -> type:
    if name not in VERIFIERS:
        raise DistillError(f"unknown verifier `{name}`{near_hint(name, NAMES)}: choose from {', '.join(NAMES)}")
    module, cls = VERIFIERS[name]
    return getattr(importlib.import_module(module), cls)


def option_names(cls: type) -> list[str]:
    """The keyword options a verifier's constructor takes."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def check_options(cls: type, name: str, options: dict, extra: tuple[str, ...] = ()) -> None:
    """Refuse an option the verifier's constructor does not take, naming the nearest one; and a `domains` value
    that is not a list of known domains (checked here too, so a plan or an eval refuses it before any work)."""
    valid = option_names(cls) + list(extra)
    for key in options:
        if key not in valid:
            raise DistillError(
                f"unknown option `{key}` for verifier `{name}`{near_hint(key, valid)}: valid options are "
                f"{', '.join(valid)}"
            )
    if "domains" in options and "domains" not in option_names(cls):
        parse_domains(options["domains"], name)


def build_verifier(name: str, options: dict) -> BaseVerifier:
    """A verifier from its name and options; a misspelt name or option is a one-line DistillError.

    `domains` (a list) narrows where it applies, for any verifier. Option names are checked against the
    constructor's signature before the call (rather than by catching TypeError after it), so a TypeError raised by
    a bug inside a constructor is never mistaken for a typo.
    """
    options = dict(options)
    domains = options.pop("domains", None)
    cls = verifier_class(name)
    check_options(cls, name, options)
    if domains is not None:
        domains = parse_domains(domains, name)
    verifier = cls(**options)
    if domains is not None:
        verifier.domains = domains
    return verifier
