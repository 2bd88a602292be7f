"""A scripted stand-in for an OpenAI-compatible server, for testing the openai engine without a model.

The server runs aiohttp.web on 127.0.0.1 (a free port) in a background thread. Each call to
/v1/chat/completions takes the next action from `script`; once the script is used up, calls succeed. It records
what it saw (request bodies, headers, arrival times, the most requests in flight at once) for tests to check.

A successful reply echoes the last message. A last message containing "sleep=SECONDS" makes the reply wait that
long first, which lets tests make some requests slower than others.
"""

import asyncio
import json
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


class FakeOpenAIServer:
    def __init__(self, model_id: str = "fake-model", script: list[Action] | None = None, api_key: str | None = None):
        self.model_id = model_id
        self.script: list[Action] = list(script or [])
        self.api_key = api_key  # when set, requests without `Authorization: Bearer <api_key>` get HTTP 401
        self.models_status = 200
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
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
            return await self._act(request, body, action)
        finally:
            with self._lock:
                self.in_flight -= 1

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
        return web.json_response(self._completion(body, action.message, action.choice))

    def _completion(self, body: dict, extra: dict, choice: dict | None = None) -> dict:
        last = body["messages"][-1]["content"]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {last}", **extra},
                    "finish_reason": "stop",
                    **(choice or {}),
                }
            ],
            "usage": {"prompt_tokens": len(last.split()), "completion_tokens": 3, "total_tokens": 3},
        }
