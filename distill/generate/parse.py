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


# Words a sentence does not end on: an answer stopping on one was cut off.
_DANGLING_WORDS = frozenset(
    "a an the and or but of to in on at by for with from is are was were be that which this as if then so "
    "because since therefore thus we let".split()
)
_DANGLING_TAIL = re.compile(r"[,:;=+\-*/^(\[{\\]$")


def truncated_from_text(completion: str) -> bool:
    """Whether a trace whose finish_reason is unknown (imported traces rarely keep it) was cut off.

    Cut: a `<think>` opened and never closed; an answer with more `{` than `}` or an odd number of `$$`; an
    answer ending on a comma, operator, open bracket or a word no sentence ends on ("the", "and", "of", ...).
    An answer ending without a full stop is not enough: "The answer is \\boxed{5}" is complete.
    """
    trace = parse_trace(completion)
    if not trace.think_closed:
        return True
    answer = trace.answer.rstrip()
    if not answer:
        return bool(trace.reasoning)  # thought it through and then said nothing: cut right after </think>
    if answer.count("{") > answer.count("}") or answer.count("$$") % 2:
        return True
    if _DANGLING_TAIL.search(answer):
        return True
    last_word = re.search(r"([A-Za-z]+)$", answer)
    return bool(last_word) and last_word.group(1).lower() in _DANGLING_WORDS
