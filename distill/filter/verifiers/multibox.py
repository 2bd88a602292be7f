"""Answers written as several boxes: `\\boxed{1}, \\boxed{2}, \\boxed{3}` (common in Numina- and OpenThoughts-style
data), compared as a whole where the gold has several parts.

Reading only the last box rejects such answers, and cuts a gold with several boxes to its last one (17 of the 269
equivalence cases of Math-Verify's own test set were false rejects for this reason). Where the gold has several
boxes, or the gold is a comma-separated list and the answer has several boxes, the parts are matched as a set:
each gold part to a distinct answer part, by the same math-verify comparison as a single answer. A gold with one
part keeps the last-box rule, so an answer that boxed intermediate results is still judged by its final box.
"""

import re

from distill.filter.verifiers.base import Verdict

BOX_RE = re.compile(r"\\(?:boxed|fbox)\{|[{}]")
MAX_PARTS = 20  # more parts than any real answer: a hostile answer of 10,000 boxes is not compared pairwise


def all_boxed(text: str) -> list[str]:
    """The contents of every outermost balanced `\\boxed{...}`/`\\fbox{...}` in `text`, in order (linear time)."""
    if "\\boxed{" not in text and "\\fbox{" not in text:
        return []
    stack: list[int] = []  # content start of each open brace; -1 for a plain brace
    found: list[tuple[int, int]] = []
    for match in BOX_RE.finditer(text):
        if match.group() == "}":
            if stack:
                start = stack.pop()
                if start >= 0 and not any(s >= 0 for s in stack):  # a box not inside another box
                    found.append((start, match.start()))
        else:
            stack.append(match.end() if len(match.group()) > 1 else -1)
    return [text[a:b] for a, b in found]


def split_parts(text: str) -> list[str]:
    """`1, 2, 3` -> ["1", "2", "3"]; commas inside brackets or braces (`(1, 2)`, `\\{1,2\\}`) do not split."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    parts = [p.strip().strip("$").strip() for p in parts]
    return [p for p in parts if p]


def check_several_boxes(gold: str, answer: str, timeout_seconds: int, compare) -> Verdict | None:
    """The verdict when gold or answer has several parts; None to fall back to the last-box comparison.

    `compare(gold, shown, lenient, timeout)` is the math verifier's single-answer comparison.
    """
    gold_boxes = all_boxed(gold)
    answer_boxes = all_boxed(answer)
    final = len(gold_boxes) > 1  # a gold of several boxes is judged here; a split gold only when all parts match
    if final:
        gold_parts = gold_boxes
    elif len(answer_boxes) > 1:
        gold_parts = split_parts(gold_boxes[0] if gold_boxes else gold)
        if len(gold_parts) < 2:
            return None
    else:
        return None
    answer_parts = answer_boxes if len(answer_boxes) > 1 else split_parts(answer_boxes[0] if answer_boxes else "")
    if len(gold_parts) > MAX_PARTS or len(answer_parts) > MAX_PARTS:
        return None
    if len(answer_parts) != len(gold_parts):
        if not final:
            return None
        details = f"{len(answer_parts)} answer part(s), the gold has {len(gold_parts)}"
        return Verdict(False, "wrong_answer", details=details)
    unmatched = list(answer_parts)
    for part in gold_parts:
        for candidate in unmatched:
            verdict = compare(part, candidate, False, timeout_seconds)
            if verdict.passed is None and verdict.reason == "unverified":
                return verdict if final else None  # a gold part math-verify cannot parse: could not check
            if verdict.passed:
                unmatched.remove(candidate)
                break
        else:
            if not final:  # "1,000" against an intermediate box and a final one: the last box decides
                return None
            return Verdict(False, "wrong_answer", details=f"no answer part equals the gold part {part[:80]!r}")
    return Verdict(True, "ok", details=f"{len(gold_parts)} parts matched as a set")
