"""Secrets: every command run with HF_TOKEN and OPENAI_API_KEY set to marker values; the markers must appear in
no output file, log line, card or error message.

Each command runs as users run it, in its own process (`distill ...`), with logging on (every library's INFO
lines and distill's own DEBUG lines on stderr, so that log lines are scanned too), in a fresh working folder, with
HF_HOME inside it (whatever the Hub client caches is scanned as well). The openai engine talks to
tests/fake_openai_server.py, which requires the key in the Authorization header (the one place it may go) and, on
the error paths, echoes the key back in its error bodies as a careless proxy would: 500 and 429 with retries,
dropped connections, 401 and 403 (the latter under DISTILL_DEBUG=1, which prints a traceback). Real uploads go to
a Hub endpoint on a dead 127.0.0.1 port, and to one that answers 500 echoing the token it was sent.

What is scanned for each command: stdout, stderr, and every file under the folders it writes, recursively, as
bytes; Parquet files also as their decoded rows and metadata, zip archives (torch's training_args.bin) and gzip
files also decompressed. Each marker is searched whole and by its random core alone, so a key cut or masked at
the edges still counts. A last line scans every file under the working folder, whichever command wrote it.

One Outcome per command: tried=1, survived=1 when no marker was found and the command ended as expected (a
command that did not run as planned has not shown that it keeps the secret).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import secrets as random_secrets
import socket
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.checks import Outcome

ROOT = Path(__file__).resolve().parents[2]
# `distill` with logging on: every library's INFO lines and distill's own DEBUG lines (the openai engine's retry
# log) reach stderr and are scanned. Not every library at DEBUG: httpcore then dumps response headers verbatim, so
# a server that echoes the token in a header shows it (see the note on EchoingHub).
LAUNCH = [
    sys.executable,
    "-c",
    "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
    "logging.getLogger('distill').setLevel(logging.DEBUG); from distill.cli import main; main(prog_name='distill')",
]
PROMPTS = [{"id": f"p{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)} for i in range(6)]


def _tests_module(name: str):
    """tests/ is not a package: import its helpers from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import importlib

    return importlib.import_module(f"tests.{name}")


def new_markers() -> dict[str, str]:
    """Marker values shaped like the real secrets (hf_... and sk-...), unique per run."""
    return {
        "HF_TOKEN": f"hf_distillLeakMarker{random_secrets.token_hex(10)}",
        "OPENAI_API_KEY": f"sk-distill-leak-marker-{random_secrets.token_hex(10)}",
    }


def needles(markers: dict[str, str]) -> dict[bytes, str]:
    """What to search for: each marker whole, and its random core (the last 20 hex digits) on its own."""
    found: dict[bytes, str] = {}
    for name, value in markers.items():
        found[value.encode()] = name
        found[value[-20:].encode()] = name
    return found


def scan_bytes(data: bytes, wanted: dict[bytes, str]) -> set[str]:
    return {name for needle, name in wanted.items() if needle in data}


def scan_file(path: Path, wanted: dict[bytes, str]) -> set[str]:
    """The markers in one file: its bytes, and its decoded content for Parquet, zip and gzip."""
    try:
        data = path.read_bytes()
    except OSError:
        return set()
    found = scan_bytes(data, wanted)
    if data[:4] == b"PAR1":
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            decoded = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
            metadata = repr(table.schema.metadata)
            found |= scan_bytes((decoded + metadata).encode(), wanted)
        except Exception:  # noqa: BLE001, S110 - a damaged file is still scanned as bytes above
            pass
    elif data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    found |= scan_bytes(archive.read(member), wanted)
        except Exception:  # noqa: BLE001, S110 - not a zip after all
            pass
    elif data[:2] == b"\x1f\x8b":
        try:
            found |= scan_bytes(gzip.decompress(data), wanted)
        except Exception:  # noqa: BLE001, S110 - not gzip after all
            pass
    return found


