"""Verifiers by name, as recipes and `--verifiers` name them. Heavy ones are imported only when asked for."""

import difflib

from distill.errors import DistillError
from distill.filter.base import BaseVerifier
from distill.filter.rules import RULE_VERIFIERS, check_options

NAMES = (*RULE_VERIFIERS, "code", "judge")
# Verifiers whose verdict says whether the answer is right; where none of them could decide, the judge does.
CORRECTNESS = ("math", "code")


def verifier_class(name: str) -> type:
    if name in RULE_VERIFIERS:
        return RULE_VERIFIERS[name]
    if name == "code":
        from distill.filter.code import CodeVerifier

        return CodeVerifier
    if name == "judge":
        from distill.filter.judge import JudgeVerifier

        return JudgeVerifier
    near = difflib.get_close_matches(name, NAMES, n=1)
    hint = f" (did you mean `{near[0]}`?)" if near else ""
    raise DistillError(f"unknown verifier `{name}`{hint}: choose from {', '.join(NAMES)}")


def build_verifier(name: str, options: dict) -> BaseVerifier:
    """A verifier from its name and options. `domains` (a list) narrows where it applies, for any verifier."""
    options = dict(options)
    domains = options.pop("domains", None)
    cls = verifier_class(name)
    check_options(cls, name, options)
    verifier = cls(**options)
    if domains is not None:
        verifier.domains = tuple([domains] if isinstance(domains, str) else domains)
    return verifier
