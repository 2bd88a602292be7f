"""The openai-batch engine: the OpenAI Batch API, which OpenAI, Together, Groq and vLLM's `run_batch` share.

Requests go out as JSONL files (one chat completion per line, `custom_id` = the sample id) uploaded to `/v1/files`
and submitted with `/v1/batches`; the provider answers within its completion window (usually at half the price).
One generate call (a window of requests):

1. answers this output already holds are handed out first (output files of finished batches, downloaded into
   OUT/batches/ by an earlier call or run);
2. requests in a batch still running at the provider are waited for, never sent again;
3. the rest are split at the provider's limits of requests and bytes per batch, uploaded and submitted;
4. every batch is polled until it ends; its output and error files are downloaded and each line becomes a result.
   Requests a failed, expired or cancelled batch did not answer are submitted again (at most --max-retries
   times), and nothing else is.

OUT/batches/{shard}.json lists the batches, rewritten atomically at every change, and OUT/batches/{name}.ids the
sample ids of each. A batch is recorded ("submitting", with its input file) before it is created, so a run killed
between the two finds it at the provider by its input file and adopts it instead of paying twice. A Ctrl-C leaves
the batches running (they are paid for) and the next --resume collects them; --cancel cancels them.

The client is the standard library's urllib: a batch run makes a handful of calls a minute, and a synchronous
poll loop in the run's own thread stops at a Ctrl-C without another thread to wind down.
"""

import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from distill.engines.base import Request, Result, Sampling
from distill.engines.control import RunControl
from distill.engines.openai_engine import (
    BAD_REQUEST_STATUSES,
    CONTEXT_LENGTH_RE,
    RETRY_AFTER_CAP,
    OpenAIEngine,
    _Retryable,
    parse_completion,
    parse_retry_after,
    safe_url,
    server_message,
)
from distill.errors import DistillError

# OpenAI's limits per batch (Together's and Groq's are the same or larger): 50,000 requests, a 200 MB input file.
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000
BATCH_POLL_SECONDS = 30.0
COMPLETION_WINDOW = "24h"
BATCHES_PER_WINDOW = 4  # a generate call takes this many batches' worth of requests, submitted together
ENDPOINT = "/v1/chat/completions"
RUNNING = ("submitting", "validating", "in_progress", "finalizing", "cancelling")
MULTIPART_OVERHEAD = 1024  # bytes of form fields around the file in an upload
NOTE_EVERY = 60.0  # seconds between progress lines while batches run
HTTP_TIMEOUT = 300.0


