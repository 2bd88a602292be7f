"""Split a teacher's assistant turn into chain of thought (`reasoning`) and final `answer`."""

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(slots=True)
class Trace:
    reasoning: str
    answer: str
    think_closed: bool  # False when a think block was opened and never closed (truncated trace)


def parse_trace(completion: str) -> Trace:
    """Parse the whole assistant turn (prefill included).

    Four shapes occur in practice:
    - `<think>R</think>A`: the normal case.
    - `R</think>A`: the chat template prefilled `<think>` (DeepSeek-R1's does), so the model never wrote it.
    - `<think>R` with no closing tag: the sample ran out of tokens inside its reasoning.
    - no tags at all: a model that does not think out loud; everything is the answer.
    """
    open_at = completion.find(THINK_OPEN)
    close_at = completion.find(THINK_CLOSE)
    if close_at != -1 and (open_at == -1 or open_at > close_at):
        return Trace(completion[:close_at].strip(), completion[close_at + len(THINK_CLOSE) :].strip(), True)
    if open_at != -1:
        body = completion[open_at + len(THINK_OPEN) :]
        close_at = body.find(THINK_CLOSE)
        if close_at == -1:
            return Trace(body.strip(), "", False)
        return Trace(body[:close_at].strip(), body[close_at + len(THINK_CLOSE) :].strip(), True)
    return Trace("", completion.strip(), True)


def assemble_completion(result_text: str, prefill: str, server_reasoning: str | None) -> str:
    """The whole assistant turn as the model produced it.

    Servers with a reasoning parser (vLLM's `reasoning`, DeepSeek's `reasoning_content`) hand the chain of
    thought back apart from the content; we put the think block back so every row has one raw form.
    """
    if server_reasoning is not None:
        return f"{THINK_OPEN}\n{server_reasoning.strip()}\n{THINK_CLOSE}\n\n{result_text.strip()}"
    return prefill + result_text


# What a complete answer ends on, once its last characters that close something are set aside: a sentence end.
_SENTENCE_END = frozenset(".!?。！？…")
# Characters that close something; an answer may end on any of them after its last word or sentence end
# (`\\boxed{5}`, `$x = 2$`, `**42**`, `(see above).`, `"done."`, a table's `|`).
_CLOSERS = frozenset(")]}$*_`'\"”’|>")
# An answer that ends on a number is complete when its last line states the answer: "#### 18" (GSM8K), "The answer
# is 42", "Answer: 7", or the number alone; elsewhere a number is as likely the middle of a formula ("2+1=3 bolts").
_FINAL_NUMBER_LINE = re.compile(
    r"(?:^|####|\banswer\b[^\n]{0,40}?)\s*[-+]?\$?\s*[\d.,/]*\d\s*(?:%|\\%)?$", re.IGNORECASE
)
_FENCE = "```"


def truncation_from_text(completion: str) -> str | None:
    """Why a trace whose finish_reason is unknown (imported traces rarely keep it) looks cut off, None if complete.

    Cut: a `<think>` opened and never closed; nothing after `</think>`; an answer with an open brace, `$$`, `\\[`,
    `\\(`, code fence or `**`; an answer whose last character, once closing marks are set aside (brackets, `$`, `*`,
    quotes), is not a sentence end (`.`, `!`, `?`) or a closing mark itself, or is a number on a line that does not
    state the answer ("The answer is 42" and "#### 18" are complete). A trace cut at a random token mostly stops
    mid-word, mid-sentence or mid-formula; a complete answer ends on a boxed answer, a full stop, a closing fence.
    benchmarks/truncation.py measures the rule on complete traces and their random cuts.
    """
    trace = parse_trace(completion)
    if not trace.think_closed:
        return "the think block is never closed"
    answer = trace.answer.rstrip()
    if not answer:
        return "nothing after </think>" if trace.reasoning else None
    if answer.endswith(_FENCE) and answer.count(_FENCE) % 2 == 0:
        return None  # a closed code block: code ends where it ends
    if answer.count(_FENCE) % 2:
        return "an open code block"
    braces = answer.replace("\\{", "").replace("\\}", "")  # literal braces: `\left\{ ... \right.` is one
    if braces.count("{") > braces.count("}"):
        return "an open brace"
    if answer.count("$$") % 2:
        return "an open $$"
    for opener, closer in (("\\[", "\\]"), ("\\(", "\\)")):
        if answer.count(opener) > answer.count(closer):
            return f"an open {opener}"
    if answer.count("**") % 2:
        return "an open ** (bold)"
    if _open_dollar(answer):
        return "an open $"
    end = len(answer)
    while end and answer[end - 1] in _CLOSERS:
        end -= 1
    if end < len(answer):
        if end and answer[end - 1] in ",:;":  # "**Find the common factors:**": a heading of what never came
            return f"stops after a heading: {_tail(answer)!r}"
        return None  # ends on a closing mark: a box, a formula, bold, a bracket
    last = answer[-1]
    if last in _SENTENCE_END:
        return None
    if last.isdigit() or last == "%":
        line = answer.rsplit("\n", 1)[-1][-200:]  # a bounded tail: the search is not linear in a line of digits
        return None if _FINAL_NUMBER_LINE.search(line) else f"stops on a number mid-line: {_tail(line)!r}"
    return f"stops mid-sentence: {_tail(answer)!r}"


def truncated_from_text(completion: str) -> bool:
    """Whether a trace whose finish_reason is unknown was cut off (see truncation_from_text)."""
    return truncation_from_text(completion) is not None


def _open_dollar(text: str) -> bool:
    """Whether the text ends inside inline math: an odd number of single `$` (not `\\$` or `$$`) on its last line, and
    after the last
    one no word of prose (three letters or more, LaTeX commands aside), which a currency sign is followed by ("she
    pays $5 for it.") and an open formula ("so $x = \\frac{1}{2") is not."""
    text = text.rsplit("\n", 1)[-1].replace("\\$", "").replace("$$", "")  # inline math does not span lines
    if text.count("$") % 2 == 0:
        return False
    after = re.sub(r"\\[A-Za-z]+", " ", text[text.rindex("$") + 1 :])
    return not re.search(r"[A-Za-z]{3,}", after)


def _tail(text: str, chars: int = 30) -> str:
    return text[-chars:].split("\n")[-1]
