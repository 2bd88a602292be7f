"""Finding a server's rate limit while sending to it: an adaptive number of requests in flight, and pacing.

- The window (requests in flight) starts below --max-concurrency and grows while requests succeed: by one per
  success at first (it doubles every round trip, TCP's slow start), then by one per round trip after the first
  429 (additive increase). A 429 halves it, once per window of requests (multiplicative decrease), and its
  Retry-After holds every new request back, not just the one refused: the limit is the account's.
- OpenAI-style servers say how much of the limit is left in `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
  and so how fast they refill it: (limit - remaining) / reset. Once that rate is known, requests are paced to keep
  about TARGET_SHARE of the limit in reserve: at the refill rate when that much is left, faster when more is (the
  surplus is spent), slower when less is. The reserve absorbs the jitter of real timing, so a rate-limited run
  holds the server's rate with few 429s, where a window alone saws around it (halving at every 429).
- A server that sends no such headers (only 429s) gets the same pacing at a rate found by AIMD on the rate
  itself: cut to RATE_CUT of the rate sent recently at a 429 (once per window of requests); after the first cut
  up by RATE_START_GROWTH of itself per success (the first estimate rests on a short history), after a second
  by RATE_GROWTH requests/s per success (about that share of itself a second).
"""

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass

INITIAL_WINDOW = 16
TARGET_SHARE = 0.2  # of a limit kept in reserve while pacing
GAIN = 2.0  # pace faster by this much per unit of the limit's share above the reserve (slower below it)
HOLD_CAP = 60.0  # the most one Retry-After holds every request back
RATE_CUT = 0.7
RATE_START_GROWTH = 1.1
RATE_GROWTH = 0.05
RECENT = 2.0  # seconds of sends that say the rate a 429 answered
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds in a reset header: OpenAI's "1s", "6m0s", "20ms", "1h2m3.5s", or a plain number of seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


@dataclass(slots=True)
class RateHeaders:
    """One response's view of a limit: how big it is, how much is left, seconds until it is full again."""

    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None

    @property
    def refill_interval(self) -> float | None:
        """Seconds per unit the server gives back; None when the headers do not say."""
        if not self.limit or self.remaining is None or not self.reset:
            return None
        missing = self.limit - self.remaining
        return self.reset / missing if missing > 0 else None

    @property
    def share_left(self) -> float | None:
        if not self.limit or self.remaining is None:
            return None
        return self.remaining / self.limit


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def read_rate_headers(headers, kind: str) -> RateHeaders:
    """`kind` "requests" or "tokens", from `x-ratelimit-limit-<kind>` and its remaining and reset headers."""
    get = headers.get
    return RateHeaders(
        _number(get(f"x-ratelimit-limit-{kind}")),
        _number(get(f"x-ratelimit-remaining-{kind}")),
        parse_duration(get(f"x-ratelimit-reset-{kind}")),
    )


class AdaptiveLimiter:
    """The window and pacing of one engine; its learned state carries from one batch of requests to the next."""

    def __init__(self, max_concurrency: int, initial: int = INITIAL_WINDOW):
        self.max = max_concurrency
        self.window = float(min(max_concurrency, initial))
        self.slow_start = True
        self.in_flight = 0
        self.sent = 0  # attempts started
        self._cut_at = 0  # `sent` when the window was last cut: later 429s of requests sent before do not cut again
        self.hold_until = 0.0  # no attempt starts before this (monotonic seconds)
        self.interval = 0.0  # seconds between attempts while pacing; 0: not pacing
        self._refill: dict[str, float] = {}  # seconds per unit the server gives back, per kind of limit
        self._header_interval = 0.0
        self.rate: float | None = None  # requests/s found by AIMD, for servers without rate-limit headers
        self._rate_cuts = 0
        self._sends: deque = deque(maxlen=4096)  # when recent attempts started
        self._next = 0.0
        self.tokens_per_request = 0.0  # moving average, to turn a token refill rate into a request rate
        self.successes = 0
        self.rate_limited = 0
        self._cond: asyncio.Condition | None = None
        self._pacing: asyncio.Lock | None = None

    def bind(self) -> None:
        """A fresh start on the running event loop (each generate call runs its own)."""
        self._cond = asyncio.Condition()
        self._pacing = asyncio.Lock()
        self.in_flight = 0

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.window)))
            self.in_flight += 1

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    async def before_attempt(self, stopping=lambda: False) -> int:
        """Wait for a hold or the next paced slot (or until `stopping()`); returns the attempt's sequence number.

        One waiter at a time (the others queue on a lock, first come first served) looks at the clock, in short
        sleeps: a slot is never booked ahead, so a pace that slows down applies to the very next request.
        """
        async with self._pacing:
            while True:
                now = time.monotonic()
                start = max(self.hold_until, self._next if self.interval else now)
                if start <= now or stopping():
                    break
                await asyncio.sleep(min(start - now, 0.05))
            if self.interval:
                self._next = now + self.interval
        self.sent += 1
        self._sends.append(now)
        return self.sent

    async def succeeded(self, headers, tokens: int | None = None) -> None:
        self.successes += 1
        if tokens:
            average = self.tokens_per_request
            self.tokens_per_request = 0.9 * average + 0.1 * tokens if average else float(tokens)
        low = self._read(headers)
        if not low:  # grow only while the server says there is room (or says nothing)
            self.window = min(self.max, self.window + (1.0 if self.slow_start else 1.0 / self.window))
        if self.rate is not None:
            self.rate = self.rate * RATE_START_GROWTH if self._rate_cuts == 1 else self.rate + RATE_GROWTH
            self._set_interval()
        async with self._cond:
            self._cond.notify_all()

    def rate_limited_by(self, seq: int, retry_after: float | None, headers) -> None:
        self.rate_limited += 1
        self._read(headers)
        if seq > self._cut_at:
            self.window = max(1.0, self.window / 2)
            self.slow_start = False
            self._cut_at = self.sent
            if not self._refill:  # no headers to pace by: pace by AIMD on the rate
                now = time.monotonic()
                recent = sum(1 for t in self._sends if t >= now - RECENT) / RECENT
                self.rate = max(0.1, RATE_CUT * (self.rate or recent or 1.0))
                self._rate_cuts += 1
                self._set_interval()
        if retry_after:
            self.hold_until = max(self.hold_until, time.monotonic() + min(retry_after, HOLD_CAP))

    def _read(self, headers) -> bool:
        """Pace from the rate-limit headers; True while a limit is below its reserve (the window stops growing)."""
        if headers is None:
            return False
        low = False
        intervals = []
        for kind, units_per_request in (("requests", 1.0), ("tokens", self.tokens_per_request)):
            limit = read_rate_headers(headers, kind)
            if limit.refill_interval:
                self._refill[kind] = limit.refill_interval
            share, refill = limit.share_left, self._refill.get(kind)
            if share is None or refill is None or not units_per_request:
                continue
            low |= share < TARGET_SHARE
            factor = max(0.2, 1.0 + GAIN * (share - TARGET_SHARE))
            intervals.append(refill * units_per_request / factor)
        self._header_interval = max(intervals, default=0.0)
        self._set_interval()
        return low

    def _set_interval(self) -> None:
        interval = self._header_interval or (1.0 / self.rate if self.rate else 0.0)
        if interval and not self.interval:
            self._next = time.monotonic()
        self.interval = interval
