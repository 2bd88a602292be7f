"""Is one model better than another on the same prompts? The gain in pass@1 with a paired bootstrap interval.

Both models answer the same held-out prompts, k samples each, so the comparison is paired: resample the prompts
(with replacement, the same draw for both models), take the mean of the per-prompt differences in pass rate, and
read the 2.5th and 97.5th percentiles of those means (the percentile bootstrap; Efron & Tibshirani, ch. 13).
Resampling prompts, not samples, keeps the k samples of one prompt together: they are not independent (an easy
prompt is easy for every sample), and treating them as such would make the interval too narrow.

Also here: the lenient reading of the same samples (math-verify's extraction without a \\boxed{}), so the eval table
shows strict and lenient side by side and a gain that is only the model learning to write \\boxed{} shows as such.
"""

import random
import re
from collections.abc import Iterable, Mapping

from distill.filter.verifiers.registry import build_verifier

BOOTSTRAP_RESAMPLES = 2000
# A run of arithmetic in a problem: digits, operators, brackets, spaces
_EXPRESSION = re.compile(r"[\d\s+\-*/×÷^().=]+")
_OPERATOR_AFTER_DIGIT = re.compile(r"\d\s*[-+*/×÷^]")
_SIGNS = {"+-": "-", "-+": "-", "--": "+", "++": "+"}


def problem_key(text: str) -> str:
    """What makes two problems the same for held-out checks: for a problem built around one arithmetic expression
    (reasoning-gym's "Calculate ( 8 - -8 )."), the expression without spaces, enclosing brackets or doubled signs
    ("8+8", which "What is 8 + 8?" shares); for any other, its words, lowercased. Procedural tasks draw the same
    sum again under another seed, in other words or brackets: 8 of proof.py's 100 held-out sums (seed 1000) have
    a training prompt's key, 4 of them word for word."""
    spans = [s.strip(" .=") for s in _EXPRESSION.findall(text) if _OPERATOR_AFTER_DIGIT.search(s)]
    if len(spans) != 1:
        return "text:" + " ".join(text.lower().split())
    expression = re.sub(r"\s+", "", spans[0])
    while expression.startswith("(") and expression.endswith(")") and _balanced(expression[1:-1]):
        expression = expression[1:-1]
    while any(pair in expression for pair in _SIGNS):
        for pair, sign in _SIGNS.items():
            expression = expression.replace(pair, sign)
    return "expr:" + expression


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def held_out(prompts: list, training_problems: Iterable[str]) -> tuple[list, int]:
    """The prompts (anything with a `.problem`) whose problem_key no training problem has; and how many went."""
    seen = {problem_key(p) for p in training_problems}
    kept = [p for p in prompts if problem_key(p.problem) not in seen]
    return kept, len(prompts) - len(kept)


def per_prompt_rates(samples: list[dict], key: str = "correct") -> dict[str, float]:
    """prompt_id -> share of its samples whose `key` is True (None and False count as not correct)."""
    counts: dict[str, list[int]] = {}
    for s in samples:
        c = counts.setdefault(s["prompt_id"], [0, 0])
        c[0] += 1
        c[1] += s.get(key) is True
    return {p: right / n for p, (n, right) in counts.items()}


def paired_bootstrap(
    before: Mapping[str, float],
    after: Mapping[str, float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """The mean of after - before over the prompts both have, with its percentile bootstrap interval.

    Returns {"gain", "low", "high", "prompts", "level", "resamples"}; low/high are None with fewer than two
    shared prompts (no spread to resample).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    shared = [p for p in before if p in after]
    diffs = [after[p] - before[p] for p in shared]
    result = {"gain": None, "low": None, "high": None, "prompts": len(diffs), "level": level, "resamples": resamples}
    if not diffs:
        return result
    n = len(diffs)
    result["gain"] = sum(diffs) / n
    if n < 2:
        return result
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    result["low"] = means[int(tail * (resamples - 1))]
    result["high"] = means[int(round((1 - tail) * (resamples - 1)))]
    return result


def gain_between(summary: dict, samples: Mapping[str, list[dict]], before: str, after: str) -> dict:
    """Strict and lenient gains of model `after` over model `before`, from their per-sample rows."""
    gains = {}
    for key in ("correct", "correct_lenient"):
        if all(key in s for rows in (samples[before], samples[after]) for s in rows):
            a, b = per_prompt_rates(samples[before], key), per_prompt_rates(samples[after], key)
            gains["strict" if key == "correct" else "lenient"] = paired_bootstrap(a, b)
    return {"before": before, "after": after, **gains}


def lenient_correct(rows: list[dict]) -> list[bool | None]:
    """The math verifier with lenient extraction over generated rows (math and science only; others: None)."""
    # In this process (workers 0): a second pool per batch would cost more than the parsing it spares.
    verifier = build_verifier("math", {"extraction": "lenient", "workers": 0})
    try:
        todo = [i for i, r in enumerate(rows) if r.get("error") is None and r["domain"] in verifier.domains]
        out: list[bool | None] = [None] * len(rows)
        if todo:
            for i, verdict in zip(todo, verifier.verify_batch([rows[i] for i in todo]), strict=True):
                out[i] = verdict.passed
        return out
    finally:
        verifier.close()


def format_gain(gain: dict) -> str:
    """`+18.8 pts [+9.4, +28.1]` style cells for the gain row."""
    if gain.get("gain") is None:
        return "-"
    text = f"{gain['gain'] * 100:+.1f} pts"
    if gain.get("low") is not None:
        text += f" [{gain['low'] * 100:+.1f}, {gain['high'] * 100:+.1f}]"
    return text
