"""The openai engine: an asyncio client for any OpenAI-compatible /v1/chat/completions server.

Works with vLLM's and SGLang's OpenAI servers and with hosted APIs (DeepSeek, ...). Requests run concurrently on
an event loop in a background thread; `generate` hands each result to the caller as soon as it completes.
Transient failures (5xx, dropped connections, timeouts, truncated bodies) are retried with exponential backoff; a
request that still fails becomes an error row. A 429 is the server's rate limit, not a failure of the request:
the number of requests in flight adapts to it (distill/engines/ratelimit.py) and the request waits its turn again,
for as long as some request succeeds within --rate-limit-timeout; a server that answers nothing but 429s for that
long stops the run. Bad credentials or a wrong model/URL stop the run, since every other request would fail the
same way. Before the first request the engine waits (--server-wait, visibly) for a server that is still starting.
"""

import asyncio
import email.utils
import json
import logging
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from distill.engines.base import Request, Result, Sampling
from distill.engines.control import RunControl
from distill.engines.ratelimit import AdaptiveLimiter
from distill.errors import DistillError, MissingDependency

logger = logging.getLogger(__name__)

# 408 and every 5xx are the server or a proxy in front of it having trouble; 429 is rate limiting.
RETRY_STATUSES = frozenset({408, 429})
# Bad input for this one request (too long, invalid parameters): retrying cannot help, other requests may work.
BAD_REQUEST_STATUSES = frozenset({400, 413, 422})
# Never sleep longer than this for one Retry-After, whatever the server asks for.
RETRY_AFTER_CAP = 300.0
ERROR_MESSAGE_CHARS = 300
CONTEXT_LENGTH_RE = re.compile(
    r"context.length|maximum context|too long|max_model_len|maximum model length|prompt is too", re.IGNORECASE
)
# A 400 that says max_tokens itself is over the server's limit (vLLM, DeepSeek): every request would get it.
MAX_TOKENS_RE = re.compile(r"cannot be greater than max_model_len|valid range of max_tokens", re.IGNORECASE)
RATE_LIMIT_TIMEOUT = 300.0  # seconds of nothing but 429s before a run stops
SERVER_WAIT = 600.0  # seconds to wait for a starting server (a 70B model loads in minutes)
READY_PROBE_TIMEOUT = 10.0
READY_NOTE_EVERY = 10.0  # seconds between "still waiting" lines
BUDGET_POLL = 0.05  # seconds between a waiting request's looks at the budget


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `kind` and `message` become the error if all attempts do."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None, headers=None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.headers = headers  # the response's, for the rate-limit headers of a 429


def _import_aiohttp():
    try:
        import aiohttp  # ~1 s to import; only for the openai engine
    except ImportError as exc:
        raise MissingDependency("aiohttp", "pip install aiohttp") from exc
    return aiohttp


def safe_url(url: str) -> str:
    """The URL without user:password@ or a query string, either of which may carry a secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(raw: bytes) -> str:
    """The human-readable message in an error body: OpenAI's {"error": {"message"}}, vLLM's, FastAPI's, or text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            if data.get(key):
                return data[key] if isinstance(data[key], str) else json.dumps(data[key])
    return " ".join(text.split())


def parse_completion(raw: bytes) -> Result:
    """A Result from a chat completion body; raises _Retryable("bad_response") when the body is not one."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content") or ""
        # DeepSeek's API names the chain of thought `reasoning_content`; vLLM's reasoning parsers, `reasoning`.
        reasoning = message.get("reasoning_content")
        if reasoning is None:
            reasoning = message.get("reasoning")
        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        result = Result(
            text=text,
            reasoning=reasoning,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            # OpenAI's details (DeepSeek, vLLM and others send some, none or all of them)
            reasoning_tokens=_count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")),
            cached_tokens=_count((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
            token_source="server" if prompt_tokens is not None and completion_tokens is not None else None,
        )
        if (choice.get("logprobs") or {}).get("content") is not None:
            add_logprobs(result, choice["logprobs"]["content"])
        return result
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        # A truncated or garbled body (a proxy cut it, the server crashed mid-write): worth another try.
        snippet = " ".join(raw[:120].decode("utf-8", errors="replace").split())
        raise _Retryable("bad_response", f"not a chat completion ({len(raw)} bytes: {snippet!r})") from None


def _count(value) -> int | None:
    """A token count from a usage field; anything but a whole number of 0 or more counts as not reported."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


