"""The small rule verifiers of `distill filter`: the shape and size of a trace, no model and no answer key needed.

- `format`: a closed think block, non-empty reasoning and answer, not truncated, a boxed answer for math.
- `repetition`: the trace does not loop (share of repeated word 4-grams).
- `length`: the completion length is within bounds.

The answer checks live beside them (`math` in math.py, `language` in language.py); recipes name every verifier
through registry.py.
"""

import re
from collections.abc import Sequence

from distill.errors import DistillError
from distill.filter.verifiers.base import ALL_DOMAINS, BaseVerifier, Verdict, parse_domains, reasoning_and_answer
from distill.filter.verifiers.math import BOXED_DOMAINS, last_boxed
from distill.generate.parse import THINK_CLOSE, THINK_OPEN, parse_trace, truncation_from_text


def _domains_option(value: bool | Sequence[str], default: tuple[str, ...], option: str, verifier: str) -> frozenset:
    """A per-domain switch: True means `default`, False (or an empty list) none, or an explicit list of domains."""
    if value is True:
        return frozenset(default)
    if value is False or value is None or (isinstance(value, list | tuple) and not value):
        return frozenset()
    return frozenset(parse_domains(value, verifier, option))


# --------------------------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------------------------


class FormatVerifier(BaseVerifier):
    """The trace has R1's shape: `<think>reasoning</think>` then a non-empty answer, complete, boxed for math.

    Checked in this order, the first failure is the reason: truncated (`truncated`, finish_reason "length", or
    where the finish reason is unknown a text that stops mid-way: see truncated_from_text; the cause of most other
    defects, so it is named first), no_think_block, unclosed_think, empty_reasoning,
    empty_answer, no_final_answer (no \\boxed{} in the answer).

    Options:
    - require_think: True (default: every domain), False, or a list of domains. R1's data kept trivial general
      queries answered without chain of thought, so a recipe may pass [math, code, science]. Where it is not
      required, a missing or empty think block passes; an unclosed one still fails (the answer is missing).
    - require_boxed: True (default: math and science, whose prompts ask for \\boxed{}), False, or a list of
      domains. Recipes using lenient math extraction for weak teachers turn it off.
    """

    name = "format"
    domains = ALL_DOMAINS

    def __init__(self, require_think: bool | Sequence[str] = True, require_boxed: bool | Sequence[str] = True):
        self.think_domains = _domains_option(require_think, ALL_DOMAINS, "require_think", self.name)
        self.boxed_domains = _domains_option(require_boxed, BOXED_DOMAINS, "require_boxed", self.name)

    def verify(self, sample: dict) -> Verdict:
        completion = sample.get("completion") or ""
        finish_reason = sample.get("finish_reason")
        # Without a finish reason (imported traces, whatever their layout), the text says whether it was cut.
        cut = truncation_from_text(completion) if finish_reason is None else None
        if cut:
            return Verdict(False, "truncated", details=f"finish_reason unknown; {cut}")
        if sample.get("truncated") or finish_reason == "length":
            return Verdict(False, "truncated", details=f"finish_reason={finish_reason}")
        domain = sample.get("domain")
        trace = parse_trace(completion)
        has_think = THINK_OPEN in completion or THINK_CLOSE in completion
        need_think = domain in self.think_domains
        if not has_think and need_think:
            return Verdict(False, "no_think_block")
        if not trace.think_closed:
            return Verdict(False, "unclosed_think")
        if has_think and need_think and not trace.reasoning:
            return Verdict(False, "empty_reasoning")
        if not trace.answer:
            return Verdict(False, "empty_answer")
        if domain in self.boxed_domains and last_boxed(trace.answer) is None:
            return Verdict(False, "no_final_answer", details="no \\boxed{} in the answer")
        return Verdict(True, "ok")


# --------------------------------------------------------------------------------------------------------------
# repetition
# --------------------------------------------------------------------------------------------------------------

# Word tokens, with each CJK character a token of its own (those scripts do not separate words by spaces).
TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+")


