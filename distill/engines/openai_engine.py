"""The openai engine: an asyncio client for any OpenAI-compatible /v1/chat/completions server.

Works with vLLM's and SGLang's OpenAI servers and with hosted APIs (DeepSeek, ...). Requests run concurrently on
an event loop in a background thread; `generate` hands each result to the caller as soon as it completes.
Transient failures (429, 5xx, dropped connections, timeouts, truncated bodies) are retried with exponential
backoff; a request that still fails becomes an error row. Bad credentials or a wrong model/URL stop the run,
since every other request would fail the same way.
"""

import asyncio
import email.utils
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from distill.engines.base import Request, Result, Sampling
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


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `kind` and `message` become the error if all attempts do."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def _import_aiohttp():
    try:
        import aiohttp
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
        result = Result(
            text=text,
            reasoning=reasoning,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
        if (choice.get("logprobs") or {}).get("content") is not None:
            add_logprobs(result, choice["logprobs"]["content"])
        return result
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        # A truncated or garbled body (a proxy cut it, the server crashed mid-write): worth another try.
        snippet = " ".join(raw[:120].decode("utf-8", errors="replace").split())
        raise _Retryable("bad_response", f"not a chat completion ({len(raw)} bytes: {snippet!r})") from None


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

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, Result]]:
        """Yield (index, result) for every request as it completes; fatal server errors raise DistillError."""
        requests = list(requests)
        if not requests:
            return
        results: queue.Queue = queue.Queue()
        loop = asyncio.new_event_loop()
        main = loop.create_task(self._run_all(requests, sampling, results))
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

    async def _run_all(self, requests: list[Request], sampling: Sampling, results: queue.Queue) -> None:
        aiohttp = _import_aiohttp()
        indices = iter(range(len(requests)))

        async def worker() -> None:
            # The workers share one iterator (safe: they all run on this one event loop thread).
            for index in indices:
                result = await self._complete(session, requests[index], sampling)
                results.put(("result", (index, result)))

        # A fixed pool of max_concurrency workers bounds the requests in flight, and keeps memory flat however
        # many requests there are (one task per request would hold them all at once).
        connector = aiohttp.TCPConnector(limit=self.max_concurrency)
        async with self._session(connector) as session:
            workers = [asyncio.ensure_future(worker()) for _ in range(min(self.max_concurrency, len(requests)))]
            try:
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # re-raise a fatal error (bad credentials, wrong model) in this task
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

    async def _complete(self, session, request: Request, sampling: Sampling) -> Result:
        """One request with retries; returns an error Result when it fails for good."""
        body = self._body(request, sampling)
        attempt = 0
        while True:
            try:
                return await self._attempt(session, body)
            except _Retryable as failure:
                if attempt >= self.max_retries:
                    tries = attempt + 1
                    message = f"{failure.message} (gave up after {tries} attempt{'s' if tries > 1 else ''})"
                    return Result(error=self._redact(f"{failure.kind}: {message}"))
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, RETRY_AFTER_CAP))
                logger.debug("retrying in %.2f s after %s", delay, self._redact(str(failure)))
                attempt += 1
                await asyncio.sleep(delay)

    async def _attempt(self, session, body: dict) -> Result:
        aiohttp = _import_aiohttp()
        url = f"{self.base_url}/chat/completions"
        try:
            async with session.post(url, json=body) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
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
            return parse_completion(raw)
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
            raise _Retryable(f"http_{status}", message or "no message", retry_after)
        if status in BAD_REQUEST_STATUSES and MAX_TOKENS_RE.search(message):
            raise DistillError(
                f"server at {safe_url(self.base_url)} refused max_tokens={body['max_tokens']} "
                f"({self._redact(message[:200])}): lower --max-tokens"
            )
        if status in BAD_REQUEST_STATUSES:
            kind = "context_length" if CONTEXT_LENGTH_RE.search(message) else "bad_request"
            return Result(error=self._redact(f"{kind}: {message}"))
        return Result(error=self._redact(f"http_{status}: {message}"))

    # -- model discovery ------------------------------------------------------------------------------------

    def _discover_model(self) -> str:
        """The first model the server lists, for servers that serve one model and callers that gave none."""
        # asyncio.run in a fresh thread works even when the caller already runs an event loop (notebooks).
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._fetch_first_model()).result()

    async def _fetch_first_model(self) -> str:
        aiohttp = _import_aiohttp()
        url = f"{self.base_url}/models"
        where = safe_url(url)
        try:
            async with self._session() as session:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
                    status = response.status
                    raw = await response.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:  # noqa: UP041  (see _attempt)
            raise DistillError(
                f"cannot list the models at {where} ({type(exc).__name__}): check --base-url, or pass --model"
            ) from None
        if status in (401, 403):
            raise DistillError(
                f"server at {safe_url(self.base_url)} rejected the credentials (HTTP {status}): set the API key in "
                f"${self.api_key_env} or the variable named by --api-key-env"
            )
        try:
            if status != 200:
                raise ValueError(f"HTTP {status}")
            return str(json.loads(raw)["data"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) and str(exc).startswith("HTTP") else "no model listed"
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
