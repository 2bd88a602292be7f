"""A scripted stand-in for an OpenAI-compatible server, for testing the openai engines without a model.

The server runs aiohttp.web on 127.0.0.1 (a free port) in a background thread. Each call to
/v1/chat/completions takes the next action from `script`; once the script is used up, calls succeed. It records
what it saw (request bodies, headers, arrival times, the most requests in flight at once) for tests to check.

A successful reply echoes the last message. A last message containing "sleep=SECONDS" makes the reply wait that
long first, which lets tests make some requests slower than others; `latency` delays every reply.

Beyond the script, like a hosted API:
- rate limits: `requests_per_minute` and `tokens_per_minute` (a request costs its prompt's words plus max_tokens,
  as OpenAI counts at admission) are token buckets holding `burst` seconds of the limit; a request over either
  gets a 429 with Retry-After, and every answer carries OpenAI's x-ratelimit-{limit,remaining,reset}-* headers
  (unless `rate_headers` is off). `completed` counts the 200s sent, `rate_limited` the 429s.
- usage: prompt and completion tokens (words); with `reasoning` on, a `reasoning_content` and
  completion_tokens_details.reasoning_tokens, and prompt_tokens_details.cached_tokens (`cached_tokens`);
  `usage=False` leaves usage out.
- the Batch API: /v1/files (upload, content), /v1/batches (create, get, list, cancel). A batch ends
  `batch_seconds` after it is created, as the next of `batch_outcomes` says: completed (every line answered),
  failed (validation failed: no output), expired (the first half answered, the rest `batch_expired` in the error
  file), partial (completed, but every third line a 500 in the error file); a cancelled batch answers the lines
  it reached (none). `batch_lines` counts the lines answered, `batches_created` the batches.
"""

import asyncio
import itertools
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Action:
    """What the server does with one call. `kind` is one of:

    ok        a chat completion (`message` fields merged into choices[0].message)
    status    HTTP `status` with `body` (a dict, sent as JSON, or a str) and `headers`
    drop      close the connection without answering
    cut       promise a long body, send part of it, close the connection (a payload error for the client)
    truncated a complete HTTP 200 whose body is half a JSON document
    slow      wait `delay` seconds, then answer like ok
    """

    kind: str = "ok"
    status: int = 200
    body: dict | str | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    message: dict = field(default_factory=dict)
    choice: dict = field(default_factory=dict)  # merged into choices[0] (e.g. `logprobs`)


def ok(**message) -> Action:
    return Action("ok", message=message)


def status(code: int, message: str = "", headers: dict | None = None) -> Action:
    body = {"error": {"message": message or f"error {code}", "type": "Error", "code": code}}
    return Action("status", status=code, body=body, headers=headers or {})


class Bucket:
    """A token bucket: `rate` per second, holding at most `capacity`."""

    def __init__(self, per_minute: float, burst_seconds: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float) -> float:
        """0 when taken, else seconds until `amount` is there (nothing taken)."""
        self.refill()
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate

    def headers(self, kind: str) -> dict:
        reset = (self.capacity - self.level) / self.rate
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.capacity)),
            f"x-ratelimit-remaining-{kind}": str(int(self.level)),
            f"x-ratelimit-reset-{kind}": f"{reset:.3f}s",
        }


