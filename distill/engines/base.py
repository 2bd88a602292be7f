"""The engine interface: every backend turns chat requests into results, one result per request."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The sampling defaults, written once: R1's (temperature 0.6, top-p 0.95, a 32k-token budget). The stage configs
# (distill/config.py) and the command-line help take them from here.
TEMPERATURE = 0.6
TOP_P = 0.95
MIN_P = 0.0  # off
MAX_TOKENS = 32768


@dataclass(slots=True)
class Sampling:
    """Sampling parameters shared by every engine."""

    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    max_tokens: int = MAX_TOKENS
    stop: list[str] = field(default_factory=list)
    min_p: float = MIN_P  # tokens below min_p x the most likely token's probability are never drawn
    logprobs: int = 0  # the teacher's top-k log-probs at every completion token (0: none), see Result


@dataclass(slots=True)
class Request:
    """One sample to draw: the chat `messages`, and an optional start of the assistant turn (`prefill`)."""

    messages: list[dict]
    prefill: str = ""
    # A stable name for the request (the run passes the sample id): an engine that keeps work across runs
    # (openai-batch's submitted batches) recognises a request it already sent by it.
    key: str = ""


@dataclass(slots=True)
class Result:
    """What an engine returns for one request.

    `text` is what the model wrote after the prefill. `reasoning` is set only when the server already split
    the chain of thought out (vLLM's `reasoning`, DeepSeek's `reasoning_content`). `error` is
    "<kind>: <message>" when the request failed for good; the run records it instead of stopping.
    """

    text: str = ""
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Of completion_tokens, those spent on the chain of thought; of prompt_tokens, those the server read from its
    # prompt cache (billed cheaper). None: not reported.
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    # Where the counts come from: "server" (the API's usage), "engine" (an in-process engine's own token ids);
    # the run adds "counted" (tokenized from the text here) or "mixed" when it fills in what is missing.
    token_source: str | None = None
    error: str | None = None
    # With Sampling.logprobs = k: the generated tokens (after the prefill) as ids of the teacher's vocabulary, and at
    # each of them the teacher's k most likely next tokens, most likely first, with their log-probabilities at
    # temperature 1 (the model's own distribution, before temperature, top-p or min-p). Aligned with `text`:
    # decoding `token_ids` gives it back.
    token_ids: list[int] | None = None
    top_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None


class Engine(Protocol):
    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, Result]]:
        """Yield (index into `requests`, result) for every request, in any order, as results complete."""
        ...

    def close(self) -> None: ...


def set_logprobs(result: Result, tokenizer, token_ids: list, top_ids: list, top_logprobs: list) -> None:
    """Store the log-probs on `result`, cut to its text: an engine that stops on a stop string cuts the string from
    the text but not from the tokens, so trailing tokens that decode past the text are dropped. Special tokens (the
    end-of-sequence token the teacher chose) decode to nothing and stay: when to stop is part of what it teaches."""
    n = len(token_ids)
    while n and len(tokenizer.decode(token_ids[:n], skip_special_tokens=True)) > len(result.text):
        n -= 1
    result.token_ids = [int(t) for t in token_ids[:n]]
    result.top_ids = [[int(t) for t in ids] for ids in top_ids[:n]]
    result.top_logprobs = [[float(v) for v in values] for values in top_logprobs[:n]]