def repetition_ratio(text: str, n: int = 4) -> float:
    """1 - distinct/total word n-grams: 0 when no n-gram repeats, close to 1 for a loop."""
    tokens = TOKEN_RE.findall(text.lower())
    total = len(tokens) - n + 1
    if total <= 0:
        return 0.0
    # The n-grams without a slice per position; the shorter tails end the zip where the last n-gram ends.
    distinct = set(zip(*(tokens[i:] for i in range(n)), strict=False))
    return 1 - len(distinct) / total


class RepetitionVerifier(BaseVerifier):
    """The trace does not loop: the share of repeated word n-grams over reasoning + answer stays below max_ratio.

    ratio = 1 - distinct n-grams / total n-grams (the complement of the "distinct-n" diversity metric), case
    folded, punctuation ignored, CJK characters as single tokens. Verdict (False, "repetitive") above max_ratio;
    score = the ratio.

    Options:
    - n: n-gram size (default 4: long enough that ordinary phrases such as "the answer is" do not count, short
      enough to catch a loop of one sentence).
    - max_ratio: the fail mark (default 0.5: more than half of the trace is a repeat). Ordinary prose scores under
      0.1 and long careful reasoning, which re-checks and restates, stays well under 0.5; a model stuck in a loop
      until its token budget runs out approaches 1 (a sentence repeated 20 times already scores 0.9). A loop that
      took over less than half of the trace passes here; such traces are usually truncated and fail `format`.
    """

    name = "repetition"
    domains = ALL_DOMAINS

    def __init__(self, n: int = 4, max_ratio: float = 0.5):
        if not isinstance(n, int) or n < 1:
            raise DistillError(f"verifier `repetition`: n must be at least 1, got {n!r}")
        if not isinstance(max_ratio, int | float) or not 0 <= max_ratio <= 1:
            raise DistillError(f"verifier `repetition`: max_ratio must be between 0 and 1, got {max_ratio!r}")
        self.n = n
        self.max_ratio = float(max_ratio)

    def verify(self, sample: dict) -> Verdict:
        reasoning, answer = reasoning_and_answer(sample)
        ratio = repetition_ratio(reasoning + "\n" + answer, self.n)
        if ratio > self.max_ratio:
            return Verdict(False, "repetitive", score=ratio, details=f"{ratio:.0%} of word {self.n}-grams repeat")
        return Verdict(True, "ok", score=ratio)


# --------------------------------------------------------------------------------------------------------------
# length
# --------------------------------------------------------------------------------------------------------------


class LengthVerifier(BaseVerifier):
    """The completion length lies within [min_tokens, max_tokens].

    Length is `completion_tokens` (the teacher's tokenizer); rows without it fall back to the whitespace word count
    of the completion. Verdicts (False, "too_short"), (False, "too_long"); score = the length.

    Options: min_tokens (default 0) and max_tokens (default None, no bound). Both are off by default because the
    right bounds depend on the teacher and the domain (R1 traces run to 32k tokens; a general answer can be 20),
    and cut-off samples are already caught by `format`; a recipe sets them, e.g. min_tokens 16 to drop empty
    chatter, max_tokens 16384 to keep a student's context.
    """

    name = "length"
    domains = ALL_DOMAINS

    def __init__(self, min_tokens: int = 0, max_tokens: int | None = None):
        if not isinstance(min_tokens, int) or min_tokens < 0:
            raise DistillError(f"verifier `length`: min_tokens must be 0 or more, got {min_tokens!r}")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < min_tokens):
            raise DistillError(
                f"verifier `length`: max_tokens must be at least min_tokens ({min_tokens}), got {max_tokens!r}"
            )
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    def verify(self, sample: dict) -> Verdict:
        length = sample.get("completion_tokens")
        unit = "tokens"
        if length is None:
            text = sample.get("completion")
            if text is None:
                text = "\n".join(reasoning_and_answer(sample))
            length, unit = len(text.split()), "words"
        if length < self.min_tokens:
            return Verdict(False, "too_short", score=length, details=f"{length} {unit} < {self.min_tokens}")
        if self.max_tokens is not None and length > self.max_tokens:
            return Verdict(False, "too_long", score=length, details=f"{length} {unit} > {self.max_tokens}")
        return Verdict(True, "ok", score=length)
