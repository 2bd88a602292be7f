"""The verifier interface: one verdict per sample, `passed=None` meaning "could not check" (not "wrong")."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from distill.errors import DistillError, near_hint
from distill.generate.parse import parse_trace

ALL_DOMAINS = ("math", "code", "science", "general")


@dataclass(slots=True, frozen=True)  # shared: the math verifier hands out remembered verdicts
class Verdict:
    """What a verifier says of one sample.

    `passed` is True (good), False (bad) or None (could not check: unparseable gold, no tests, verifier crashed).
    `reason` is a short snake_case code ("ok", "wrong_answer", "no_final_answer", "timeout", "unverified",
    "verifier_error", ...) that ends up in `dropped_<verifier>_<reason>`-style counts; `score` is optional
    (a judge's 1-10, a repetition ratio); `details` is a short human-readable note (never a secret).
    """

    passed: bool | None
    reason: str
    score: float | None = None
    details: str | None = None


class Verifier(Protocol):
    """Checks samples. A sample is one row of a generate output, as a dict (see distill.schema.GENERATE_SCHEMA):
    the useful keys are `domain`, `problem`, `prompt_messages`, `gold`, `tests`, `reasoning`, `answer`,
    `completion`, `finish_reason`, `truncated`, `completion_tokens`.
    """

    name: str
    # The domains it applies to; a sample of another domain is not checked by it (and not dropped by it).
    domains: tuple[str, ...]

    def verify(self, sample: dict) -> Verdict: ...

    def verify_batch(self, samples: Sequence[dict]) -> list[Verdict]:
        """Verdicts in the order of `samples`. Verifiers that need pools or a model override this."""
        ...

    def close(self) -> None: ...


class BaseVerifier:
    """Shared plumbing: a batch is a loop over `verify`, and an exception on one row becomes a null verdict."""

    name = "base"
    domains: tuple[str, ...] = ALL_DOMAINS

    def verify(self, sample: dict) -> Verdict:
        raise NotImplementedError

    def verify_batch(self, samples: Sequence[dict]) -> list[Verdict]:
        return [safe_verify(self, s) for s in samples]

    def close(self) -> None:
        pass


def safe_verify(verifier, sample: dict) -> Verdict:
    """An exception inside a verifier on one row never stops the run: the row gets reason verifier_error."""
    try:
        return verifier.verify(sample)
    except Exception as exc:  # noqa: BLE001 - any bug or bad row, reported on the row
        return Verdict(None, "verifier_error", details=f"{type(exc).__name__}: {str(exc)[:200]}")


def reasoning_and_answer(sample: dict) -> tuple[str, str]:
    """The row's reasoning and answer; rows without them (older or hand-made) are split from the completion."""
    reasoning, answer = sample.get("reasoning"), sample.get("answer")
    if reasoning is None and answer is None:
        trace = parse_trace(sample.get("completion") or "")
        return trace.reasoning, trace.answer
    return reasoning or "", answer or ""


def parse_domains(value, verifier: str, option: str = "domains") -> tuple[str, ...]:
    """A verifier's domain list: a domain or a non-empty list of them, each one of ALL_DOMAINS.

    A misspelt domain is an error rather than a verifier that silently applies nowhere: `domains=maths` once
    turned the math verifier off and kept a wrong answer.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise DistillError(
            f"verifier `{verifier}`: option `{option}` takes a domain or a list of domains "
            f"({', '.join(ALL_DOMAINS)}), got {value!r}"
        )
    for domain in value:
        if domain not in ALL_DOMAINS:
            raise DistillError(
                f"verifier `{verifier}`: unknown domain {domain!r} in option `{option}`"
                f"{near_hint(domain, ALL_DOMAINS)}: choose from {', '.join(ALL_DOMAINS)}"
            )
    return tuple(value)
