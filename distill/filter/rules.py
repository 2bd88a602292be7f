"""Rule verifiers for `distill filter`: the rejection sampling of DeepSeek-R1's distillation data, without a model.

- `math`: the final answer (the last `\\boxed{}` of the answer) is equivalent to the gold answer (math-verify).
- `format`: a closed think block, non-empty reasoning and answer, not truncated, a boxed answer for math.
- `language`: the reasoning and answer are in the prompt's language (R1's language-consistency reward).
- `repetition`: the trace does not loop (share of repeated word 4-grams).
- `length`: the completion length is within bounds.

Recipes name them through `RULE_VERIFIERS` and build them with `build(name, options)`.
"""

import difflib
import functools
import inspect
import json
import math
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from distill.errors import DistillError, MissingDependency
from distill.filter.base import BaseVerifier, Verdict
from distill.generate.parse import THINK_CLOSE, THINK_OPEN, parse_trace

ALL_DOMAINS = ("math", "code", "science", "general")
BOXED_DOMAINS = ("math", "science")  # the domains whose default prompt asks for \boxed{} (R1's math template)
DETAILS_CHARS = 80  # how much of an answer or gold a verdict's details quote


def _clip(text: str, limit: int = DETAILS_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reasoning_and_answer(sample: dict) -> tuple[str, str]:
    """The row's reasoning and answer; rows without them (older or hand-made) are split from the completion."""
    reasoning, answer = sample.get("reasoning"), sample.get("answer")
    if reasoning is None and answer is None:
        trace = parse_trace(sample.get("completion") or "")
        return trace.reasoning, trace.answer
    return reasoning or "", answer or ""


def _domains_option(value: bool | Sequence[str], default: tuple[str, ...], option: str, verifier: str) -> frozenset:
    """A per-domain switch: True means `default`, False none, or an explicit list of domains."""
    if value is True:
        return frozenset(default)
    if value is False or value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    unknown = [d for d in value if d not in ALL_DOMAINS]
    if unknown:
        raise DistillError(
            f"verifier `{verifier}`: option `{option}` takes true, false or a list of domains "
            f"({', '.join(ALL_DOMAINS)}), got {unknown[0]!r}"
        )
    return frozenset(value)


# --------------------------------------------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------------------------------------------

BOX_OPENERS = ("\\boxed{", "\\fbox{")
# Gold that already sits in a LaTeX environment ($...$, \(...\), \[...\]) is parsed as it is; any other gold
# is wrapped in \boxed{} first, because math-verify only extracts LaTeX from inside an environment ("-11" or
# "\frac12" alone are not found). \boxed{} rather than $...$ because math-verify's inline $...$ cannot span lines.
# An escaped or lone dollar (\$10, $5) is currency, not math mode.
LATEX_ENV_RE = re.compile(r"(?<!\\)\$.*?(?<!\\)\$|\\\(|\\\[", re.DOTALL)
# GSM8K-style gold: a worked solution ending in "#### 72"; the answer is what follows the marker.
GSM8K_MARKER = "####"


def last_boxed(text: str) -> str | None:
    """The content of the last balanced `\\boxed{...}` (or `\\fbox{...}`) in `text`, None when there is none.

    Braces are matched by hand because the content nests them (`\\boxed{\\frac{1}{2}}`); a box left open at the
    end (a cut-off answer) is skipped in favour of the previous complete one.
    """
    starts = sorted(i + len(opener) for opener in BOX_OPENERS for i in _find_all(text, opener))
    for start in reversed(starts):
        depth = 1
        for pos in range(start, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:pos]
    return None


def _find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at != -1:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def gold_for_parsing(gold: str) -> str:
    """The gold as math-verify should see it: a solution's last box, a GSM8K final line, or a bare answer boxed."""
    if GSM8K_MARKER in gold:
        gold = gold.rsplit(GSM8K_MARKER, 1)[1]
    boxed = last_boxed(gold)
    if boxed is not None:
        return "\\boxed{" + boxed + "}"
    if LATEX_ENV_RE.search(gold):
        return gold
    return "\\boxed{" + gold.strip() + "}"


def _has_sympy(parsed: list) -> bool:
    """math-verify returns sympy objects plus a raw-string fallback; only the former make a real comparison."""
    from sympy import Basic, MatrixBase

    return any(isinstance(item, Basic | MatrixBase) for item in parsed)


def check_math(gold: str | None, answer: str | None, extraction: str, timeout_seconds: int) -> Verdict:
    """One math verdict. Runs in a worker process (or the main thread): math-verify's timeouts are SIGALRM-based,
    which only works in the main thread of a process.
    """
    if gold is None or not gold.strip():
        return Verdict(None, "unverified", details="no gold answer")
    answer = answer or ""
    boxed = last_boxed(answer)
    if boxed is not None and boxed.strip():
        shown, lenient = boxed, False
    elif boxed is not None and extraction != "lenient":
        return Verdict(False, "no_final_answer", details="the last \\boxed{} of the answer is empty")
    elif extraction == "lenient" and answer.strip():
        # Weak teachers also write "within \\boxed{} is 1.5": an empty box is no box, so read the text instead.
        shown, lenient = answer, True
    else:
        return Verdict(False, "no_final_answer", details="no \\boxed{} in the answer")
    return _compare(gold, shown, lenient, timeout_seconds)


# Samples of one prompt share its gold and mostly agree on the final answer (R1 drew 4-16 per prompt), and parsing
# is most of math-verify's cost: each worker remembers recent parses and verdicts. Verdicts are immutable and
# depend only on these arguments, so a remembered one is exactly the one that would be computed again.
MATH_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=MATH_CACHE_SIZE)
def _compare(gold: str, shown: str, lenient: bool, timeout_seconds: int) -> Verdict:
    """The verdict for a gold and a final answer (the box's content, or with `lenient` the whole answer text)."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        gold_parsed = _parse(gold_for_parsing(gold), True, timeout_seconds)
    except TimeoutException:
        return Verdict(None, "timeout", details=f"parsing the gold {_clip(gold)!r}")
    if not _has_sympy(gold_parsed):
        return Verdict(None, "unverified", details=f"math-verify cannot parse the gold {_clip(gold)!r}")
    # Lenient: math-verify's own extraction over the whole answer: "final answer is"/"answer:" anchors first, then
    # the last LaTeX expression, then the last plain number or expression ("So the answer is 14." -> 14).
    pred_text = shown if lenient else "\\boxed{" + shown + "}"
    try:
        pred_parsed = _parse(pred_text, lenient, timeout_seconds)
    except TimeoutException:
        return Verdict(None, "timeout", details=f"parsing the answer {_clip(shown)!r}")
    if not pred_parsed:
        return Verdict(False, "no_final_answer", details=f"no answer found in {_clip(shown)!r}")

    # Pair by pair (math-verify does the same product inside verify()), so that one pair raising or timing out does
    # not hide a later pair that matches, and a timeout is reported as such rather than as wrong.
    timed_out = False
    for g in gold_parsed:
        for p in pred_parsed:
            try:
                if verify(g, p, timeout_seconds=timeout_seconds, raise_on_error=True):
                    return Verdict(True, "ok")
            except TimeoutException:
                timed_out = True
            except Exception:  # noqa: BLE001 - sympy failing to compare two objects means "not shown equal"
                continue
    # Never str() the parsed objects here: printing a huge sympy expression can itself hang (math-verify's warning).
    # math-verify's raw-string fallback is what it extracted (safe to print, unlike the sympy objects).
    extracted = next((item for item in pred_parsed if isinstance(item, str)), shown)
    details = f"answer {_clip(extracted)!r}, gold {_clip(gold)!r}"
    if timed_out:
        return Verdict(None, "timeout", details=details)
    return Verdict(False, "wrong_answer", details=details)


@functools.lru_cache(maxsize=MATH_CACHE_SIZE)
def _parse(text: str, with_expressions: bool, timeout_seconds: int) -> tuple:
    """math-verify's parse: LaTeX only for a boxed answer; LaTeX and plain expressions for the gold and lenient
    answers. An empty result when it does not parse; a timeout raises (and is not remembered)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()] if with_expressions else [LatexExtractionConfig()]
    try:
        # raise_on_error so that a timeout is told apart from "did not parse": with the default (False) math-verify
        # turns a timeout into [] (parse) or False (verify), which we would report as a wrong answer.
        return tuple(parse(text, config, parsing_timeout=timeout_seconds, raise_on_error=True))
    except Exception as exc:
        from math_verify.errors import TimeoutException

        if isinstance(exc, TimeoutException):
            raise
        return ()  # text latex2sympy chokes on: the gold is unverifiable, the answer not equivalent