def scan_tree(paths: list[Path], wanted: dict[bytes, str]) -> dict[str, set[str]]:
    """{file: markers} for every file under the given files and folders that holds one."""
    leaks: dict[str, set[str]] = {}
    for root in paths:
        files = (
            [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        )
        for path in files:
            found = scan_file(path, wanted)
            if found:
                leaks[str(path)] = found
    return leaks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EchoingHub:
    """A Hub endpoint that fails every request and echoes the Authorization header it got in its error body and
    X-Error-Message header (which huggingface_hub puts into its exception messages).

    distill's error line stays clean (hub._hub scrubs it). With every logger at DEBUG, though, httpcore logs the
    response headers as received, echoed token included: only a redacting logging filter could hide that, which
    distill does not install (it configures no logging at all, so by default nothing below WARNING is shown)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _fail(self):
                echoed = f"server error for credentials {self.headers.get('Authorization')}"
                body = json.dumps({"error": echoed}).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Message", echoed)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = _fail

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(slots=True)
class Ran:
    """One command's run: what it printed and how it ended."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Rig:
    """A working folder, the marker environment, the fake servers, and the commands run so far."""

    def __init__(self, work: Path, quick: bool):
        self.work = Path(work)
        self.quick = quick
        self.markers = new_markers()
        self.wanted = needles(self.markers)
        self.hf_home = self.work / "hf-home"
        self.prompts = self.work / "prompts.jsonl"
        self.outcomes: list[Outcome] = []
        self.ran: list[Ran] = []
        self.servers: list = []
        self.ok_server = None
        self.dead_hub = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        self.logs = self.work / "logs"
        self.timeout = 900

    # -- setup ----------------------------------------------------------------------------------------------

    def setup(self, model: bool = True) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.hf_home.mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
        if model:
            build_tiny_model = _tests_module("conftest").build_tiny_model
            self.tiny = str(build_tiny_model(self.work / "tiny-llama"))

    def server(self, script=None, api_key: str | None = None):
        fake = _tests_module("fake_openai_server")
        server = fake.FakeOpenAIServer(
            script=script, api_key=self.markers["OPENAI_API_KEY"] if api_key is None else api_key
        )
        server.start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001, S110 - the outcomes are already recorded
                pass

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.markers)
        env.update(
            HF_HOME=str(self.hf_home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        )
        env.pop("DISTILL_DEBUG", None)
        env.update(extra)
        return env

    # -- one command ----------------------------------------------------------------------------------------

    def cli(
        self,
        name: str,
        args: list[str],
        outputs: list[Path] = (),
        expect_ok: bool = True,
        expect_text: str | None = None,
        **env: str,
    ) -> Ran:
        """Run `distill ARGS` with the markers set, scan what it printed and wrote, record one Outcome."""
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [*LAUNCH, *args],
                capture_output=True,
                text=True,
                env=self.env(**env),
                cwd=self.work,
                timeout=self.timeout,
            )
            ran = Ran(name, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            ran = Ran(name, -9, out, err, time.monotonic() - started)
        # Kept for whoever reads the run (and scanned again by the last line).
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        (self.logs / f"{len(self.outcomes):02d}-{slug}.log").write_text(
            f"$ distill {' '.join(args)}\nexit {ran.returncode}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
        )
        self.ran.append(ran)
        leaks = []
        for stream, text in (("stdout", ran.stdout), ("stderr", ran.stderr)):
            for marker in sorted(scan_bytes(text.encode(errors="replace"), self.wanted)):
                leaks.append(f"{marker} in {stream}: {_context(text, self.markers[marker])}")
        for path, markers in scan_tree([Path(p) for p in outputs], self.wanted).items():
            for marker in sorted(markers):
                leaks.append(f"{marker} in {Path(path).relative_to(self.work)}")
        problems = []
        if ran.returncode == -9:
            problems.append(f"timed out after {self.timeout} s")
        elif expect_ok and ran.returncode != 0:
            problems.append(f"exit {ran.returncode}: {_tail(ran.stderr)}")
        elif not expect_ok and ran.returncode == 0:
            problems.append("exit 0 where an error was expected")
        elif expect_text and expect_text not in ran.stdout + ran.stderr:
            problems.append(f"no `{expect_text}` in its output: {_tail(ran.stderr)}")
        note = "; ".join(leaks + problems) or f"no marker ({ran.seconds:.0f} s)"
        if leaks:
            note = "LEAK: " + note
        self.outcomes.append(Outcome("secrets", name, tried=1, survived=int(not leaks and not problems), note=note))
        return ran

    def skipped(self, name: str, why: str) -> None:
        self.outcomes.append(Outcome("secrets", name, tried=1, survived=0, note=f"not run: {why}"))

    def everything(self) -> None:
        """The last line: every file under the working folder, whoever wrote it."""
        leaks = scan_tree([self.work], self.wanted)
        files = sum(1 for p in self.work.rglob("*") if p.is_file())
        note = "; ".join(f"{sorted(m)} in {Path(p).relative_to(self.work)}" for p, m in sorted(leaks.items())[:5])
        self.outcomes.append(
            Outcome(
                "secrets",
                "every file under the work folder",
                tried=1,
                survived=int(not leaks),
                note=f"LEAK: {note}" if leaks else f"no marker in {files} files",
            )
        )


def _tail(text: str, chars: int = 200) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-chars:]


