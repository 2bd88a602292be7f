"""The `math` verifier: the final answer (the last `\\boxed{}` of the answer) is equivalent to the gold (math-verify).

The rejection sampling of DeepSeek-R1's distillation data for math and science, without a model.
"""

import functools
import math
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from distill.errors import DistillError, MissingDependency, near_hint
from distill.filter.verifiers.base import BaseVerifier, Verdict, reasoning_and_answer
from distill.filter.verifiers.multibox import check_several_boxes, gold_group_text, one_answer_gold

BOXED_DOMAINS = ("math", "science")  # the domains whose default prompt asks for \boxed{} (R1's math template)
DETAILS_CHARS = 80  # how much of an answer or gold a verdict's details quote
EXTRACTIONS = ("boxed", "lenient")
START_METHODS = ("spawn", "forkserver", "fork")


def _clip(text: str, limit: int = DETAILS_CHARS) -> str:
    text = " ".join(text[: 4 * limit].split())  # only the start is shown: never split a megabyte
    return text if len(text) <= limit else text[: limit - 3] + "..."


BOX_OPENERS = ("\\boxed{", "\\fbox{")
# A box opener, or any other brace: what last_boxed walks through.
BRACE_RE = re.compile(r"\\(?:boxed|fbox)\{|[{}]")
# Gold that already sits in a LaTeX environment ($...$, \(...\), \[...\]) is parsed as it is; any other gold
# is wrapped in \boxed{} first, because math-verify only extracts LaTeX from inside an environment ("-11" or
# "\frac12" alone are not found). \boxed{} rather than $...$ because math-verify's inline $...$ cannot span lines.
# An escaped or lone dollar (\$10, $5) is currency, not math mode.
LATEX_ENV_RE = re.compile(r"(?<!\\)\$.*?(?<!\\)\$|\\\(|\\\[", re.DOTALL)
# What is sent to math-verify, whose parser is superlinear (250 nested parentheses take a second): a final box of
# at most MAX_BOXED_CHARS (real final answers, matrices included, are far shorter), and for lenient extraction the
# last LENIENT_TAIL_CHARS of the answer (where "the final answer is ..." and the last number sit). With math-verify's
# own timeout per parse and comparison, this bounds each sample's cost whatever the model wrote.
MAX_BOXED_CHARS = 1000
LENIENT_TAIL_CHARS = 2000
# GSM8K-style gold: a worked solution ending in "#### 72"; the answer is what follows the marker.
GSM8K_MARKER = "####"


def last_boxed(text: str) -> str | None:
    """The content of the last balanced `\\boxed{...}` (or `\\fbox{...}`) in `text`, None when there is none.

    Braces are matched by hand because the content nests them (`\\boxed{\\frac{1}{2}}`); a box left open at the
    end (a cut-off answer) is skipped in favour of the previous complete one.

    One pass over the braces with a stack (linear time): the text is model output, and a hostile answer of 50,000
    unclosed `\\boxed{` cost 12 s when each box was matched by its own scan to the end.
    """
    if not any(opener in text for opener in BOX_OPENERS):
        return None  # the common text without a box: a C-speed scan
    open_at: list[int] = []  # where the content of each open brace starts; -1 for a plain brace
    best = None  # (content start, content end) of the closed box that starts last
    for match in BRACE_RE.finditer(text):
        if match.group() == "}":
            if open_at:
                start = open_at.pop()
                if start >= 0 and (best is None or start > best[0]):
                    best = (start, match.start())
        else:
            open_at.append(match.end() if len(match.group()) > 1 else -1)
    return None if best is None else text[best[0] : best[1]]


def gold_for_parsing(gold: str) -> str:
    """The gold as math-verify should see it: a solution's last box (or last group of boxes side by side, which
    math-verify reads as one set), a GSM8K final line, or a bare answer boxed."""
    if GSM8K_MARKER in gold:
        gold = gold.rsplit(GSM8K_MARKER, 1)[1]
    group = gold_group_text(gold)
    if group is not None:
        return group
    boxed = last_boxed(gold)
    if boxed is not None:
        return "\\boxed{" + boxed + "}"
    if LATEX_ENV_RE.search(gold):
        return gold
    return "\\boxed{" + gold.strip() + "}"


def _has_sympy(parsed: list) -> bool:
    """math-verify returns sympy objects plus a raw-string fallback; only the former make a real comparison."""
    from sympy import Basic, MatrixBase  # ~1 s to import; only where math is checked

    return any(isinstance(item, Basic | MatrixBase) for item in parsed)


