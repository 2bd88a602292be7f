"""Answers written as several boxes: `\\boxed{1}, \\boxed{2}, \\boxed{3}` (common in Numina- and OpenThoughts-style
data), compared as a whole where the gold has several parts.

Reading only the last box rejects such answers, and cuts a gold with several boxes to its last one (17 of the 269
equivalence cases of Math-Verify's own test set were false rejects for this reason). Which boxes belong together
is math-verify's rule (NEAR_CHARS below): boxes close together, or joined by "and", "or", a comma or a semicolon
(`\\(\\boxed{1}\\) and \\(\\boxed{-2}\\)`), make one answer of several parts; boxes further apart are separate
statements, and the last group is the answer (`\\boxed{1} no no no no no \\boxed{2}` means 2). A group that repeats
one part is that one part: a worked solution that boxes its answer twice (`so \\boxed{4}. Final: \\boxed{4}`) means 4.

Where the gold has several parts, or the gold is a list (`1, 2, 3` or a set in braces `\\{1,2,3\\}`) and the answer
has several boxes, the parts are matched as a set: each gold part to a distinct answer part, by the same
math-verify comparison as a single answer. A gold with one part keeps the last-box rule, so an answer that boxed
intermediate results is still judged by its final box. An answer without any box is left to the caller (strict:
no final answer; lenient: math-verify's extraction against the whole gold group).
"""

import re

from distill.filter.verifiers.base import Verdict

BOX_RE = re.compile(r"\\(?:boxed|fbox)\{|[{}]")
MAX_PARTS = 20  # more parts than any real answer: a hostile answer of 10,000 boxes is not compared pairwise
# Which boxes form one answer, as math-verify decides it (latex2sympy2_extended's extract_boxed_content, walking
# back from the last box): the box before joins the group when fewer than NEAR_CHARS characters stand between them,
# or fewer than SEPARATED_CHARS holding a separator (and, or, a comma or semicolon) and the two boxes differ.
NEAR_CHARS = 10
SEPARATED_CHARS = 70
SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
# A set written in braces around the whole list: `\{1, 2\}`, `\left\{1, 2\right\}` or plain `{1, 2}`.
SET_RE = re.compile(r"^(?:\\left\s*)?\\?\{(.*?)(?:\\right\s*)?\\?\}$", re.DOTALL)


def box_spans(text: str) -> list[tuple[int, int, int]]:
    """(box start, content start, content end) of every outermost balanced `\\boxed{...}`/`\\fbox{...}`, in order
    (one linear pass)."""
    if "\\boxed{" not in text and "\\fbox{" not in text:
        return []
    stack: list[tuple[int, int]] = []  # (opener start, content start) of each open brace; content -1 for a brace
    found: list[tuple[int, int, int]] = []
    for match in BOX_RE.finditer(text):
        if match.group() == "}":
            if stack:
                start, content = stack.pop()
                if content >= 0 and not any(c >= 0 for _, c in stack):  # a box not inside another box
                    found.append((start, content, match.start()))
        else:
            stack.append((match.start(), match.end() if len(match.group()) > 1 else -1))
    return found


def all_boxed(text: str) -> list[str]:
    """The contents of every outermost balanced `\\boxed{...}`/`\\fbox{...}` in `text`, in order (linear time)."""
    return [text[a:b] for _, a, b in box_spans(text)]


def last_group(text: str) -> list[str]:
    """The contents of the last group of boxes that stand side by side (see the module doc), each part once."""
    spans = box_spans(text)
    if not spans:
        return []
    first = len(spans) - 1
    while first > 0:
        (_, a, b), (start, c, d) = spans[first - 1], spans[first]
        between = text[b + 1 : start]
        near = len(between) < NEAR_CHARS
        if not near and not (
            len(between) < SEPARATED_CHARS and SEPARATOR_RE.search(between) and text[a:b] != text[c:d]
        ):
            break
        first -= 1
    parts: list[str] = []
    seen: set[str] = set()
    for _, a, b in spans[first:]:
        key = "".join(text[a:b].split())
        if key not in seen:  # a solution that boxes its answer twice gives one answer, not two parts
            seen.add(key)
            parts.append(text[a:b])
    return parts


def split_parts(text: str) -> list[str]:
    """`1, 2, 3` -> ["1", "2", "3"]; a set in braces around the whole list (`\\{1,2,3\\}`, `{1,2,3}`) is split the
    same way; commas inside brackets or inner braces (`(1, 2)`, `x \\in \\{1,2\\}`) do not split."""
    text = text.strip().strip("$").strip()
    braced = SET_RE.match(text)
    if braced and _balanced(braced.group(1)):
        text = braced.group(1)
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


def _balanced(text: str) -> bool:
    """Whether the braces of `text` pair up: `{1}, {2}` is two braced parts, not a set holding `1}, {2`."""
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


def gold_group_text(gold: str) -> str | None:
    """The gold's last group of boxes as math-verify reads several boxes (one set), None when it has one part."""
    group = last_group(gold)
    if len(group) < 2:
        return None
    return ", ".join("\\boxed{" + part + "}" for part in group)


def one_answer_gold(gold: str, timeout_seconds: int, compare) -> str:
    """The gold, or where its last group of boxes gives one answer in several forms (`\\boxed{15\\frac{39}{40}}, or
    \\boxed{\\frac{639}{40}}`) that answer alone: boxes side by side are a set, as math-verify reads them (sympy's
    FiniteSet keeps one of equal values), and a set of one is a single answer, judged by the last-box rule."""
    group = last_group(gold)
    if len(group) < 2 or len(group) > MAX_PARTS:
        return gold
    for part in group[1:]:
        if not compare(group[0], part, False, timeout_seconds).passed:
            return gold
    return "\\boxed{" + group[0] + "}"


def check_several_boxes(gold: str, answer: str, timeout_seconds: int, compare) -> Verdict | None:
    """The verdict when gold or answer has several parts; None to fall back to the last-box comparison.

    `compare(gold, shown, lenient, timeout)` is the math verifier's single-answer comparison.
    """
    gold_boxes = last_group(gold)
    answer_boxes = last_group(answer)
    if not answer_boxes:
        return None  # no box in the answer: the caller's rule (strict: no final answer; lenient: read the text)
    final = len(gold_boxes) > 1  # a gold of several boxes is judged here; a split gold only when all parts match
    if final:
        gold_parts = gold_boxes
    elif len(answer_boxes) > 1:
        gold_parts = split_parts(gold_boxes[0] if gold_boxes else gold)
        if len(gold_parts) < 2:
            return None
    else:
        return None
    answer_parts = answer_boxes if len(answer_boxes) > 1 else split_parts(answer_boxes[0])
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
