"""Generation against paid APIs (issue 23), against tests/fake_openai_server.py: `python -m benchmarks.api [--quick]`.

  rate limit  `distill generate --engine openai --max-concurrency 512` against a server limited to R requests/s
              (a 1 s burst, OpenAI's x-ratelimit-* headers): the sustained rate (the server's completions from the
              10th percentile on) over R (target >= 0.9), the share of answers that were 429s (<= 0.05) and rows
              lost (0); then a server that sends no rate-limit headers, only 429s with Retry-After (information)
  cache       the same generate into a new folder: requests sent (0 of N) and its time over the first run's (<= 0.05),
              the first against a server that takes LATENCY seconds per answer at --max-concurrency 64
  budget      --budget B: what the folder's rows cost over B (<= 1: the budget reserves each request's worst case, so
              not even the requests in flight overspend it), then --resume with a larger budget: the rows equal an
              unbudgeted run's, same ids and text (>= 1)
  sigint      `distill generate` in a subprocess, SIGINT at a random moment, K times: responses the server completed
              that are not on disk (0)

Every run is against the fake server in this process (its counters are the ground truth), with a response cache in
the work folder. The figures are wall-clock and the fake shares the machine with the client: on a busy machine they
are noisy; run it on an idle one. Prints the table and writes `--json` (items as benchmarks/run.py's).
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.items import format_table, item  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZES = {  # R (req/s), N under the limit, N for the cache, latency (s), N for the budget, SIGINTs
    "quick": (20, 400, 300, 1.0, 60, 3),
    "full": (50, 3000, 1000, 1.0, 300, 10),
}
PRICES = {"price_input": 1.0, "price_output": 10.0}  # USD per 1M tokens


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fake_server(**kwargs):
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_openai_server import FakeOpenAIServer

    return FakeOpenAIServer(**kwargs).start()


def write_prompts(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Add {i} and {i}."}) + "\n" for i in range(n)))
    return path


def generate(server, source: Path, out: Path, **settings) -> tuple[dict, float]:
    from distill.config import GenerateConfig
    from distill.generate.run import run_generate

    values = dict(engine="openai", base_url=server.base_url, model=server.model_id, source=str(source), out=str(out),
                  max_tokens=16, quiet=True)  # fmt: skip
    start = time.monotonic()
    stats = run_generate(GenerateConfig(**{**values, **settings}))
    return stats, time.monotonic() - start


def rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    found = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(found, key=lambda r: r["id"])


def bench_rate_limit(work: Path, rate: float, n: int) -> list[dict]:
    items = []
    for headers in (True, False):
        server = fake_server(requests_per_minute=rate * 60, latency=0.05)
        server.rate_headers = headers
        try:
            stats, seconds = generate(
                server, write_prompts(work / "prompts.jsonl", n), work / f"out-{headers}", max_concurrency=512,
                cache=False,
            )  # fmt: skip
            done = sorted(server.completed_at)
            first = int(0.1 * len(done))
            sustained = (len(done) - 1 - first) / (done[-1] - done[first])
            answered = server.completed + server.rate_limited
            lost = n - (stats["samples"] - stats["errors"])
        finally:
            server.stop()
        label = "with rate-limit headers" if headers else "429s only, no headers"
        log(f"rate limit {rate:g}/s, {label}: {n} rows in {seconds:.1f} s, sustained {sustained:.1f}/s, "
            f"{server.rate_limited} 429s of {answered} answers, {lost} rows lost")  # fmt: skip
        target = (lambda t: t) if headers else (lambda t: None)
        items += [
            item(f"api: throughput at a {rate:g} req/s limit ({label})", sustained, rate, "req/s", target(">= 0.9")),
            item(f"api: answers that were 429 ({label})", server.rate_limited, answered, "answers", target("<= 0.05")),
            item(f"api: rows lost under the limit ({label})", lost, n, "rows", target("<= 0")),
        ]
    return items


def bench_cache(work: Path, n: int, latency: float) -> list[dict]:
    server = fake_server(latency=latency)
    try:
        source = write_prompts(work / "prompts.jsonl", n)
        _, first = generate(server, source, work / "first", max_concurrency=64)
        sent = server.calls
        stats, again = generate(server, source, work / "second", max_concurrency=64)
        resent = server.calls - sent
    finally:
        server.stop()
    log(f"cache: first run {n} requests in {first:.2f} s; rerun into a new folder {resent} requests in {again:.2f} s "
        f"({stats['cache']})")  # fmt: skip
    return [
        item("api: cached rerun into a new folder, time", again, first, "s", "<= 0.05"),
        item("api: cached rerun into a new folder, requests", resent, n, "requests", "<= 0"),
    ]


def bench_budget(work: Path, n: int) -> list[dict]:
    server = fake_server(latency=0.05)
    try:
        source = write_prompts(work / "prompts.jsonl", n)
        common = dict(num_samples=2, max_concurrency=16, cache=False, **PRICES)
        whole_stats, _ = generate(server, source, work / "whole", **common)
        budget = whole_stats["cost_usd"] / 2
        out = work / "budgeted"
        from distill.errors import DistillError

        try:
            generate(server, source, out, budget=budget, **common)
            message = "finished (budget too large)"
        except DistillError as exc:
            message = str(exc)
        partial = rows(out)
        spent = sum(r["cost_usd"] for r in partial)
        generate(server, source, out, budget=budget * 4, resume=True, **common)
        whole, resumed = rows(work / "whole"), rows(out)
        pairs = zip(whole, resumed, strict=False)  # unequal lengths count as no match below
        same = sum(a["id"] == b["id"] and a["completion"] == b["completion"] for a, b in pairs)
        same = same if len(whole) == len(resumed) else 0
    finally:
        server.stop()
    log(f"budget ${budget:.6f}: stopped after {len(partial)} of {2 * n} rows, ${spent:.6f} spent ({message}); "
        f"resumed: {len(resumed)} rows, {same} equal to the unbudgeted run's")  # fmt: skip
    return [
        item("api: spent under --budget", spent, budget, "USD", "<= 1"),
        item("api: resumed budgeted run, rows equal to unbudgeted", same, len(whole), "rows", ">= 1"),
    ]


def bench_sigint(work: Path, times: int, seed: int = 0) -> list[dict]:
    chooser = random.Random(seed)
    lost = completed = 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    for attempt in range(times):
        server = fake_server(latency=0.2)
        out = work / f"out-{attempt}"
        try:
            source = write_prompts(work / "prompts.jsonl", 400)
            command = [sys.executable, "-m", "distill", "generate", "--engine", "openai", "--base-url",
                       server.base_url, "--model", server.model_id, "--source", str(source), "--out", str(out),
                       "--max-tokens", "16", "--max-concurrency", "16", "--no-cache", "-q"]  # fmt: skip
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
            delay = chooser.uniform(1.0, 5.0)
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
            on_disk = len(rows(out)) if (out / "data").exists() else 0
            log(f"sigint {attempt + 1}: at {delay:.2f} s, exit {proc.returncode}, server completed "
                f"{server.completed}, on disk {on_disk}")  # fmt: skip
            lost += server.completed - on_disk
            completed += server.completed
        finally:
            server.stop()
    return [item(f"api: finished responses lost at {times} random SIGINTs", lost, completed, "responses", "<= 0")]


def run(quick: bool, work: Path) -> list[dict]:
    rate, n_limit, n_cache, latency, n_budget, sigints = SIZES["quick" if quick else "full"]
    work.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("DISTILL_RESPONSE_CACHE")
    os.environ["DISTILL_RESPONSE_CACHE"] = str(work / "responses")  # never the user's cache
    try:
        items = bench_rate_limit(work / "limit", rate, n_limit)
        items += bench_cache(work / "cache", n_cache, latency)
        items += bench_budget(work / "budget", n_budget)
        items += bench_sigint(work / "sigint", sigints)
    finally:
        if previous is None:
            os.environ.pop("DISTILL_RESPONSE_CACHE", None)
        else:
            os.environ["DISTILL_RESPONSE_CACHE"] = previous
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the items here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distill-api-") as tmp:
        items = run(args.quick, args.work or Path(tmp))
    print(f"distill api benchmark ({'quick' if args.quick else 'full'}), {time.monotonic() - started:.0f} s")
    print(format_table(items))
    if args.json:
        args.json.write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8")
    missed = [i["name"] for i in items if i["met"] is False]
    print("targets met: " + ("all" if not missed else f"not {'; '.join(missed)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