class FakeOpenAIServer:
    def __init__(
        self,
        model_id: str = "fake-model",
        script: list[Action] | None = None,
        api_key: str | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst: float = 1.0,
        latency: float = 0.0,
        reasoning: bool = False,
    ):
        self.model_id = model_id
        self.script: list[Action] = list(script or [])
        self.api_key = api_key  # when set, requests without `Authorization: Bearer <api_key>` get HTTP 401
        self.models_status = 200
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests_bucket = Bucket(requests_per_minute, burst) if requests_per_minute else None
        self.tokens_bucket = Bucket(tokens_per_minute, burst) if tokens_per_minute else None
        self.rate_headers = True
        self.last_headers: dict = {}  # the rate-limit headers of the last completion sent
        self.latency = latency
        self.reasoning = reasoning
        self.cached_tokens = 0
        self.usage = True
        self.completed = 0  # 200s sent
        self.completed_at: list[float] = []  # when each was sent (monotonic), for throughput
        self.rate_limited = 0  # 429s sent by the rate limits
        self.rate_limited_at: list[float] = []
        # Batch API
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_seconds = 0.2
        self.batch_outcomes: list[str] = []  # completed, failed, expired, partial; then completed
        self.batches_created = 0
        self.batch_lines = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def calls(self) -> int:
        return len(self.bodies)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> "FakeOpenAIServer":
        started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="fake-openai", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel_batch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    # -- handlers -------------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if self.models_status != 200:
            return web.json_response({"error": {"message": "nope"}}, status=self.models_status)
        return web.json_response({"object": "list", "data": [{"id": self.model_id, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self.arrivals.append(time.monotonic())
            action = self.script.pop(0) if self.script else Action()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            limited = self._admit(body) if self._authorized(request) and action.kind == "ok" else None
            if limited is not None:
                return limited
            response = await self._act(request, body, action)
            # A reply to a client that hung up (a stop that gave up waiting) is not a completed response
            gone = request.transport is None or request.transport.is_closing()
            if response.status == 200 and action.kind in ("ok", "slow") and not gone:
                with self._lock:
                    self.completed += 1
                    self.completed_at.append(time.monotonic())
            return response
        finally:
            with self._lock:
                self.in_flight -= 1

    def _rate_headers(self) -> dict:
        headers = {}
        if self.rate_headers:
            for kind, bucket in (("requests", self.requests_bucket), ("tokens", self.tokens_bucket)):
                if bucket is not None:
                    headers.update(bucket.headers(kind))
        return headers

    def _admit(self, body: dict) -> web.Response | None:
        """None when the rate limits let the request in (taking its share), else the 429 to send."""
        with self._lock:
            waits = []
            if self.requests_bucket is not None:
                waits.append(("requests", self.requests_bucket.take(1)))
            if self.tokens_bucket is not None and not (waits and waits[0][1]):
                cost = len(body["messages"][-1]["content"].split()) + body.get("max_tokens", 16)
                waits.append(("tokens", self.tokens_bucket.take(cost)))
            refused = [(kind, wait) for kind, wait in waits if wait]
            if not refused:
                return None
            self.rate_limited += 1
            self.rate_limited_at.append(time.monotonic())
            kind, wait = refused[0]
            headers = {"Retry-After": f"{max(0.001, wait):.3f}", **self._rate_headers()}
        message = f"Rate limit reached for {kind} per minute. Please try again in {wait:.3f}s."
        body = {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}}
        return web.json_response(body, status=429, headers=headers)

    async def _act(self, request: web.Request, body: dict, action: Action) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if action.kind == "status":
            if isinstance(action.body, str):
                return web.Response(text=action.body, status=action.status, headers=action.headers)
            return web.json_response(action.body, status=action.status, headers=action.headers)
        if action.kind == "drop":
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        if action.kind == "cut":
            response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b'{"choices": [')
            await asyncio.sleep(0.01)
            request.transport.close()
            return response
        if action.kind == "truncated":
            text = json.dumps(self._completion(body, action.message, action.choice))
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        if action.kind == "slow":
            await asyncio.sleep(action.delay)
        match = re.search(r"sleep=([0-9.]+)", body["messages"][-1]["content"])
        if match:
            await asyncio.sleep(float(match.group(1)))
        if self.latency:
            await asyncio.sleep(self.latency)
        with self._lock:
            headers = self.last_headers = self._rate_headers()
        return web.json_response(self._completion(body, action.message, action.choice), headers=headers)

    def _completion(self, body: dict, extra: dict, choice: dict | None = None) -> dict:
        last = body["messages"][-1]["content"]
        message = {"role": "assistant", "content": f"echo: {last}"}
        prompt_tokens = len(last.split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 3, "total_tokens": prompt_tokens + 3}
        if self.reasoning:
            message["reasoning_content"] = f"thinking about {last}"
            reasoning = 2 + len(last.split())
            usage["completion_tokens"] += reasoning
            usage["total_tokens"] += reasoning
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
            usage["prompt_tokens_details"] = {"cached_tokens": min(self.cached_tokens, prompt_tokens)}
        message.update(extra)
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", **(choice or {})}],
        }
        if self.usage:
            answer["usage"] = usage
        return answer

    # -- the Batch API --------------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or upload is None:
            return web.json_response({"error": {"message": "purpose batch and a file are required"}}, status=400)
        content = upload.file.read()
        with self._lock:
            file_id = self._new_id("file")
            self.files[file_id] = content
        return web.json_response({"id": file_id, "object": "file", "bytes": len(content), "purpose": "batch"})

    async def _file_content(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        content = self.files.get(request.match_info["id"])
        if content is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        with self._lock:
            batch_id = self._new_id("batch")
            outcome = self.batch_outcomes.pop(0) if self.batch_outcomes else "completed"
            batch = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "status": "validating",
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                "output_file_id": None, "error_file_id": None, "errors": None, "metadata": body.get("metadata"),
                "request_counts": {"total": 0, "completed": 0, "failed": 0}, "created_at": int(time.time()),
            }  # fmt: skip
            self.batches[batch_id] = batch
            self.batches_created += 1
        asyncio.get_running_loop().call_later(self.batch_seconds, self._finish_batch, batch_id, outcome)
        return web.json_response(batch)

    async def _list_batches(self, request: web.Request) -> web.Response:
        with self._lock:
            items = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        return web.json_response({"object": "list", "data": items, "has_more": False})

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(batch)

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["id"])
            if batch is None:
                return web.json_response({"error": {"message": "no such batch"}}, status=404)
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"] = "cancelled"  # no line answered: the cancel came first
                batch["request_counts"]["total"] = len(self._lines(batch))
        return web.json_response(batch)

    def _lines(self, batch: dict) -> list[dict]:
        return [json.loads(line) for line in self.files[batch["input_file_id"]].splitlines() if line.strip()]

    def _finish_batch(self, batch_id: str, outcome: str) -> None:
        with self._lock:
            batch = self.batches[batch_id]
            if batch["status"] != "validating":  # cancelled meanwhile
                return
            lines = self._lines(batch)
            batch["request_counts"]["total"] = len(lines)
            if outcome == "failed":
                batch["status"] = "failed"
                batch["errors"] = {"data": [{"code": "invalid_request", "message": "validation failed", "line": 1}]}
                return
            output, errors = [], []
            answered = math.ceil(len(lines) / 2) if outcome == "expired" else len(lines)
            for number, line in enumerate(lines):
                request = {"id": self._new_id("batch_req"), "custom_id": line["custom_id"]}
                if number >= answered:
                    error = {"code": "batch_expired", "message": "This request could not be executed before the "
                             "completion window expired."}  # fmt: skip
                    errors.append({**request, "response": None, "error": error})
                elif outcome == "partial" and number % 3 == 2:
                    body = {"error": {"message": "internal error", "type": "server_error"}}
                    errors.append({**request, "response": {"status_code": 500, "body": body}, "error": None})
                else:
                    response = {
                        "status_code": 200,
                        "request_id": request["id"],
                        "body": self._completion(line["body"], {}),
                    }
                    output.append({**request, "response": response, "error": None})
                    self.batch_lines += 1
            for kind, rows in (("output", output), ("error", errors)):
                if rows:
                    file_id = self._new_id("file")
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[f"{kind}_file_id"] = file_id
            batch["request_counts"].update(completed=len(output), failed=len(errors))
            batch["status"] = "expired" if outcome == "expired" else "completed"