def check_math_chunk(jobs: list[tuple[str | None, str | None]], extraction: str, timeout_seconds: int) -> list:
    """A chunk of (gold, answer) pairs in one worker call: one row's exception never fails its neighbours."""
    out = []
    for gold, answer in jobs:
        try:
            out.append(check_math(gold, answer, extraction, timeout_seconds))
        except Exception as exc:  # noqa: BLE001 - reported on the row, as safe_verify does
            out.append(Verdict(None, "verifier_error", details=f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out


class MathVerifier(BaseVerifier):
    """The final answer is mathematically equivalent to the gold answer (math-verify).

    The final answer is the last `\\boxed{}` of the `answer` (the text after the think block), never of the
    reasoning: a model that boxes an intermediate result while thinking and then answers without a box has not
    given a final answer. Equivalence is math-verify's: `0.5` = `\\frac{1}{2}` = `\\dfrac12` = `1/2`, `x = 3` = `3`,
    sets and intervals up to order, and percentages as math-verify grades them (`50\\%` matches both `0.5` and
    `50`, which we keep: a teacher that writes the percent sign on a "what percent" question is right).

    Verdicts: (True, "ok"); (False, "wrong_answer"); (False, "no_final_answer"); (None, "unverified") when the gold
    is missing or math-verify cannot parse it (could not check, which is not a failure); (None, "timeout").

    Options:
    - extraction: "boxed" (default; strict, what R1-class teachers are prompted for) or "lenient". Weak teachers
      (SmolLM2-135M, the embedded CPU default) rarely write \\boxed{}; with "boxed" every such sample fails as
      no_final_answer, so "lenient" falls back, when the answer has no box, to math-verify's extraction over the
      answer ("the final answer is X", "answer: X", else the last LaTeX expression or number: "So the answer is
      14." -> 14). Lenient can pick an intermediate number, so keep "boxed" for real teachers.
    - timeout_seconds: math-verify's timeout for each parse and each comparison (default 5, its own default;
      whole seconds, since it uses SIGALRM).
    - workers: processes of the batch pool (default os.cpu_count(); 0 checks in this process, main thread only).
    - chunk_size: samples per task sent to a worker (default: a batch split into about 4 tasks per worker, at
      most 64 samples each, so that slow rows even out across workers and pickling stays cheap).
    - start_method: how workers are started (default "spawn": the filter may run threads, e.g. a judge's HTTP
      client, and forking a threaded process can deadlock the child).
    """

    name = "math"
    domains = BOXED_DOMAINS

    def __init__(
        self,
        extraction: str = "boxed",
        timeout_seconds: int = 5,
        workers: int | None = None,
        chunk_size: int | None = None,
        start_method: str = "spawn",
    ):
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise MissingDependency("math-verify", "pip install math-verify") from None
        if extraction not in ("boxed", "lenient"):
            raise DistillError(f"verifier `math`: extraction must be `boxed` or `lenient`, got {extraction!r}")
        if not isinstance(timeout_seconds, int | float) or timeout_seconds <= 0:
            raise DistillError(f"verifier `math`: timeout_seconds must be a positive number, got {timeout_seconds!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 0):
            raise DistillError(f"verifier `math`: workers must be 0 or more, got {workers!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise DistillError(f"verifier `math`: chunk_size must be at least 1, got {chunk_size!r}")
        if start_method not in ("spawn", "forkserver", "fork"):
            raise DistillError(
                f"verifier `math`: start_method must be spawn, forkserver or fork, got {start_method!r}"
            )
        self.extraction = extraction
        self.timeout_seconds = math.ceil(timeout_seconds)  # signal.alarm takes whole seconds
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.chunk_size = chunk_size
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # verify() may be called from several threads at once

    def _executor(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                context = get_context(self.start_method)
                self._pool = ProcessPoolExecutor(max_workers=max(1, self.workers), mp_context=context)
            return self._pool

    def _job(self, sample: dict) -> tuple[str | None, str | None]:
        # Only the two strings travel to the worker, not the whole row (reasoning can be 100k characters).
        return sample.get("gold"), _reasoning_and_answer(sample)[1]

    def verify(self, sample: dict) -> Verdict:
        gold, answer = self._job(sample)
        if self.workers == 0 or threading.current_thread() is threading.main_thread():
            return check_math(gold, answer, self.extraction, self.timeout_seconds)
        # SIGALRM cannot be armed outside the main thread: a caller on a thread goes through the pool.
        return self._executor().submit(check_math, gold, answer, self.extraction, self.timeout_seconds).result()

    def verify_batch(self, samples: Sequence[dict]) -> list[Verdict]:
        jobs = [self._job(s) for s in samples]
        if not jobs:
            return []
        if self.workers == 0:
            return check_math_chunk(jobs, self.extraction, self.timeout_seconds)
        size = self.chunk_size or max(1, min(64, math.ceil(len(jobs) / (self.workers * 4))))
        pool = self._executor()
        futures = [
            pool.submit(check_math_chunk, jobs[i : i + size], self.extraction, self.timeout_seconds)
            for i in range(0, len(jobs), size)
        ]
        verdicts: list[Verdict] = []
        broken = False
        for i, future in zip(range(0, len(jobs), size), futures, strict=True):
            try:
                verdicts.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory): its rows, not the run
                broken = broken or isinstance(exc, BrokenProcessPool)
                note = f"{type(exc).__name__}: {str(exc)[:200]}"
                verdicts.extend(Verdict(None, "verifier_error", details=note) for _ in jobs[i : i + size])
        if broken:
            self.close()  # a broken pool refuses all further work: the next batch starts a fresh one
        return verdicts

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------------------------


class FormatVerifier(BaseVerifier):
    """The trace has R1's shape: `<think>reasoning</think>` then a non-empty answer, complete, boxed for math.

    Checked in this order, the first failure is the reason: truncated (`truncated` or finish_reason "length": the
    cause of most other defects, so it is named first), no_think_block, unclosed_think, empty_reasoning,
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
        if sample.get("truncated") or sample.get("finish_reason") == "length":
            return Verdict(False, "truncated", details=f"finish_reason={sample.get('finish_reason')}")
        completion = sample.get("completion") or ""
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
# language
# --------------------------------------------------------------------------------------------------------------

# Unicode blocks of the scripts we tell apart. A character outside them that is still a letter counts as "other".
SCRIPT_RANGES = [
    ("latin", 0x0041, 0x005A),
    ("latin", 0x0061, 0x007A),
    ("latin", 0x00C0, 0x024F),
    ("latin", 0x1E00, 0x1EFF),
    ("greek", 0x0370, 0x03FF),
    ("greek", 0x1F00, 0x1FFF),
    ("cyrillic", 0x0400, 0x052F),
    ("hebrew", 0x0590, 0x05FF),
    ("arabic", 0x0600, 0x06FF),
    ("arabic", 0x0750, 0x077F),
    ("arabic", 0x08A0, 0x08FF),
    ("arabic", 0xFB50, 0xFDFF),
    ("arabic", 0xFE70, 0xFEFF),
    ("devanagari", 0x0900, 0x097F),
    ("thai", 0x0E00, 0x0E7F),
    ("hangul", 0x1100, 0x11FF),
    ("hangul", 0x3130, 0x318F),
    ("hangul", 0xAC00, 0xD7AF),
    ("kana", 0x3040, 0x30FF),
    ("kana", 0x31F0, 0x31FF),
    ("han", 0x3400, 0x4DBF),
    ("han", 0x4E00, 0x9FFF),
    ("han", 0xF900, 0xFAFF),
    ("han", 0x20000, 0x2FFFF),
]
# Scripts written without spaces: every character is one unit (a CJK character carries about a word's meaning);
# in the other scripts a run of letters is one unit (a word).
CHARACTER_SCRIPTS = {"han", "kana"}
# Single Latin or Greek letters are variables (x, n, π) far more often than words, in every language.
VARIABLE_SCRIPTS = {"latin", "greek"}

# Which scripts count as "in the language". Unlisted Latin-script codes (en, fr, de, es, vi, ...) map to latin.
LANGUAGE_SCRIPTS = {
    "zh": {"han"},
    "ja": {"han", "kana"},
    "ko": {"hangul", "han"},
    "ru": {"cyrillic"},
    "uk": {"cyrillic"},
    "bg": {"cyrillic"},
    "sr": {"cyrillic"},
    "kk": {"cyrillic"},
    "ar": {"arabic"},
    "fa": {"arabic"},
    "ur": {"arabic"},
    "he": {"hebrew"},
    "el": {"greek"},
    "hi": {"devanagari"},
    "mr": {"devanagari"},
    "ne": {"devanagari"},
    "th": {"thai"},
}
LATIN_LANGUAGES = {
    "en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "nb", "fi", "pl", "cs", "sk", "sl", "hr", "ro",
    "hu", "tr", "vi", "id", "ms", "tl", "sw", "ca", "eu", "gl", "et", "lv", "lt", "af", "latin",
}  # fmt: skip
SCRIPT_NAMES = {script for script, _, _ in SCRIPT_RANGES}

# Text that is not prose in any language: code, LaTeX, URLs, identifiers. Removed before counting.
NON_PROSE_RES = [
    re.compile(r"```.*?(?:```|\Z)", re.DOTALL),  # fenced code (an unclosed fence runs to the end)
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$", re.DOTALL),
    re.compile(r"\\\[.*?\\\]", re.DOTALL),
    re.compile(r"\\\(.*?\\\)", re.DOTALL),
    re.compile(r"\\begin\{([a-zA-Z*]+)\}.*?\\end\{\1\}", re.DOTALL),
    re.compile(r"(?<!\\)\$[^$\n]*\$"),  # inline $...$
    re.compile(r"\\[A-Za-z]+"),  # stray LaTeX commands (\boxed, \frac, \times) outside math delimiters
    re.compile(r"https?://\S+"),
    # identifiers written in prose: snake_case, names with digits (x1, nums2), calls and attributes (f(, a.b)
    re.compile(r"\b\w*_\w*\b|\b[A-Za-z]+\d\w*\b|\b[A-Za-z]\w*(?=\()|\b[A-Za-z]\w*\.[A-Za-z]\w*\b"),
]

# The commonest English function words. English prose has about 40% of its words here; other Latin-script
# languages share only a handful ("a", "in", "is" in some), so the share tells English from French or Spanish.
ENGLISH_STOPWORDS = frozenset(
    "a about after all also an and are as at be because been but by can could did do does for from had has have he "
    "her here his how i if in into is it its let me more my no not now of on one only or other our out so some "
    "such than that the their them then there these they this to up us was we were what when where which while "
    "who will with would you your".split()
)


@functools.lru_cache(maxsize=65536)  # traces are long but use few distinct characters: classify each once
def _script_of(ch: str) -> str | None:
    """The script of a letter; None for anything else (digits, punctuation, symbols such as × inside Latin-1)."""
    if not ch.isalpha():
        return None
    code = ord(ch)
    for script, lo, hi in SCRIPT_RANGES:
        if lo <= code <= hi:
            return script
    return "other"


def strip_non_prose(text: str) -> str:
    for pattern in NON_PROSE_RES:
        text = pattern.sub(" ", text)
    return text


def script_units(text: str) -> Counter:
    """Units of prose per script: a word in alphabetic scripts, a character in Chinese and Japanese.

    Numbers, punctuation, LaTeX and code are not counted (see strip_non_prose).
    """
    return _count_units(strip_non_prose(text))


# A word of two or more ASCII letters: what _count_units counts in ASCII text (single letters are variables).
ASCII_WORD_RE = re.compile(r"[A-Za-z]{2,}")


def _count_units(prose: str) -> Counter:
    if prose.isascii():
        # The common case, and 10x faster than the loop below: ASCII has one script (Latin) and no combining
        # marks, so the units are the maximal runs of letters, less the single letters. Same counts, by design.
        words = len(ASCII_WORD_RE.findall(prose))
        return Counter({"latin": words}) if words else Counter()
    return _count_units_by_char(prose)


def _count_units_by_char(prose: str) -> Counter:
    units: Counter = Counter()
    run_script, run_len = None, 0

    def end_run() -> None:
        if run_script is not None and not (run_script in VARIABLE_SCRIPTS and run_len == 1):
            units[run_script] += 1

    for ch in prose:
        script = _script_of(ch)
        if script is None and run_script is not None and _is_mark(ch):
            run_len += 1  # combining marks (Devanagari vowel signs, Arabic harakat) continue the word
            continue
        if script in CHARACTER_SCRIPTS:
            end_run()
            run_script, run_len = None, 0
            units[script] += 1
        elif script is not None and script == run_script:
            run_len += 1
        else:
            end_run()
            run_script, run_len = script, (1 if script else 0)
    end_run()
    return units


# Sentence ends in Latin and CJK punctuation, and line breaks.
SENTENCE_END_RE = re.compile(r"[.!?;\n\u3002\uff01\uff1f\uff1b]+")


def target_share(text: str, scripts: set[str]) -> tuple[float | None, Counter]:
    """The share of prose units that sit in sentences written (mostly) in `scripts`, and the units per script.

    Judged sentence by sentence: a sentence belongs to the target when at least half of its units are in the
    target script. So a borrowed term, a name or an identifier ("we call max_sum on nums" inside a Chinese
    sentence) costs nothing, while a sentence or paragraph in another language (R1's language mixing) counts
    against the trace in full. None when the text has no prose.
    """
    total_units: Counter = Counter()
    in_target = total = 0
    for sentence in SENTENCE_END_RE.split(strip_non_prose(text)):
        units = _count_units(sentence)
        size = sum(units.values())
        if not size:
            continue
        total_units += units
        total += size
        if 2 * sum(units[s] for s in scripts) >= size:
            in_target += size
    return (in_target / total if total else None), total_units


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def _latin_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", strip_non_prose(text).lower())


def english_stopword_share(text: str) -> float | None:
    """Share of the Latin words that are English function words; None with fewer than 10 words to judge."""
    words = _latin_words(text)
    if len(words) < 10:
        return None
    return sum(w in ENGLISH_STOPWORDS for w in words) / len(words)


def detect_language(text: str) -> str | None:
    """A language code from the dominant script ("en" for Latin text that reads as English), None without prose."""
    units = script_units(text)
    if not units:
        return None
    script = units.most_common(1)[0][0]
    if script == "han":
        return "ja" if units["kana"] else "zh"
    if script == "kana":
        return "ja"
    if script == "latin":
        words = _latin_words(text)
        # Short prompts ("Calculate 2 + 3.") say too little; 10% stop words over 3+ words reads as English.
        if len(words) >= 3 and sum(w in ENGLISH_STOPWORDS for w in words) / len(words) >= 0.1:
            return "en"
        return "latin"
    return script  # a script name stands for its languages (cyrillic, arabic, ...)


def target_scripts(language: str) -> set[str]:
    if language in SCRIPT_NAMES:
        return {language}
    primary = language.lower().replace("_", "-").split("-")[0]
    if primary in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[primary]
    if primary in LATIN_LANGUAGES:
        return {"latin"}
    raise DistillError(
        f"verifier `language`: unknown language {language!r}: use auto, a code such as en, fr, zh, ja, ko, ru, ar, "
        f"hi, or a script name ({', '.join(sorted(SCRIPT_NAMES))})"
    )


def _user_prompt(sample: dict) -> str:
    """The user's own words: `problem` (without our template's English instruction), else the last user turn."""
    if sample.get("problem"):
        return sample["problem"]
    try:
        messages = json.loads(sample.get("prompt_messages") or "[]")
    except ValueError:
        return ""
    user = [m.get("content") or "" for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return user[-1] if user else ""


class LanguageVerifier(BaseVerifier):
    """The reasoning and the answer are written in the prompt's language (R1's language-consistency reward).

    score = the share of the prose (counted in words; in characters for Chinese and Japanese) that sits in
    sentences written in the target language's script, taken over the reasoning and over the answer separately,
    the lower of the two (an English trace ending in a Chinese answer is mixed too). Sentence by sentence, so that
    borrowed terms and identifiers inside a sentence do not count but a sentence in another language counts in
    full (see target_share). Code, LaTeX, numbers, URLs and single-letter variables are not prose and are ignored.
    Verdicts: (True, "ok"); (False, "language_mixing") below the threshold; (False, "wrong_language") with no
    target-language prose at all; (None, "empty") when there is no text, (None, "no_prose") when the text is all
    math or code.

    The detector tells scripts apart, not languages of one script: French reasoning for an English prompt passes
    unless min_english_stopword_share is set.

    Options:
    - language: "auto" (default: detected from the user's prompt, i.e. `problem`, which excludes our template's
      English instruction; when the prompt has no prose, e.g. a bare formula, the trace's own dominant script is
      the target, so mixing is still caught), or a code ("en", "zh", "ja", "ru", ...) or script name ("latin").
    - threshold: the pass mark (default 0.95: one stray sentence in twenty is tolerated). The failure R1 filtered
      is switching language for sentences or paragraphs, which puts the share far below it (a trace that
      switches halfway scores 0.5, a switched paragraph in a trace of five 0.8); since the score is counted
      sentence by sentence, the English terms and code names that a Chinese or Russian trace legitimately
      borrows do not lower it, so a good trace scores 1.0 and a high mark costs no good data. Prompts that ask
      for another language (translation) need language= set or this verifier left out.
    - min_english_stopword_share: when the target is English (given, or a prompt that reads as English), also
      require this share of English function words among the Latin words of each part with 10+ words (default
      0.0: off; about 0.15 catches other Latin-script languages, English prose sits near 0.4).
    """

    name = "language"
    domains = ALL_DOMAINS

    def __init__(self, language: str = "auto", threshold: float = 0.95, min_english_stopword_share: float = 0.0):
        if language != "auto":
            target_scripts(language)  # refuse an unknown code now, not on the first row
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise DistillError(f"verifier `language`: threshold must be between 0 and 1, got {threshold!r}")
        if not isinstance(min_english_stopword_share, int | float) or not 0 <= min_english_stopword_share <= 1:
            raise DistillError(
                "verifier `language`: min_english_stopword_share must be between 0 and 1, "
                f"got {min_english_stopword_share!r}"
            )
        self.language = language
        self.threshold = float(threshold)
        self.min_english_stopword_share = float(min_english_stopword_share)

    def verify(self, sample: dict) -> Verdict:
        reasoning, answer = _reasoning_and_answer(sample)
        if not reasoning.strip() and not answer.strip():
            return Verdict(None, "empty")
        language = self.language
        if language == "auto":
            language = detect_language(_user_prompt(sample)) or detect_language(reasoning + "\n" + answer) or ""
        scripts = target_scripts(language) if language else set()

        shares, total = {}, Counter()
        for part, text in (("reasoning", reasoning), ("answer", answer)):
            share, units = target_share(text, scripts)
            total += units
            if share is not None:
                shares[part] = share
        if not shares:
            return Verdict(None, "no_prose", details="only math, code or numbers")
        worst = min(shares, key=shares.get)
        score = shares[worst]
        if score < self.threshold:
            found = ", ".join(f"{s} {n}" for s, n in total.most_common(3))
            details = f"target {language}: {worst} {score:.0%} in {'/'.join(sorted(scripts))} ({found} units)"
            reason = "wrong_language" if sum(total[s] for s in scripts) == 0 else "language_mixing"
            return Verdict(False, reason, score=score, details=details)

        if self.min_english_stopword_share > 0 and language.split("-")[0].lower() == "en":
            for part, text in (("reasoning", reasoning), ("answer", answer)):
                share = english_stopword_share(text)
                if share is not None and share < self.min_english_stopword_share:
                    details = f"{part}: {share:.0%} English function words, not English prose"
                    return Verdict(False, "language_mixing", score=score, details=details)
        return Verdict(True, "ok", score=score)


# --------------------------------------------------------------------------------------------------------------
# repetition
# --------------------------------------------------------------------------------------------------------------

# Word tokens, with each CJK character a token of its own (those scripts do not separate words by spaces).
TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+")


def repetition_ratio(text: str, n: int = 4) -> float:
    """1 - distinct/total word n-grams: 0 when no n-gram repeats, close to 1 for a loop."""
    tokens = TOKEN_RE.findall(text.lower())
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


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
        reasoning, answer = _reasoning_and_answer(sample)
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
                text = "\n".join(_reasoning_and_answer(sample))
            length, unit = len(text.split()), "words"
        if length < self.min_tokens:
            return Verdict(False, "too_short", score=length, details=f"{length} {unit} < {self.min_tokens}")
        if self.max_tokens is not None and length > self.max_tokens:
            return Verdict(False, "too_long", score=length, details=f"{length} {unit} > {self.max_tokens}")
        return Verdict(True, "ok", score=length)


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------

RULE_VERIFIERS: dict[str, type[BaseVerifier]] = {
    "math": MathVerifier,
    "format": FormatVerifier,
    "language": LanguageVerifier,
    "repetition": RepetitionVerifier,
    "length": LengthVerifier,
}


def option_names(cls: type) -> list[str]:
    """The keyword options a verifier's constructor takes."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def check_options(cls: type, name: str, options: dict, extra: tuple[str, ...] = ()) -> None:
    """Refuse an option the verifier's constructor does not take, naming the nearest one."""
    valid = option_names(cls) + list(extra)
    for key in options:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean `{near[0]}`?)" if near else ""
            raise DistillError(
                f"unknown option `{key}` for verifier `{name}`{hint}: valid options are {', '.join(valid)}"
            )


def build(name: str, options: dict | None = None) -> BaseVerifier:
    """A rule verifier from its recipe name and options; a misspelt name or option is a one-line DistillError.

    Option names are checked against the constructor's signature before the call (rather than by catching
    TypeError after it), so a TypeError raised by a bug inside a constructor is never mistaken for a typo.
    """
    if name not in RULE_VERIFIERS:
        near = difflib.get_close_matches(name, list(RULE_VERIFIERS), n=1)
        hint = f" (did you mean `{near[0]}`?)" if near else ""
        raise DistillError(f"unknown rule verifier `{name}`{hint}: choose one of {', '.join(RULE_VERIFIERS)}")
    cls = RULE_VERIFIERS[name]
    options = dict(options or {})
    check_options(cls, name, options)
    return cls(**options)
