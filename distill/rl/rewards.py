"""The filter's verifiers behind TRL's reward-function interface.

TRL calls each reward function with `prompts`, `completions` and every dataset column as keyword lists, and takes
None for "no reward" (it becomes NaN and drops out of that function's mean and of the weighted sum). A verdict
that could not be checked (`passed` None: unparseable gold, no tests) is therefore None, never 0: scoring it 0
would punish the model for the dataset's gaps.
"""

from dataclasses import dataclass, field

import yaml

from distill.errors import DistillError
from distill.filter.verifiers.base import safe_verify
from distill.filter.verifiers.registry import NAMES, build_verifier, verifier_class
from distill.generate.parse import parse_trace


@dataclass(slots=True)
class RewardSpec:
    name: str  # a verifier name from distill.filter.verifiers.registry
    weight: float = 1.0
    options: dict = field(default_factory=dict)


def parse_reward(text: str) -> RewardSpec:
    """`NAME=WEIGHT` or `NAME` (weight 1.0), as `--reward` takes it."""
    name, _, weight = text.partition("=")
    name = name.strip()
    verifier_class(name)  # an unknown name is a one-line error with the near name
    if not weight:
        return RewardSpec(name)
    try:
        return RewardSpec(name, float(weight))
    except ValueError:
        raise DistillError(f"--reward {text}: the weight must be a number, e.g. --reward {name}=0.5") from None


def parse_option(text: str) -> tuple[str, str, object]:
    """`NAME.KEY=VALUE` (`--reward-option math.extraction=lenient`); the value is read as YAML (numbers, lists)."""
    target, sep, value = text.partition("=")
    name, dot, key = target.partition(".")
    if not sep or not dot or not key:
        raise DistillError(f"--reward-option {text}: write NAME.KEY=VALUE, e.g. math.extraction=lenient")
    if name not in NAMES:
        verifier_class(name)
    return name, key, yaml.safe_load(value)


def completion_text(completion) -> str:
    """A completion as TRL hands it: plain text, or a conversational list whose assistant turns we join."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


def verdict_reward(passed: bool | None) -> float | None:
    return None if passed is None else float(passed)


def make_reward_function(spec: RewardSpec, max_completion_length: int | None = None, eos_token_id=None):
    """A TRL reward function named after the verifier (TRL logs it as rewards/<name>/mean)."""
    verifier = build_verifier(spec.name, spec.options)

    def reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        rewards = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            trace = parse_trace(text)
            ids = completion_ids[i] if completion_ids is not None else None
            # A completion that used every allowed token without ending was cut off: the format verifier says so.
            truncated = bool(
                ids is not None
                and max_completion_length is not None
                and len(ids) >= max_completion_length
                and (eos_token_id is None or ids[-1] != eos_token_id)
            )
            sample = {
                "completion": text,
                "reasoning": trace.reasoning,
                "answer": trace.answer,
                "gold": _column(columns, "gold", i),
                "tests": _column(columns, "tests", i),
                "domain": _column(columns, "domain", i) or "math",
                "problem": _column(columns, "problem", i),
                "completion_tokens": len(ids) if ids is not None else None,
                "truncated": truncated,
                "finish_reason": "length" if truncated else "stop",
            }
            rewards.append(verdict_reward(safe_verify(verifier, sample).passed))
        return rewards

    reward.__name__ = spec.name
    reward.verifier = verifier
    return reward


def _column(columns: dict, key: str, i: int):
    values = columns.get(key)
    return None if values is None else values[i]


def weighted_reward(per_function: list[float | None], weights: list[float]) -> float | None:
    """The total TRL trains on: the weighted sum over functions that gave a reward (None ones drop out)."""
    given = [(r, w) for r, w in zip(per_function, weights, strict=True) if r is not None]
    return sum(r * w for r, w in given) if given else None