def check_math(gold: str | None, answer: str | None, extraction: str, timeout_seconds: int) -> Verdict:
    """One math verdict. Runs in a worker process (or the main thread): math-verify's timeouts are SIGALRM-based,
    which only works in the main thread of a process.
    """
    if gold is None or not gold.strip():
        return Verdict(None, "unverified", details="no gold answer")
    answer = answer or ""
    gold = one_answer_gold(gold, timeout_seconds, _compare)
    several = check_several_boxes(gold, answer, timeout_seconds, _compare)  # `\boxed{1}, \boxed{2}` answers
    if several is not None:
        return several
    boxed = last_boxed(answer)
    if boxed is not None and boxed.strip():
        shown, lenient = boxed, False
    elif boxed is not None and extraction != "lenient":
        return Verdict(False, "no_final_answer", details="the last \\boxed{} of the answer is empty")
    elif extraction == "lenient" and answer.strip():
        # Weak teachers also write "within \\boxed{} is 1.5": an empty box is no box, so read the text instead.
        shown, lenient = lenient_tail(answer), True
    else:
        return Verdict(False, "no_final_answer", details="no \\boxed{} in the answer")
    if not lenient and len(shown) > MAX_BOXED_CHARS:
        details = f"the last \\boxed{{}} holds {len(shown):,} characters, more than the {MAX_BOXED_CHARS:,} compared"
        return Verdict(False, "answer_too_long", details=details)
    return _compare(gold, shown, lenient, timeout_seconds)


def lenient_tail(answer: str) -> str:
    """The end of an answer that lenient extraction reads: at most LENIENT_TAIL_CHARS, starting at a word."""
    if len(answer) <= LENIENT_TAIL_CHARS:
        return answer
    tail = answer[-LENIENT_TAIL_CHARS:]
    space = re.search(r"\s", tail[:100])  # not from the middle of a number: "12345" cut to "345" would be read
    return tail[space.end() :] if space else tail


# Samples of one prompt share its gold and mostly agree on the final answer (R1 drew 4-16 per prompt), and parsing
# is most of math-verify's cost: each worker remembers recent parses and verdicts. Verdicts are immutable and
# depend only on these arguments, so a remembered one is exactly the one that would be computed again.
MATH_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=MATH_CACHE_SIZE)
def _compare(gold: str, shown: str, lenient: bool, timeout_seconds: int) -> Verdict:
    """The verdict for a gold and a final answer (the box's content, or with `lenient` the answer's tail)."""
    from math_verify import verify  # imports sympy (~1 s); only where math is checked
    from math_verify.errors import TimeoutException  # imports sympy (~1 s); only where math is checked

    try:
        gold_parsed = _parse(gold_for_parsing(gold), True, timeout_seconds)
    except TimeoutException:
        return Verdict(None, "timeout", details=f"parsing the gold {_clip(gold)!r}")
    if not _has_sympy(gold_parsed):
        return Verdict(None, "unverified", details=f"math-verify cannot parse the gold {_clip(gold)!r}")
    # Lenient: math-verify's own extraction over the answer's tail: "final answer is"/"answer:" anchors first, then
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
        from math_verify.errors import TimeoutException  # imports sympy (~1 s); only where math is checked

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

    Verdicts: (True, "ok"); (False, "wrong_answer"); (False, "no_final_answer"); (False, "answer_too_long") when the
    final box holds more than MAX_BOXED_CHARS (1,000) characters; (None, "unverified") when the gold is missing or
    math-verify cannot parse it (could not check, which is not a failure); (None, "timeout").

    Run time: finding the box is one linear pass, and math-verify (whose parser is superlinear) sees at most the
    box's 1,000 characters, or with lenient extraction the answer's last LENIENT_TAIL_CHARS (2,000), each parse and
    comparison under timeout_seconds; so a hostile megabyte costs what a normal answer costs.

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
        if extraction not in EXTRACTIONS:
            raise DistillError(
                f"verifier `math`: extraction must be `boxed` or `lenient`, got {extraction!r}"
                f"{near_hint(extraction, EXTRACTIONS)}"
            )
        if not isinstance(timeout_seconds, int | float) or timeout_seconds <= 0:
            raise DistillError(f"verifier `math`: timeout_seconds must be a positive number, got {timeout_seconds!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 0):
            raise DistillError(f"verifier `math`: workers must be 0 or more, got {workers!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise DistillError(f"verifier `math`: chunk_size must be at least 1, got {chunk_size!r}")
        if start_method not in START_METHODS:
            raise DistillError(
                f"verifier `math`: start_method must be spawn, forkserver or fork, got {start_method!r}"
                f"{near_hint(start_method, START_METHODS)}"
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
        return sample.get("gold"), reasoning_and_answer(sample)[1]

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