class OpenAIBatchEngine:
    stops_gracefully = True  # generate takes a RunControl: stops, budgets

    def __init__(
        self,
        base_url: str,
        model: str,
        state_dir: Path,
        prefix: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_requests: int = BATCH_MAX_REQUESTS,
        max_bytes: int = BATCH_MAX_BYTES,
        poll_seconds: float = BATCH_POLL_SECONDS,
        max_retries: int = 6,
        quiet: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_name = model
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self._api_key = api_key or None
        self.api_key_env = api_key_env
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.poll_seconds = poll_seconds
        self.max_retries = max_retries
        self.quiet = quiet
        self.window = max_requests * BATCHES_PER_WINDOW
        # No environment proxies, as the openai engine (aiohttp) does not use them either.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_config(cls, config) -> "OpenAIBatchEngine":
        if not config.base_url:
            raise DistillError("the openai-batch engine needs --base-url, e.g. https://api.openai.com/v1")
        if not getattr(config, "out", None):  # the judge, say: no output folder to keep its batches in
            raise DistillError(
                "the openai-batch engine keeps its batches in an output folder: use it with generate or eval "
                "(use --engine openai here)"
            )
        api_key_env = config.api_key_env or "OPENAI_API_KEY"
        api_key = os.environ.get(api_key_env)
        model = config.model
        if not model:
            model = OpenAIEngine(
                config.base_url, None, api_key=api_key, api_key_env=api_key_env, server_wait=config.server_wait
            ).model
        prefix = f"train-{config.shard_index:05d}-of-{config.num_shards:05d}"
        return cls(
            config.base_url,
            model,
            Path(config.out) / "batches",
            prefix,
            api_key=api_key,
            api_key_env=api_key_env,
            max_requests=config.batch_max_requests,
            max_bytes=config.batch_max_bytes,
            poll_seconds=config.batch_poll_seconds,
            max_retries=config.max_retries,
            quiet=config.quiet,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"OpenAIBatchEngine(base_url={safe_url(self.base_url)!r}, model={self.model!r}, api_key={key})"

    def close(self) -> None:
        pass

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / f"{self.prefix}.json"

    def _load(self) -> list[dict]:
        return load_batches(self.state_path)

    def _save(self, batches: list[dict]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_path, json.dumps({"batches": batches}, indent=1).encode())

    def _keys(self, batch: dict) -> list[str]:
        return (self.state_dir / f"{batch['name']}.ids").read_text(encoding="utf-8").split()

    # -- generate -------------------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, control: RunControl | None = None
    ) -> Iterator[tuple[int, Result]]:
        """Yield (index, result) for every request as its batch ends; a stop leaves the batches running."""
        control = control or RunControl()
        index = {(r.key or f"request-{i}"): i for i, r in enumerate(requests)}
        pending = set(index)
        batches = self._adopt(self._load())
        parsed: dict[str, dict] = {}  # batch name -> {key: (result or None, message)} for this window's keys
        last_note = time.monotonic()
        while pending:
            # 1. answers downloaded already, oldest batch first
            tried: dict[str, int] = {}  # key -> ended batches that did not answer it
            last_error: dict[str, str] = {}
            covered: set[str] = set()
            for batch in batches:
                if batch["status"] in RUNNING:
                    covered.update(k for k in self._keys(batch) if k in pending)
                    continue
                answers = parsed.get(batch["name"])
                if answers is None:
                    answers = parsed[batch["name"]] = self._answers(batch, index)
                for key in [k for k in answers if k in pending]:
                    result, message = answers[key]
                    if result is not None:
                        pending.discard(key)
                        yield index[key], result
                    else:
                        last_error[key] = message
                        if not batch.get("cancelled_by_user") and batch["status"] != "abandoned":
                            tried[key] = tried.get(key, 0) + 1
            if not pending:
                return
            # 2. what no batch holds: given up on after max_retries + 1 batches, else submitted
            todo = []
            for key in sorted(pending - covered, key=index.get):
                if tried.get(key, 0) > self.max_retries:
                    pending.discard(key)
                    yield index[key], Result(error=f"{last_error[key]} (gave up after {tried[key]} batches)")
                else:
                    todo.append(key)
            if todo and not control.stopping:
                attempt = 1 + max((tried.get(k, 0) for k in todo), default=0)
                batches += self._submit([requests[index[k]] for k in todo], todo, sampling, attempt, control)
            running = [b for b in batches if b["status"] in RUNNING]
            control.in_flight, control.waiting_on = len(running), "batches"
            if not running:
                if control.stopping or todo:  # stopped, or the budget left nothing to submit
                    return
                continue
            if control.stopping:
                control.notes.append(self._left_running(running))
                return
            # 3. wait, then look at every running batch
            if not self._sleep(self.poll_seconds, control):
                control.notes.append(self._left_running(running))
                return
            for batch in running:
                self._refresh(batch)
                self._save(batches)
            if not self.quiet and time.monotonic() - last_note >= NOTE_EVERY:
                print(self._progress(running), file=sys.stderr)
                last_note = time.monotonic()

    def _sleep(self, seconds: float, control: RunControl) -> bool:
        """Sleep in short steps so a Ctrl-C is seen at once; False when a stop came."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if control.stopping:
                return False
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return not control.stopping

    def _left_running(self, running: list[dict]) -> str:
        ids = ", ".join(b["id"] or b["input_file_id"] for b in running[:3]) + (" ..." if len(running) > 3 else "")
        return (
            f"{len(running)} batch{'es' if len(running) > 1 else ''} keep running at the provider ({ids}): rerun "
            "with --resume to collect them (nothing is sent twice), or with --cancel to cancel them"
        )

    def _progress(self, running: list[dict]) -> str:
        done = sum(b.get("completed", 0) for b in running)
        total = sum(b["count"] for b in running)
        states = {}
        for b in running:
            states[b["status"]] = states.get(b["status"], 0) + 1
        return f"batches: {', '.join(f'{n} {s}' for s, n in states.items())}; {done} of {total} requests answered"

    # -- submit ---------------------------------------------------------------------------------------------

    def _submit(self, requests: list[Request], keys: list[str], sampling: Sampling, attempt: int, control) -> list:
        """Upload and create batches for `requests`, split at the limits; returns the new state entries."""
        lines, reserved = [], []
        for request, key in zip(requests, keys, strict=True):
            verdict = control.reserve(key, request, sampling.max_tokens)
            if verdict != "ok":  # the budget: what is reserved goes out now, the rest waits for it to settle
                break
            reserved.append(key)
            # The same request body as the openai engine's (its _body reads only `model`).
            body = OpenAIEngine._body(self, request, sampling)
            line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
            lines.append(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        created = []
        chunk: list[bytes] = []
        chunk_keys: list[str] = []
        size = 0
        for line, key in zip(lines, reserved, strict=True):
            if len(line) + MULTIPART_OVERHEAD > self.max_bytes:
                raise DistillError(
                    f"one request is {len(line):,} bytes, more than --batch-max-bytes {self.max_bytes:,}: raise it "
                    "or use --engine openai for such prompts"
                )
            if chunk and (len(chunk) >= self.max_requests or size + len(line) + MULTIPART_OVERHEAD > self.max_bytes):
                created.append(self._create(b"".join(chunk), chunk_keys, attempt))
                chunk, chunk_keys, size = [], [], 0
            chunk.append(line)
            chunk_keys.append(key)
            size += len(line)
        if chunk:
            created.append(self._create(b"".join(chunk), chunk_keys, attempt))
        return created

    def _create(self, content: bytes, keys: list[str], attempt: int) -> dict:
        batches = self._load()
        name = f"{self.prefix}-{len(batches):05d}-{uuid.uuid4().hex[:8]}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_dir / f"{name}.ids", ("\n".join(keys) + "\n").encode())
        upload = self._upload(f"{name}.jsonl", content)
        batch = {"name": name, "id": None, "input_file_id": upload, "status": "submitting", "count": len(keys),
                 "attempt": attempt, "created": time.time(), "output_file_id": None, "error_file_id": None,
                 "errors": None, "downloaded": False}  # fmt: skip
        self._save([*batches, batch])  # before the batch exists: a run killed now adopts it by its input file
        answer = self._call("POST", "/batches", {
            "input_file_id": upload, "endpoint": ENDPOINT, "completion_window": COMPLETION_WINDOW,
            "metadata": {"distill_batch": name},
        })  # fmt: skip
        batch.update(id=answer["id"], status=answer.get("status") or "validating")
        self._save([*batches, batch])
        if not self.quiet:
            print(f"submitted batch {answer['id']}: {len(keys)} requests", file=sys.stderr)
        return batch

    def _upload(self, filename: str, content: bytes) -> str:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        body = head + content + f"\r\n--{boundary}--\r\n".encode()
        answer = self._call("POST", "/files", raw=body, content_type=f"multipart/form-data; boundary={boundary}")
        return answer["id"]

    def _adopt(self, batches: list[dict]) -> list[dict]:
        """Entries a killed run left as "submitting": the provider's batch made from the same input file, if any."""
        orphans = [b for b in batches if b["status"] == "submitting"]
        if not orphans:
            return batches
        by_file = {}
        after = None
        for _ in range(100):  # pages of the provider's most recent batches
            answer = self._call("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            for item in answer.get("data") or []:
                by_file.setdefault(item.get("input_file_id"), item)
            if not answer.get("has_more") or not answer.get("data"):
                break
            after = answer["data"][-1]["id"]
        for batch in orphans:
            found = by_file.get(batch["input_file_id"])
            if found:
                batch.update(id=found["id"], status=found.get("status") or "validating")
            else:  # never created: its requests are submitted again, which is not a retry
                batch["status"] = "abandoned"
        self._save(batches)
        return batches

    # -- collect --------------------------------------------------------------------------------------------

    def _refresh(self, batch: dict) -> None:
        answer = self._call("GET", f"/batches/{batch['id']}")
        batch["status"] = answer.get("status") or batch["status"]
        counts = answer.get("request_counts") or {}
        batch["completed"] = (counts.get("completed") or 0) + (counts.get("failed") or 0)
        batch["output_file_id"] = answer.get("output_file_id")
        batch["error_file_id"] = answer.get("error_file_id")
        errors = (answer.get("errors") or {}).get("data") or []
        if errors:
            batch["errors"] = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3])[:300]
        if batch["status"] not in RUNNING:
            for kind in ("output", "error"):
                file_id = batch[f"{kind}_file_id"]
                if file_id:
                    content = self._call("GET", f"/files/{file_id}/content", parse=False)
                    _write_atomic(self.state_dir / f"{batch['name']}.{kind}.jsonl", content)
            batch["downloaded"] = True

    def _answers(self, batch: dict, index: dict) -> dict:
        """{key: (result, "") or (None, why it is missing)} for the keys of this window that the batch held."""
        keys = [k for k in self._keys(batch) if k in index]
        why = f"batch_{batch['status']}: " + (batch.get("errors") or f"the batch ended {batch['status']}")
        answers: dict = {k: (None, why) for k in keys}
        for kind in ("error", "output"):  # an answer in the output file wins over an error line
            path = self.state_dir / f"{batch['name']}.{kind}.jsonl"
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as fh:
                for raw in fh:
                    if not raw.strip():
                        continue
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue
                    key = line.get("custom_id")
                    if key in answers:
                        answers[key] = self._line_result(line)
        return answers

    def _line_result(self, line: dict) -> tuple[Result | None, str]:
        """One output or error line: a result to keep, or (None, why) for a request worth submitting again."""
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and body is not None:
            try:
                return parse_completion(json.dumps(body).encode()), ""
            except _Retryable as failure:
                return None, f"{failure.kind}: {failure.message}"
        error = line.get("error") or {}
        message = server_message(json.dumps(body).encode()) if body else str(error.get("message") or "")
        message = self._redact(message[:300])
        if status in BAD_REQUEST_STATUSES:  # this request's own fault: another batch would get the same answer
            kind = "context_length" if CONTEXT_LENGTH_RE.search(message) else "bad_request"
            return Result(error=f"{kind}: {message}"), ""
        kind = f"http_{status}" if status else str(error.get("code") or "batch_error")
        return None, f"{kind}: {message or 'no message'}"

    # -- cancel -----------------------------------------------------------------------------------------------

    def cancel_all(self) -> list[str]:
        """Cancel this output shard's running batches; returns their ids."""
        batches = self._adopt(self._load())
        cancelled = []
        for batch in batches:
            if batch["status"] in RUNNING and batch["id"]:
                answer = self._call("POST", f"/batches/{batch['id']}/cancel", {})
                batch["status"] = answer.get("status") or "cancelling"
                batch["cancelled_by_user"] = True
                cancelled.append(batch["id"])
        self._save(batches)
        return cancelled

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, data=None, raw: bytes | None = None, content_type=None, parse=True):
        """One API call, retried on connection errors, 408, 429 and 5xx; other failures stop the run."""
        url = self.base_url + path
        body = raw if raw is not None else (json.dumps(data).encode() if data is not None else None)
        headers = {"Content-Type": content_type or "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with self._opener.open(request, timeout=HTTP_TIMEOUT) as response:
                    content = response.read()
                return json.loads(content) if parse else content
            except urllib.error.HTTPError as exc:
                status, message = exc.code, self._redact(server_message(exc.read())[:200])
                if status in (401, 403):
                    raise DistillError(
                        f"server at {safe_url(self.base_url)} rejected the credentials (HTTP {status}): set the API "
                        f"key in ${self.api_key_env} or the variable named by --api-key-env"
                    ) from None
                if status not in (408, 429) and status < 500:
                    raise DistillError(
                        f"the batch API at {safe_url(self.base_url)} refused {method} {path.split('?')[0]} "
                        f"(HTTP {status}: {message}): check --base-url (the provider must offer /v1/batches)"
                    ) from None
                why = f"HTTP {status}: {message}"
                wait = _retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                why, wait = f"{type(exc).__name__}: {str(exc)[:200]}", None
            if attempt >= self.max_retries:
                raise DistillError(
                    f"the batch API at {safe_url(self.base_url)} failed {method} {path.split('?')[0]} "
                    f"{attempt + 1} times ({why}): rerun with --resume later (nothing submitted is lost)"
                )
            time.sleep(wait if wait is not None else random.uniform(0, min(60.0, 2.0**attempt)))
            attempt += 1

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text


def _retry_after(value: str | None) -> float | None:
    seconds = parse_retry_after(value)
    return None if seconds is None else min(seconds, RETRY_AFTER_CAP)


def load_batches(path: Path) -> list[dict]:
    """The batches a shard's state file lists ([] when none)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["batches"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        raise DistillError(f"{path} is damaged: restore it, or delete it to submit its requests again") from None


def running_batches(state_dir: Path) -> list[str]:
    """Ids (or input files) of the batches in an output folder that may still be running at the provider."""
    found = []
    for path in sorted(Path(state_dir).glob("*.json")):
        found += [b["id"] or b["input_file_id"] for b in load_batches(path) if b["status"] in RUNNING]
    return found


def _write_atomic(path: Path, content: bytes) -> None:
    """Written under a temporary name, synced and renamed (distill.io's way; this layer may not import it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
