"""What a run tells a remote engine while it sends: stop sending (a Ctrl-C, SIGTERM), and a budget to keep to.

The run (distill/generate/run.py) owns one RunControl; the openai engines read it from their sender thread. The
in-process engines (vllm, transformers) take none: they have nothing in flight worth waiting for, so a Ctrl-C
stops them at once.
"""

import threading
import time

from distill.engines.base import Request
from distill.engines.usage import Budget

STOP_TIMEOUT = 30.0  # seconds a stop waits for requests in flight before it cancels them


class RunControl:
    def __init__(self, budget: Budget | None = None, stop_timeout: float = STOP_TIMEOUT):
        self.budget = budget
        self.stop_timeout = stop_timeout
        self._stop = threading.Event()
        self.stop_at: float | None = None
        self.reason: str | None = None  # "interrupt", or the budget's "budget" / "max_total_tokens"
        self.in_flight = 0  # requests (or batches) the engine has out: shown when a stop waits for them
        self.waiting_on = "requests"
        self.notes: list[str] = []  # what the engine wants said when the run stops (batches left running)

    def request_stop(self, reason: str = "interrupt") -> None:
        if not self._stop.is_set():
            self.reason = reason
            self.stop_at = time.monotonic()
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def past_deadline(self) -> bool:
        """True once a stop has waited stop_timeout seconds for requests in flight."""
        return self.stop_at is not None and time.monotonic() - self.stop_at >= self.stop_timeout

    def reserve(self, key, request: Request, max_tokens: int) -> str:
        """The budget's answer for one request ("ok", "wait", "no"); "ok" without a budget. A refusal stops the run."""
        if self.budget is None or not self.budget.active:
            return "ok"
        verdict = self.budget.reserve(key, request, max_tokens)
        if verdict == "no":
            self.request_stop(self.budget.reached or "budget")
        return verdict

    def release(self, key) -> None:
        if self.budget is not None:
            self.budget.release(key)
