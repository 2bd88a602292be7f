"""Tokens and what they cost: prices, a run's budget, and counting the tokens a server did not report.

Prices are settings (USD per million tokens: input, cached input, output), never a built-in list: a list of
providers' prices goes stale without anyone noticing, and a stale price is a wrong cost. Reasoning tokens are
billed as output: they are part of `completion_tokens` (OpenAI's usage says so; `reasoning_tokens` only says how
many of them were chain of thought).
"""

import sys
import threading
from dataclasses import dataclass

from distill.engines.base import Request, Result
from distill.engines.chat import render_chat
from distill.models import resolve_model

PER_MILLION = 1_000_000
# A request's prompt in tokens is at most its UTF-8 bytes (a byte-level BPE token covers at least one byte) plus
# the chat template's own tokens, which this allows generously per message: the bound a budget reserves.
TEMPLATE_TOKENS_PER_MESSAGE = 32
TEMPLATE_TOKENS = 64


@dataclass(slots=True, frozen=True)
class Prices:
    """USD per million tokens. `cached_input` (prompt tokens the server read from its cache) defaults to `input`."""

    input: float | None = None
    cached_input: float | None = None
    output: float | None = None

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(self, prompt: int | None, cached: int | None, completion: int | None) -> float | None:
        """USD for one request's tokens; None without prices."""
        if not self.known:
            return None
        prompt = prompt or 0
        cached = min(cached or 0, prompt)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = (prompt - cached) * self.input + cached * cached_price + (completion or 0) * self.output
        return usd / PER_MILLION


def prompt_bound(request: Request) -> int:
    """At most this many prompt tokens (see TEMPLATE_TOKENS_PER_MESSAGE): what a budget reserves before sending."""
    size = sum(len(str(m.get("content") or "").encode("utf-8")) for m in request.messages)
    size += len(request.prefill.encode("utf-8"))
    return size + TEMPLATE_TOKENS_PER_MESSAGE * (len(request.messages) + 1) + TEMPLATE_TOKENS


class Budget:
    """A limit in USD and/or tokens, shared by the engine's sender thread (reserve) and the run (settle).

    Before a request is sent it reserves its worst case: its prompt bound and max_tokens of output. A request that
    does not fit waits while others are in flight (their reservations come back smaller than reserved) and is
    refused once nothing is: so the spending stops before the limit is crossed, requests in flight included.
    `spent_*` start at what earlier runs into the same output paid, so a resumed run keeps to the same limit.
    """

    def __init__(
        self,
        prices: Prices,
        usd: float | None = None,
        tokens: int | None = None,
        spent_usd: float = 0.0,
        spent_tokens: int = 0,
    ):
        self.prices = prices
        self.usd = usd
        self.tokens = tokens
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self._reserved: dict = {}  # key -> (usd, tokens)
        self._lock = threading.Lock()
        self.reached: str | None = None  # "budget" or "max_total_tokens" once a request was refused for good

    @property
    def active(self) -> bool:
        return self.usd is not None or self.tokens is not None

    def worst_case(self, request: Request, max_tokens: int) -> tuple[float, int]:
        prompt = prompt_bound(request)
        return self.prices.cost(prompt, 0, max_tokens) or 0.0, prompt + max_tokens

    def reserve(self, key, request: Request, max_tokens: int) -> str:
        """ "ok" (reserved: send it), "wait" (others in flight may leave room) or "no" (the limit is reached)."""
        usd, tokens = self.worst_case(request, max_tokens)
        with self._lock:
            if self.reached:
                return "no"
            held_usd = sum(u for u, _ in self._reserved.values())
            held_tokens = sum(t for _, t in self._reserved.values())
            over = None
            if self.usd is not None and self.spent_usd + held_usd + usd > self.usd:
                over = "budget"
            elif self.tokens is not None and self.spent_tokens + held_tokens + tokens > self.tokens:
                over = "max_total_tokens"
            if over is None:
                self._reserved[key] = (usd, tokens)
                return "ok"
            if self._reserved:
                return "wait"
            self.reached = over
            return "no"

    def settle(self, key, usd: float | None, tokens: int | None) -> None:
        """A reserved request came back: count what it cost (unknown: what was reserved) and free the rest."""
        with self._lock:
            held_usd, held_tokens = self._reserved.pop(key, (0.0, 0))
            self.spent_usd += held_usd if usd is None else usd
            self.spent_tokens += held_tokens if tokens is None else tokens

    def release(self, key) -> None:
        """A reserved request was never answered (a stop): nothing spent."""
        with self._lock:
            self._reserved.pop(key, None)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._reserved)


class TokenCounter:
    """Counts tokens with the teacher's tokenizer, for servers whose usage leaves counts out.

    The tokenizer is loaded on first use, offline only (a local folder, an alias, or the Hugging Face cache); when
    none can be loaded the counts stay unknown and one warning says how to name one (--tokenizer).
    """

    def __init__(self, name: str | None):
        self.name = name
        self._tokenizer = None
        self._tried = False

    def _load(self):
        if self._tried:
            return self._tokenizer
        self._tried = True
        if not self.name:
            return None
        try:
            from transformers import AutoTokenizer  # heavy: only when a server leaves counts out

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.name), local_files_only=True)
        except Exception:  # not a local folder, not in the cache, or no tokenizer in it: counts stay unknown
            print(
                f"warning: the server left token counts out and no tokenizer for `{self.name}` is available "
                "offline: pass --tokenizer NAME|FOLDER to count them (cost and --max-total-tokens need them)",
                file=sys.stderr,
            )
        return self._tokenizer

    def text(self, text: str) -> int | None:
        tokenizer = self._load()
        if tokenizer is None:
            return None
        return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def prompt(self, request: Request) -> int | None:
        tokenizer = self._load()
        if tokenizer is None:
            return None
        if getattr(tokenizer, "chat_template", None):  # rendered bounded: the template is code from the model folder
            ids = render_chat(tokenizer, request.messages, tokenize=True, add_generation_prompt=True)
            if isinstance(ids, dict):
                ids = ids["input_ids"]
            count = len(ids)
        else:
            count = sum(self.text(str(m.get("content") or "")) for m in request.messages)
        return count + (self.text(request.prefill) if request.prefill else 0)


def fill_counts(result: Result, request: Request, reasoning_text: str | None, counter: TokenCounter | None) -> None:
    """Count what the server did not report, and say where the counts came from (`token_source`)."""
    if result.error is not None:
        return
    given = result.token_source
    counted = False
    if counter is not None and result.prompt_tokens is None:
        result.prompt_tokens = counter.prompt(request)
        counted |= result.prompt_tokens is not None
    if counter is not None and result.completion_tokens is None:
        result.completion_tokens = counter.text((result.reasoning or "") + result.text)
        counted |= result.completion_tokens is not None
    if counter is not None and result.reasoning_tokens is None and reasoning_text and given != "engine":
        result.reasoning_tokens = counter.text(reasoning_text)
        counted |= result.reasoning_tokens is not None
        # Some servers (vLLM with a reasoning parser, in some versions) leave the chain of thought out of
        # completion_tokens; more reasoning than completion tokens can only mean that.
        if result.reasoning_tokens and result.completion_tokens is not None and given == "server":
            if result.reasoning_tokens > result.completion_tokens:
                result.completion_tokens += result.reasoning_tokens
    if counted:
        result.token_source = "counted" if given is None else "mixed"