def _context(text: str, marker: str) -> str:
    at = text.find(marker)
    if at == -1:
        at = text.find(marker[-20:])
    return repr(text[max(0, at - 60) : at].replace(marker, "<MARKER>"))


# -- the commands -------------------------------------------------------------------------------------------------


def server_commands(rig: Rig) -> None:
    """The commands that need no model: the openai engine against the fake server, and what reads its output."""
    fake = _tests_module("fake_openai_server")
    w, key = rig.work, rig.markers["OPENAI_API_KEY"]
    echoed = f"upstream said: invalid header Authorization: Bearer {key}"  # a careless proxy echoes the key
    common = ["--source", str(rig.prompts), "-n", "2", "--max-tokens", "8"]

    ok = rig.server()
    rig.ok_server = ok
    gen = w / "gen-openai"
    rig.cli(
        "generate (openai)",
        ["generate", "--engine", "openai", "--base-url", ok.base_url, *common, "--out", str(gen)],
        [gen],
    )
    # 500 and 429 that echo the key, dropped connections, then success: retries, error rows, retry log lines.
    script = [
        fake.status(500, echoed), fake.status(500, echoed),
        fake.status(429, echoed, headers={"Retry-After": "0"}), fake.status(429, echoed),
        fake.Action("drop"), fake.Action("drop"),
    ]  # fmt: skip
    flaky = rig.server(script=script)
    rig.cli(
        "generate (openai: 500/429/drop echoing the key, retries)",
        ["generate", "--engine", "openai", "--base-url", flaky.base_url, "--model", "fake-model", *common,
         "--max-retries", "1", "--max-concurrency", "1", "--out", str(w / "gen-flaky")],
        [w / "gen-flaky"], expect_text="retrying in",
    )  # fmt: skip
    rejecting = rig.server(script=[fake.status(401, f"Incorrect API key provided: {key}")])
    rig.cli(
        "generate (openai: 401 echoing the key)",
        ["generate", "--engine", "openai", "--base-url", rejecting.base_url, "--model", "fake-model", *common,
         "--out", str(w / "gen-401")],
        [w / "gen-401"], expect_ok=False, expect_text="rejected the credentials",
    )  # fmt: skip
    wrong_key = rig.server(api_key="sk-some-other-key")
    rig.cli(
        "generate (openai: 401 on model discovery)",
        ["generate", "--engine", "openai", "--base-url", wrong_key.base_url, *common, "--out", str(w / "gen-401b")],
        [w / "gen-401b"], expect_ok=False, expect_text="rejected the credentials",
    )  # fmt: skip
    forbidden = rig.server(script=[fake.status(403, f"key {key} may not use this model")])
    rig.cli(
        "generate (openai: 403, DISTILL_DEBUG=1 traceback)",
        ["generate", "--engine", "openai", "--base-url", forbidden.base_url, "--model", "fake-model", *common,
         "--out", str(w / "gen-403")],
        [w / "gen-403"], expect_ok=False, expect_text="Traceback", DISTILL_DEBUG="1",
    )  # fmt: skip
    rig.cli("stats", ["stats", str(gen)], [gen])

    # filter, with the judge on the openai engine (the fake server echoes: unparseable verdicts, kept).
    filt = w / "filter"
    judge = ["--option", "judge.engine=openai", "--option", f"judge.base_url={ok.base_url}",
             "--option", "judge.model=fake-model"]  # fmt: skip
    rig.cli(
        "filter (judge on the openai engine)",
        ["filter", str(gen), "--out", str(filt), "--verifiers", "length,judge", "--option", "length.min_tokens=0",
         *judge, "--keep-unverified"],
        [filt],
    )  # fmt: skip
    judge_401 = rig.server(script=[fake.status(401, f"Incorrect API key provided: {key}")])
    rig.cli(
        "filter (judge: 401 echoing the key, DISTILL_DEBUG=1)",
        ["filter", str(gen), "--out", str(w / "filter-401"), "--verifiers", "judge", "--option", "judge.engine=openai",
         "--option", f"judge.base_url={judge_401.base_url}", "--option", "judge.model=fake-model"],
        [w / "filter-401"], expect_ok=False, DISTILL_DEBUG="1",
    )  # fmt: skip
    rig.cli("report", ["report", str(filt)], [filt])
    rig.cli("mix", ["mix", f"{filt}:8", "--out", str(w / "mix")], [w / "mix"])

    # publish the dataset: a dry run, then a real upload to a Hub that is not there (a dead port on 127.0.0.1).
    rig.cli(
        "publish dataset --dry-run",
        ["publish", "dataset", str(filt), "someone/traces", "--dry-run", "--stage-dir", str(w / "stage-dataset")],
        [w / "stage-dataset"],
    )
    rig.cli(
        "publish dataset (upload to a dead Hub)",
        ["publish", "dataset", str(filt), "someone/traces", "--stage-dir", str(w / "stage-dataset-up")],
        [w / "stage-dataset-up"], expect_ok=False, expect_text="Hugging Face Hub",
        HF_ENDPOINT=rig.dead_hub, HF_HUB_OFFLINE="0",
    )  # fmt: skip
    hub = EchoingHub()
    rig.servers.append(hub)
    rig.cli(
        "publish dataset (Hub answers 500 echoing the token)",
        ["publish", "dataset", str(filt), "someone/traces"],
        [], expect_ok=False, expect_text="Hugging Face Hub", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
    )  # fmt: skip