TOKEN_ID_PREFIX = "token_id:"  # vLLM's form of a token with return_tokens_as_token_ids


def add_logprobs(result: Result, content: list) -> None:
    """The chat completion's `logprobs.content` ({token, logprob, top_logprobs} per generated token) on `result`.

    Tokens must come as ids (vLLM's `return_tokens_as_token_ids`, which `_body` asks for): a token string of a
    hosted API is decoded text ("Hello", " world"), which no tokenizer maps back to ids reliably. A server that
    answers with strings ignored the request, and every other answer would too: that stops the run."""

    def token_id(token: str) -> int:
        if not token.startswith(TOKEN_ID_PREFIX):
            raise DistillError(
                f"the server returned log-probs of token strings ({token!r}), not token ids: --logprobs needs a "
                "server that honours vLLM's return_tokens_as_token_ids (vllm serve); drop --logprobs for this one"
            )
        return int(token[len(TOKEN_ID_PREFIX) :])

    result.token_ids = [token_id(entry["token"]) for entry in content]
    result.top_ids = [[token_id(top["token"]) for top in entry.get("top_logprobs") or []] for entry in content]
    result.top_logprobs = [[float(top["logprob"]) for top in entry.get("top_logprobs") or []] for entry in content]


class OpenAIEngine:
    stops_gracefully = True  # generate takes a RunControl: stops, budgets

    def __init__(
        self,
        base_url: str,
        model: str | None,
        api_key: str | None = None,
        max_concurrency: int = 64,
        request_timeout: float = 600.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        api_key_env: str = "OPENAI_API_KEY",
        rate_limit_timeout: float = RATE_LIMIT_TIMEOUT,
        server_wait: float = SERVER_WAIT,
    ):
        _import_aiohttp()
        if max_concurrency < 1:
            raise DistillError(f"--max-concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise DistillError(f"--max-retries must be at least 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.api_key_env = api_key_env  # only to name the variable in error messages
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rate_limit_timeout = rate_limit_timeout
        self.server_wait = server_wait
        # The window of requests in flight starts below max_concurrency and adapts to the server's limit; what it
        # learns carries over from one generate call to the next.
        self.limiter = AdaptiveLimiter(max_concurrency)
        self._ready = False
        self._last_success = 0.0
        self._stopped: asyncio.Event | None = None  # per generate call, on its event loop
        self.model = model if model else self._discover_model()
        self.model_name = self.model

    @classmethod
    def from_config(cls, config) -> "OpenAIEngine":
        if not config.base_url:
            raise DistillError("the openai engine needs --base-url, e.g. http://127.0.0.1:8000/v1")
        api_key_env = config.api_key_env or "OPENAI_API_KEY"
        return cls(
            config.base_url,
            config.model,
            api_key=os.environ.get(api_key_env),
            max_concurrency=config.max_concurrency,
            request_timeout=config.request_timeout,
            max_retries=config.max_retries,
            api_key_env=api_key_env,
            rate_limit_timeout=config.rate_limit_timeout,
            server_wait=config.server_wait,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return (
            f"OpenAIEngine(base_url={safe_url(self.base_url)!r}, model={self.model!r}, "
            f"max_concurrency={self.max_concurrency}, api_key={key})"
        )

    def close(self) -> None:
        # Each generate call opens and closes its own session and thread; nothing stays open between calls.
        pass

    # -- generate -------------------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, control: RunControl | None = None
    ) -> Iterator[tuple[int, Result]]:
        """Yield (index, result) for every request as it completes; fatal server errors raise DistillError.

        With a `control`, a stop (or a budget refusing a request) ends the call early: no new request is sent, the
        ones in flight are awaited up to its stop_timeout, and the requests never answered are not yielded.
        """
        requests = list(requests)
        if not requests:
            return
        results: queue.Queue = queue.Queue()
        loop = asyncio.new_event_loop()
        main = loop.create_task(self._run_all(requests, sampling, results, control or RunControl()))
        thread = threading.Thread(target=_run_loop, args=(loop, main, results), name="openai-engine", daemon=True)
        thread.start()
        try:
            while True:
                kind, payload = results.get()
                if kind == "result":
                    yield payload
                elif kind == "error":
                    raise payload
                else:  # "done"
                    return
        finally:
            # Reached early when the consumer stops (generator closed, KeyboardInterrupt, fatal error):
            # cancel what is still in flight, so no request keeps running behind the caller's back.
            try:
                loop.call_soon_threadsafe(main.cancel)
            except RuntimeError:
                pass  # the loop has already finished and closed
            thread.join()

    async def _run_all(self, requests: list[Request], sampling: Sampling, results: queue.Queue, control) -> None:
        aiohttp = _import_aiohttp()
        indices = iter(range(len(requests)))
        limiter = self.limiter
        limiter.bind()
        self._stopped = asyncio.Event()  # set when the control says stop (it is a threading.Event)

        async def worker() -> None:
            # The workers share one iterator (safe: they all run on this one event loop thread).
            for index in indices:
                if control.stopping:
                    return
                request = requests[index]
                key = request.key or index
                await limiter.acquire()
                try:
                    verdict = control.reserve(key, request, sampling.max_tokens)
                    while verdict == "wait" and not control.stopping:
                        await asyncio.sleep(BUDGET_POLL)
                        verdict = control.reserve(key, request, sampling.max_tokens)
                    if verdict != "ok":
                        return
                    result = await self._complete(session, request, sampling, control)
                finally:
                    await limiter.release()
                if result is None:  # a stop came before it was answered: the run redoes it when resumed
                    control.release(key)
                    return
                results.put(("result", (index, result)))

        # max_concurrency workers at most; the limiter's window decides how many of them have a request out, so
        # memory stays flat however many requests there are (one task per request would hold them all at once).
        connector = aiohttp.TCPConnector(limit=self.max_concurrency)
        async with self._session(connector) as session:
            if not self._ready:
                await self._wait_until_ready(session, control)
                if control.stopping:
                    return
            self._last_success = time.monotonic()
            workers = [asyncio.ensure_future(worker()) for _ in range(min(self.max_concurrency, len(requests)))]
            try:
                pending = set(workers)
                while pending:
                    done, pending = await asyncio.wait(pending, timeout=0.1, return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        task.result()  # re-raise a fatal error (bad credentials, wrong model) in this task
                    control.in_flight = limiter.in_flight
                    if control.stopping:
                        self._stopped.set()
                    if control.stopping and control.past_deadline():
                        break  # waited long enough for the requests in flight: the rest are cancelled below
            finally:
                # On a fatal error or when the consumer stops: stop the other workers before the session closes.
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    def _session(self, connector=None):
        aiohttp = _import_aiohttp()
        headers = {}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)

    def _body(self, request: Request, sampling: Sampling) -> dict:
        messages = list(request.messages)
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": 1,
        }
        if sampling.min_p:  # vLLM, SGLang and llama.cpp servers take it; sent only when set, for APIs that do not
            body["min_p"] = sampling.min_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.logprobs:  # token ids, not strings (see add_logprobs)
            body.update(logprobs=True, top_logprobs=sampling.logprobs, return_tokens_as_token_ids=True)
        if request.prefill:
            # vLLM/SGLang extensions: continue the given assistant turn instead of starting a new one.
            messages.append({"role": "assistant", "content": request.prefill})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    async def _complete(self, session, request: Request, sampling: Sampling, control) -> Result | None:
        """One request with retries; an error Result when it fails for good, None when a stop came first."""
        body = self._body(request, sampling)
        attempt = limited = 0
        limiter = self.limiter
        while True:
            if control.stopping:
                return None
            seq = await limiter.before_attempt(lambda: control.stopping)
            if control.stopping:
                return None
            try:
                result, headers = await self._attempt(session, body)
            except _Retryable as failure:
                if failure.kind == "http_429":
                    # The server's rate limit: the window shrinks and the request waits its turn again; this is not
                    # one of its retries, but a server that answers nothing else for too long stops the run.
                    limiter.rate_limited_by(seq, failure.retry_after, failure.headers)
                    if time.monotonic() - self._last_success > self.rate_limit_timeout:
                        raise DistillError(
                            f"server at {safe_url(self.base_url)} answered only 429 (rate limited) for "
                            f"{self.rate_limit_timeout:g} s: check the account's rate limits and quota, then rerun "
                            "with --resume (or raise --rate-limit-timeout)"
                        ) from None
                    delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** min(limited, 10)))
                    if failure.retry_after is not None:
                        delay = max(delay, min(failure.retry_after, RETRY_AFTER_CAP))
                    limited += 1
                    logger.debug("rate limited, waiting %.2f s: %s", delay, self._redact(failure.message))
                    await self._pause(delay)
                    continue
                if attempt >= self.max_retries:
                    tries = attempt + 1
                    message = f"{failure.message} (gave up after {tries} attempt{'s' if tries > 1 else ''})"
                    return Result(error=self._redact(f"{failure.kind}: {message}"))
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, RETRY_AFTER_CAP))
                logger.debug("retrying in %.2f s after %s", delay, self._redact(str(failure)))
                attempt += 1
                await self._pause(delay)
                continue
            if result.error is None:
                self._last_success = time.monotonic()
                await limiter.succeeded(headers, (result.prompt_tokens or 0) + sampling.max_tokens)
            return result

    async def _pause(self, seconds: float) -> None:
        """A backoff that a stop cuts short: a request waiting to retry is not one in flight."""
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except asyncio.TimeoutError:  # noqa: UP041  (see _attempt)
            pass

    async def _attempt(self, session, body: dict) -> tuple[Result, dict | None]:
        aiohttp = _import_aiohttp()
        url = f"{self.base_url}/chat/completions"
        try:
            async with session.post(url, json=body) as response:
                status = response.status
                headers = response.headers
                retry_after = parse_retry_after(headers.get("Retry-After"))
                raw = await response.read()
        except asyncio.TimeoutError:  # noqa: UP041  (on Python 3.10 it is not the builtin TimeoutError)
            # Before ClientError: aiohttp's ServerTimeoutError is both a timeout and a connection error.
            raise _Retryable("timeout", f"no complete response within {self.request_timeout:g} s") from None
        except aiohttp.ClientPayloadError as exc:
            raise _Retryable("connection", f"response body cut short ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            # Connection refused or reset, server disconnected, ...: the server may be restarting.
            raise _Retryable("connection", f"{type(exc).__name__}: {str(exc)[:200]}") from None

        if status == 200:
            return parse_completion(raw), headers
        message = server_message(raw)[:ERROR_MESSAGE_CHARS]
        if status in (401, 403):
            raise DistillError(
                f"server at {safe_url(self.base_url)} rejected the credentials (HTTP {status}): set the API key in "
                f"${self.api_key_env} or the variable named by --api-key-env"
            )
        if status == 404:
            raise DistillError(
                f"server at {safe_url(self.base_url)} has no model `{self.model}` or no /chat/completions route "
                f"(HTTP 404: {self._redact(message[:150])}): check --model and --base-url"
            )
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(f"http_{status}", message or "no message", retry_after, headers)
        if status in BAD_REQUEST_STATUSES and MAX_TOKENS_RE.search(message):
            raise DistillError(
                f"server at {safe_url(self.base_url)} refused max_tokens={body['max_tokens']} "
                f"({self._redact(message[:200])}): lower --max-tokens"
            )
        if status in BAD_REQUEST_STATUSES:
            kind = "context_length" if CONTEXT_LENGTH_RE.search(message) else "bad_request"
            return Result(error=self._redact(f"{kind}: {message}")), headers
        return Result(error=self._redact(f"http_{status}: {message}")), headers

    # -- readiness ------------------------------------------------------------------------------------------

    async def _wait_until_ready(self, session, control: RunControl | None = None) -> bytes | None:
        """GET /models until the server answers, for up to server_wait seconds, saying so every few seconds.

        A server that is still loading its model refuses connections or answers 5xx; without this wait every
        request would fail (and be retried) while it starts. Returns the /models body when it answered 200.
        """
        aiohttp = _import_aiohttp()
        url = f"{self.base_url}/models"
        start = time.monotonic()
        noted = None  # when the last "waiting" line was printed
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=READY_PROBE_TIMEOUT)) as response:
                    status = response.status
                    raw = await response.read()
                why = f"HTTP {status}"
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:  # noqa: UP041  (see _attempt)
                status, raw = None, b""
                why = type(exc).__name__
            if status in (401, 403):
                raise DistillError(
                    f"server at {safe_url(self.base_url)} rejected the credentials (HTTP {status}): set the API key "
                    f"in ${self.api_key_env} or the variable named by --api-key-env"
                )
            # 404/405: a server without a /models route is up all the same; 408, 429, 5xx: busy or starting.
            if status is not None and status < 500 and status not in (408, 429):
                self._ready = True
                waited = time.monotonic() - start
                if noted is not None:
                    print(f"server at {safe_url(self.base_url)} is up after {waited:.0f} s", file=sys.stderr)
                return raw if status == 200 else None
            waited = time.monotonic() - start
            if waited >= self.server_wait:
                raise DistillError(
                    f"server at {safe_url(self.base_url)} did not come up within {self.server_wait:g} s ({why}): "
                    "check that it runs and --base-url, or raise --server-wait"
                )
            if control is not None and control.stopping:
                return None
            if noted is None or time.monotonic() - noted >= READY_NOTE_EVERY:
                print(
                    f"waiting for the server at {safe_url(self.base_url)} ({why}; {waited:.0f} s of "
                    f"{self.server_wait:g} s)",
                    file=sys.stderr,
                )
                noted = time.monotonic()
            await asyncio.sleep(min(1.0, max(0.05, self.server_wait / 100)))

    # -- model discovery ------------------------------------------------------------------------------------

    def _discover_model(self) -> str:
        """The first model the server lists, for servers that serve one model and callers that gave none."""
        # asyncio.run in a fresh thread works even when the caller already runs an event loop (notebooks).
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._fetch_first_model()).result()

    async def _fetch_first_model(self) -> str:
        where = safe_url(f"{self.base_url}/models")
        async with self._session() as session:
            raw = await self._wait_until_ready(session)
        try:
            if raw is None:
                raise ValueError("no /models route")
            return str(json.loads(raw)["data"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            reason = str(exc) if str(exc) == "no /models route" else "no model listed"
            raise DistillError(f"cannot read a model id from {where} ({reason}): pass --model") from None

    def _redact(self, text: str) -> str:
        # Belt and braces: a server could echo the key back in an error body.
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text


def _run_loop(loop: asyncio.AbstractEventLoop, main: asyncio.Task, results: queue.Queue) -> None:
    """The background thread: run the requests, then tell the consumer how it ended."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
        results.put(("done", None))
    except asyncio.CancelledError:
        results.put(("done", None))  # the consumer stopped early and is no longer reading
    except BaseException as exc:
        results.put(("error", exc))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