def model_commands(rig: Rig) -> None:
    """The commands that load a model: the tiny in-process Llama (generate, train, eval, publish model, run)."""
    w = rig.work
    rig.cli(
        "generate (transformers)",
        ["generate", "--source", str(rig.prompts), "-n", "2", "--max-tokens", "6", "--model", rig.tiny,
         "--device", "cpu", "--out", str(w / "gen")],
        [w / "gen"],
    )  # fmt: skip
    train = w / "train"
    rig.cli(
        "train (tiny model, 2 steps)",
        ["train", str(w / "mix"), "--student", rig.tiny, "--out", str(train), "--max-steps", "2", "--max-length",
         "64", "--batch-size", "2", "--no-gradient-checkpointing", "--trl", "save_steps=1"],
        [train],
    )  # fmt: skip
    ev = w / "eval"
    rig.cli(
        "eval (transformers)",
        ["eval", str(train), "--source", str(rig.prompts), "-n", "2", "--max-tokens", "6", "--device", "cpu",
         "--out", str(ev)],
        [ev],
    )  # fmt: skip
    rig.cli(
        "eval (openai)",
        ["eval", "fake-model", "--engine", "openai", "--base-url", rig.ok_server.base_url, "--source",
         str(rig.prompts), "-n", "1", "--max-tokens", "8", "--out", str(w / "eval-openai")],
        [w / "eval-openai"],
    )  # fmt: skip
    rig.cli(
        "publish model --dry-run",
        ["publish", "model", str(train), "someone/student", "--dry-run", "--stage-dir", str(w / "stage-model"),
         "--eval-summary", str(ev / "summary.json")],
        [w / "stage-model"],
    )  # fmt: skip
    rig.cli(
        "publish model (upload to a dead Hub, DISTILL_DEBUG=1)",
        ["publish", "model", str(train), "someone/student"],
        [], expect_ok=False, expect_text="Traceback", HF_ENDPOINT=rig.dead_hub, HF_HUB_OFFLINE="0", DISTILL_DEBUG="1",
    )  # fmt: skip

    # run: a tiny recipe through every stage, publishing as a dry run.
    recipe = {
        "out": str(w / "pipeline"),
        "generate": {"source": str(rig.prompts), "model": rig.tiny, "num_samples": 2, "max_tokens": 6},
        "filter": {"verifiers": {"length": {"min_tokens": 0}}},
        "train": {"student": rig.tiny, "max_steps": 1, "max_length": 64, "gradient_checkpointing": False},
        "eval": {"source": str(rig.prompts), "num_prompts": 2, "num_samples": 1, "max_tokens": 6},
        "publish": {"dataset": "someone/traces", "model": "someone/student", "dry_run": True},
    }
    if rig.quick:
        del recipe["eval"]  # eval has its own line above; the recipe's eval is the same code
    (w / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    rig.cli("run (tiny recipe)", ["run", str(w / "recipe.yaml")], [w / "pipeline", w / "recipe.yaml"])


def run(work: Path, quick: bool) -> list[Outcome]:
    rig = Rig(Path(work), quick)
    try:
        rig.setup()
    except Exception as exc:  # noqa: BLE001 - no tiny model: nothing can be shown
        return [Outcome("secrets", "setup (tiny model, prompts)", 1, 0, note=f"{type(exc).__name__}: {exc}"[:200])]
    try:
        server_commands(rig)
        model_commands(rig)
    except Exception as exc:  # noqa: BLE001 - run() never raises: what ran is reported, the rest is a failure
        rig.outcomes.append(Outcome("secrets", "the check itself", 1, 0, note=f"{type(exc).__name__}: {exc}"[:200]))
    finally:
        rig.close()
    try:
        rig.everything()
    except Exception as exc:  # noqa: BLE001
        rig.outcomes.append(Outcome("secrets", "every file under the work folder", 1, 0, note=str(exc)[:200]))
    return rig.outcomes
