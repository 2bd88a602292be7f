"""Generation against paid APIs (issue 23): tokens and cost, the response cache, budgets, adaptive concurrency, the
readiness wait, a graceful stop, and the openai-batch engine, all against tests/fake_openai_server.py."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

pytest.importorskip("aiohttp")

from distill.cli import main  # noqa: E402
from distill.engines.base import Request, Result, Sampling  # noqa: E402
from distill.engines.cache import ResponseCache, request_key  # noqa: E402
from distill.engines.control import RunControl  # noqa: E402
from distill.engines.openai_engine import OpenAIEngine  # noqa: E402
from distill.engines.ratelimit import AdaptiveLimiter, RateHeaders, parse_duration  # noqa: E402
from distill.engines.usage import Budget, Prices, prompt_bound  # noqa: E402
from distill.errors import DistillError  # noqa: E402

try:  # tests/ is on sys.path when it is not a package (pytest's default import mode)
    from fake_openai_server import FakeOpenAIServer, status
except ImportError:  # tests/ became a package
    from tests.fake_openai_server import FakeOpenAIServer, status

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `benchmarks` is imported from the checkout
    sys.path.insert(0, str(ROOT))
SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_tokens=16)


@pytest.fixture
def fake():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def prompts(tmp_path: Path, n: int = 12, extra: str = "") -> Path:
    path = tmp_path / f"prompts-{n}.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"q{i}", "problem": f"Add {i} and {i}.{extra}"}) + "\n" for i in range(n))
    )
    return path


def generate(server, source, out, *flags, expect=0, engine="openai"):
    args = ["generate", "--engine", engine, "--base-url", server.base_url, "--model", server.model_id]
    args += ["--source", str(source), "--out", str(out), "--max-tokens", "16", "-q", *map(str, flags)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == expect, result.output
    return result


def rows(out: Path) -> list[dict]:
    files = sorted((out / "data").glob("*.parquet"))
    return sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["id"])


def stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def ask(text: str) -> Request:
    return Request(messages=[{"role": "user", "content": text}])


# -- tokens and cost ------------------------------------------------------------------------------------------------


def test_usage_details_are_read(fake):
    fake.reasoning, fake.cached_tokens = True, 2
    engine = OpenAIEngine(fake.base_url, fake.model_id)
    ((_, result),) = list(engine.generate([ask("one two three")], SAMPLING))
    # prompt: 3 words; completion: "echo: ..." (3) + reasoning "thinking about ..." (2 + 3)
    assert (result.prompt_tokens, result.completion_tokens, result.reasoning_tokens) == (3, 8, 5)
    assert result.cached_tokens == 2 and result.token_source == "server"
    assert result.reasoning == "thinking about one two three"


def test_prices_and_cost():
    prices = Prices(input=2.0, cached_input=0.5, output=8.0)
    # 1000 prompt tokens of which 400 cached, 500 completion tokens
    assert prices.cost(1000, 400, 500) == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)
    assert Prices(input=2.0, output=8.0).cost(1000, 400, 0) == pytest.approx(1000 * 2.0 / 1e6)  # cached: input price
    assert Prices().cost(1000, 0, 500) is None


def test_stats_show_tokens_reasoning_cost_and_cache(fake, tmp_path):
    fake.reasoning, fake.cached_tokens = True, 1
    source = prompts(tmp_path, 6)
    out = tmp_path / "out"
    prices = ["--price-input", "1", "--price-cached-input", "0.5", "--price-output", "4"]
    result = generate(fake, source, out, "-n", "2", *prices)
    got = stats(out)
    table = rows(out)
    assert got["samples"] == 12 and fake.completed == 12
    assert got["reasoning_tokens"] == sum(r["reasoning_tokens"] for r in table) > 0
    assert got["completion_tokens"] == sum(r["completion_tokens"] for r in table)
    assert got["cached_prompt_tokens"] == 12 and got["token_counts"] == {"server": 12}
    expected = sum(((r["prompt_tokens"] - 1) * 1 + 1 * 0.5 + r["completion_tokens"] * 4) / 1e6 for r in table)
    assert got["cost_usd"] == pytest.approx(expected) == got["cost_usd_this_run"]
    assert got["cache"] == {"hits": 0, "misses": 12} and got["requests_this_run"] == 12
    assert "reasoning" in result.output and "this run" in result.output


def test_tokens_are_counted_when_the_server_leaves_them_out(fake, tmp_path, tiny_model):
    fake.usage = False
    out = tmp_path / "out"
    generate(fake, prompts(tmp_path, 3), out, "--tokenizer", tiny_model)
    table = rows(out)
    assert {r["token_source"] for r in table} == {"counted"}
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in table)
    # Without a tokenizer to be found offline, counts stay unknown (null), and the cost with them
    out2 = tmp_path / "out2"
    result = generate(fake, prompts(tmp_path, 3), out2, "--tokenizer", str(tmp_path / "none"), "--no-cache")
    assert {r["token_source"] for r in rows(out2)} == {None} and "--tokenizer" in result.output


def test_older_outputs_without_usage_columns_still_read(tmp_path):
    import pyarrow as pa

    from distill.generate.stats import folder_stats
    from distill.schema import GENERATE_SCHEMA
    from distill.testing import example_row

    usage = ("reasoning_tokens", "cached_tokens", "token_source", "cost_usd", "from_cache")
    old = pa.schema([f for f in GENERATE_SCHEMA if f.name not in usage])
    row = {k: v for k, v in example_row().items() if k in old.names}
    (tmp_path / "data").mkdir()
    pq.write_table(
        pa.Table.from_pylist([row], schema=old), tmp_path / "data" / "train-00000-of-00001-part-00000.parquet"
    )
    got = folder_stats(sorted((tmp_path / "data").glob("*.parquet")))
    assert got["samples"] == 1 and got["reasoning_tokens"] == 0 and got["cost_usd"] is None


# -- the response cache ---------------------------------------------------------------------------------------------


def test_rerun_into_a_new_folder_sends_nothing(fake, tmp_path):
    source = prompts(tmp_path, 8)
    first, second = tmp_path / "first", tmp_path / "second"
    generate(fake, source, first, "-n", "2", "--price-input", "1", "--price-output", "2")
    sent = fake.calls
    assert sent == 16
    generate(fake, source, second, "-n", "2", "--price-input", "1", "--price-output", "2")
    assert fake.calls == sent  # not one request
    again = stats(second)
    assert again["cache"] == {"hits": 16, "misses": 0} and again["requests_this_run"] == 0
    assert again["cost_usd"] == 0.0 and again["samples_from_cache"] == 16
    assert [(r["id"], r["completion"]) for r in rows(second)] == [(r["id"], r["completion"]) for r in rows(first)]
    # Other sampling is another request; --no-cache asks again
    generate(fake, source, tmp_path / "hot", "-n", "2", "--temperature", "0.9")
    assert fake.calls == sent + 16
    generate(fake, source, tmp_path / "again", "-n", "2", "--no-cache")
    assert fake.calls == sent + 32


def test_rerun_without_a_server_needs_none(tmp_path):
    server = FakeOpenAIServer().start()
    source = prompts(tmp_path, 4)
    generate(server, source, tmp_path / "a")
    server.stop()  # gone: the cache answers everything, so nothing waits for it
    generate(server, source, tmp_path / "b", "--server-wait", "1")
    assert len(rows(tmp_path / "b")) == 4


def test_cache_key_covers_what_changes_an_answer():
    teacher = {"endpoint": "http://h/v1", "model": "m"}
    messages = [{"role": "user", "content": "hi"}]
    base = request_key(teacher, messages, '{"temperature": 0.6}', 0, 0)
    assert base == request_key(dict(teacher), list(messages), '{"temperature": 0.6}', 0, 0)
    assert base != request_key({**teacher, "model": "n"}, messages, '{"temperature": 0.6}', 0, 0)
    assert base != request_key(teacher, [{"role": "user", "content": "hi!"}], '{"temperature": 0.6}', 0, 0)
    assert base != request_key(teacher, messages, '{"temperature": 0.7}', 0, 0)
    assert base != request_key(teacher, messages, '{"temperature": 0.6}', 1, 0)  # seed
    assert base != request_key(teacher, messages, '{"temperature": 0.6}', 0, 1)  # sample index


def test_no_key_in_the_cache(fake, tmp_path, monkeypatch, response_cache):
    secret = "sk-SECRET-in-env-42"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    fake.api_key = secret
    generate(fake, prompts(tmp_path, 2), tmp_path / "o")
    assert fake.headers[0]["Authorization"] == f"Bearer {secret}"
    for path in response_cache.iterdir():
        assert secret.encode() not in path.read_bytes()


WRITER = """
import sys
from pathlib import Path
from distill.engines.base import Result
from distill.engines.cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
start, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(start, start + count):
    cache.put(f"key-{i}", Result(text=f"text {i}", completion_tokens=i))
cache.close()
"""


def test_cache_takes_several_processes_writing_at_once(tmp_path):
    # Four processes, overlapping keys, each write its own transaction: no "database is locked", nothing lost.
    # (Plain subprocesses, waited for: multiprocessing's spawn would leave its resource tracker running.)
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(i * 150), "300"], cwd=ROOT)
        for i in range(4)
    ]
    for worker in workers:
        assert worker.wait(120) == 0
    with ResponseCache(tmp_path) as cache:
        found = cache.get_many([f"key-{i}" for i in range(750)])
    assert len(found) == 750 and found["key-700"].text == "text 700"


def test_cache_prunes_the_least_recently_used(tmp_path):
    with ResponseCache(tmp_path) as cache:
        for i in range(100):
            cache.put(f"k{i}", Result(text="x" * 1000))
        cache.get_many(["k0"])  # used now: the most recent
        _, size = cache.size()
        dropped = cache.prune(max_bytes=size // 2)
        count, left = cache.size()
        assert dropped > 50 and left <= size // 2 * 0.9 + 1100
        assert "k0" in cache.get_many(["k0", "k1"]) and "k1" not in cache.get_many(["k1"])
        cache.put("bad", Result(error="http_500: no"))  # errors are never stored
        assert cache.get_many(["bad"]) == {}


def test_cache_command(tmp_path, response_cache):
    with ResponseCache() as cache:
        cache.put("a", Result(text="y" * 100))
    info = CliRunner().invoke(main, ["cache", "info"])
    assert info.exit_code == 0 and "1 responses" in info.output and str(response_cache) in info.output
    assert CliRunner().invoke(main, ["cache", "prune"]).exit_code == 1  # says what to drop
    pruned = CliRunner().invoke(main, ["cache", "prune", "--all"])
    assert pruned.exit_code == 0 and "dropped 1 responses; 0 left" in pruned.output


def test_changing_only_train_pays_no_generation_and_no_teacher_eval(tmp_path, tiny_model, monkeypatch):
    """The quickstart's question on the tiny model: a rerun of the recipe into a new folder with another `train:`
    finds generate's and the teacher's and the untrained student's eval samples in the cache; only the newly
    trained student is sampled."""
    import yaml

    import distill.generate.run as run

    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps({"problem": f"Calculate {i} + {i}.", "answer": str(2 * i)}) + "\n"
                              for i in range(3)))  # fmt: skip
    sampling = {"model": tiny_model, "max_tokens": 6, "num_samples": 1}
    recipe = {
        "generate": {"source": str(source), **sampling},
        "filter": {"verifiers": {"length": {"min_tokens": 0}}},
        "train": {"student": tiny_model, "max_steps": 1, "max_length": 64, "chat_template": None},
        # The training prompts on purpose (`exclude: []`): the teacher's eval then asks what generate asked.
        "eval": {"source": str(source), "teacher": tiny_model, "num_samples": 1, "max_tokens": 6,
                 "verifiers": {"math": {}}, "exclude": []},
    }  # fmt: skip
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(yaml.safe_dump({"out": str(tmp_path / "one"), **recipe}))
    two.write_text(yaml.safe_dump({"out": str(tmp_path / "two"), **recipe}))
    built = []
    real = run.make_engine
    monkeypatch.setattr(run, "make_engine", lambda config: built.append(config.model) or real(config))
    first = CliRunner().invoke(main, ["run", str(one)])
    assert first.exit_code == 0, first.output
    # generate; the teacher's eval asks what generate asked (same prompts and sampling), and the untrained student
    # is the teacher here: both from the cache; the trained student is new
    assert built == [tiny_model, str(tmp_path / "one" / "train")]
    built.clear()
    second = CliRunner().invoke(main, ["run", str(two), "--set", "train.learning_rate=0.001"])
    assert second.exit_code == 0, second.output
    assert built == [str(tmp_path / "two" / "train")]  # only the new student
    generated = json.loads((tmp_path / "two" / "generate" / "stats.json").read_text())
    assert generated["requests_this_run"] == 0 and generated["samples_from_cache"] == 3


# -- budget ---------------------------------------------------------------------------------------------------------


def test_budget_reserves_the_worst_case_and_waits_for_requests_in_flight():
    prices = Prices(input=1.0, output=1.0)
    request = ask("x" * 100)
    worst = prices.cost(prompt_bound(request), 0, 1000)
    budget = Budget(prices, usd=worst * 2.5)
    assert budget.reserve("a", request, 1000) == "ok" and budget.reserve("b", request, 1000) == "ok"
    assert budget.reserve("c", request, 1000) == "wait"  # would cross the limit while a and b are out
    budget.settle("a", worst / 10, 110)
    assert budget.reserve("c", request, 1000) == "ok"
    budget.settle("b", worst / 10, 110)
    budget.settle("c", worst / 10, 110)
    assert budget.reserve("d", request, 1000) == "ok" and budget.reserve("e", request, 1000) == "ok"
    assert budget.reserve("f", request, 1000) == "wait"
    budget.settle("d", None, None)  # unknown cost: counted as reserved
    budget.settle("e", None, None)
    assert budget.reserve("f", request, 1000) == "no" and budget.reached == "budget"  # 2.3 spent, 1 more won't fit
    assert budget.spent_usd <= budget.usd


@pytest.mark.parametrize("limit", [["--budget", "0.001"], ["--max-total-tokens", "400"]])
def test_budget_stops_before_the_limit_and_resumes_to_the_same_rows(fake, tmp_path, limit):
    source = prompts(tmp_path, 20)
    prices = ["--price-input", "1", "--price-output", "10", "--max-concurrency", "4", "-n", "2"]
    whole = tmp_path / "whole"
    generate(fake, source, whole, *prices, "--no-cache")
    out = tmp_path / "budgeted"
    stopped = generate(fake, source, out, *prices, *limit, expect=1)
    assert "rerun with --resume" in stopped.output and limit[0] in stopped.output
    partial = rows(out)
    assert 0 < len(partial) < 40 and not (out / "stats.json").exists()
    spent_usd = sum(r["cost_usd"] for r in partial)
    spent_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in partial)
    assert spent_usd <= 0.001 if limit[0] == "--budget" else spent_tokens <= 400  # never crossed
    # a resumed run under the same limit sends nothing more, and says so again
    before = fake.calls
    generate(fake, source, out, *prices, *limit, "--resume", expect=1)
    assert fake.calls == before
    bigger = ["--budget", "1"] if limit[0] == "--budget" else ["--max-total-tokens", "100000"]
    generate(fake, source, out, *prices, *bigger, "--resume")
    assert [(r["id"], r["completion"]) for r in rows(out)] == [(r["id"], r["completion"]) for r in rows(whole)]


def test_budget_needs_prices_and_a_remote_engine(tmp_path):
    for flags, message in [
        (["--engine", "openai", "--base-url", "http://h/v1", "--budget", "1"], "--budget needs prices"),
        (["--budget", "1", "--price-input", "1", "--price-output", "1"], "limit the openai engines"),
        (["--price-input", "1"], "prices come together"),
        (["--cancel"], "--cancel cancels submitted batches"),
    ]:
        result = CliRunner().invoke(main, ["generate", "--source", "x.jsonl", "--out", str(tmp_path / "o"), *flags])
        assert result.exit_code == 1 and message in result.output, result.output


# -- adaptive concurrency and readiness -----------------------------------------------------------------------------


def test_rate_limit_headers():
    assert parse_duration("1s") == 1.0 and parse_duration("6m0s") == 360.0 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("0.25") == 0.25 and parse_duration("soon") is None
    headers = RateHeaders(limit=100, remaining=40, reset=3.0)
    assert headers.refill_interval == pytest.approx(0.05) and headers.share_left == 0.4  # 60 back in 3 s
    assert RateHeaders(limit=100, remaining=100, reset=0).refill_interval is None


def test_window_halves_on_429_once_per_window_and_grows_back():
    import asyncio

    async def scenario():
        limiter = AdaptiveLimiter(512)
        limiter.bind()
        assert limiter.window == 16  # starts below --max-concurrency
        seqs = [await limiter.before_attempt() for _ in range(10)]
        limiter.rate_limited_by(seqs[0], None, None)
        limiter.rate_limited_by(seqs[1], None, None)  # sent before the cut: no second cut
        assert limiter.window == 8 and not limiter.slow_start
        later = await limiter.before_attempt()
        limiter.rate_limited_by(later, None, None)
        assert limiter.window == 4
        for _ in range(8):
            await limiter.succeeded(None)
        assert 5 < limiter.window < 6.5  # additive: about one per window of successes

    asyncio.run(scenario())


def test_rate_limited_server_at_full_speed_without_lost_rows(tmp_path):
    # 600 requests/min = 10/s, a 1 s burst; --max-concurrency 512: the engine finds the limit, loses nothing.
    with FakeOpenAIServer(requests_per_minute=600, latency=0.02) as server:
        out = tmp_path / "out"
        start = time.monotonic()
        generate(server, prompts(tmp_path, 40), out, "--max-concurrency", "512")
        elapsed = time.monotonic() - start
        assert len(rows(out)) == 40 and stats(out)["errors"] == 0 and server.completed == 40
        assert server.rate_limited <= 0.3 * 40  # the headers pace it: few 429s (the benchmark measures closely)
        assert elapsed >= 2.5  # 40 requests at 10/s after a 10-request burst: the limit was kept


def test_tokens_per_minute_limit(tmp_path):
    # A request costs its prompt's words + max_tokens (16): ~21 tokens; 12,000 a minute is about 10 requests/s.
    with FakeOpenAIServer(tokens_per_minute=12_000, latency=0.02) as server:
        out = tmp_path / "out"
        generate(server, prompts(tmp_path, 40), out, "--max-concurrency", "512")
        assert len(rows(out)) == 40 and stats(out)["errors"] == 0 and server.completed == 40
        assert server.rate_limited <= 0.3 * 40
        assert "x-ratelimit-remaining-tokens" in {k.lower() for k in server.last_headers}


@pytest.mark.parametrize("command", [["cache"], ["cache", "info"], ["cache", "prune"]])
def test_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_only_429s_stop_the_run_after_a_bounded_time(fake, tmp_path):
    fake.script = [status(429, "quota", headers={"Retry-After": "0.05"})] * 10_000
    out = tmp_path / "out"
    start = time.monotonic()
    result = generate(fake, prompts(tmp_path, 3), out, "--rate-limit-timeout", "1", expect=1)
    assert time.monotonic() - start < 20
    assert "answered only 429" in result.output and "--rate-limit-timeout" in result.output


def test_waits_visibly_for_a_starting_server(fake, capfd):
    fake.models_status = 503  # loading its model
    threading.Timer(1.0, lambda: setattr(fake, "models_status", 200)).start()
    engine = OpenAIEngine(fake.base_url, fake.model_id, server_wait=30)
    results = dict(engine.generate([ask("a"), ask("b")], SAMPLING))
    assert all(r.error is None for r in results.values())
    assert fake.calls == 2  # no request was sent (and failed) while it started
    err = capfd.readouterr().err
    assert "waiting for the server" in err and "is up after" in err


def test_a_server_that_never_comes_up_is_one_error(fake):
    fake.models_status = 502
    engine = OpenAIEngine(fake.base_url, fake.model_id, server_wait=0.5)
    with pytest.raises(DistillError, match="did not come up within 0.5 s .*--server-wait"):
        list(engine.generate([ask("a")], SAMPLING))
    assert fake.calls == 0


# -- a graceful stop ------------------------------------------------------------------------------------------------


def test_stop_finishes_the_requests_in_flight_and_sends_no_more(fake):
    engine = OpenAIEngine(fake.base_url, fake.model_id, max_concurrency=4)
    control = RunControl(stop_timeout=10)
    got = []
    for index, result in engine.generate([ask(f"{i} sleep=0.3") for i in range(20)], SAMPLING, control=control):
        got.append((index, result))
        control.request_stop()
    # at most two rounds of 4: the ones out when the stop came, and those the workers sent as the first came back
    assert 1 < len(got) <= 8 and all(r.error is None for _, r in got)
    assert fake.calls == len(got) == fake.completed  # every request sent was answered and handed over


def _run_and_signal(argv, out: Path, signals: int, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "data").glob("*.parquet"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-800:]
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_loses_no_finished_response(tmp_path, signals):
    with FakeOpenAIServer(latency=0.2) as server:
        source = prompts(tmp_path, 60)
        out = tmp_path / "out"
        argv = ["generate", "--engine", "openai", "--base-url", server.base_url, "--model", server.model_id,
                "--source", str(source), "--out", str(out), "--max-concurrency", "8", "--rows-per-file", "4",
                "--flush-seconds", "1000", "-q", "--no-cache"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = _run_and_signal(argv, out, signals, env)
        assert proc.returncode == 130 and "rerun with --resume" in proc.stderr, proc.stderr[-800:]
        got = rows(out)
        assert not list((out / "data").glob(".*.tmp")) and not (out / "stats.json").exists()
        if signals == 1:
            assert "stopping: nothing more is sent" in proc.stderr
            assert len(got) == server.completed < 60  # every answer the server completed is on disk
        assert len({r["id"] for r in got}) == len(got) > 0
        resumed = subprocess.run(
            [sys.executable, "-m", "distill", *argv, "--resume"], env=env, capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stderr[-800:]
        assert len(rows(out)) == 60


# -- the Batch API --------------------------------------------------------------------------------------------------


def batch_flags(*extra):
    return ["--batch-poll-seconds", "0.05", *extra]


def test_batch_writes_the_same_rows_as_the_synchronous_engine(fake, tmp_path):
    source = prompts(tmp_path, 7)
    sync, batch = tmp_path / "sync", tmp_path / "batch"
    generate(fake, source, sync, "-n", "2", "--no-cache")
    generate(
        fake, source, batch, "-n", "2", "--no-cache", *batch_flags("--batch-max-requests", "5"), engine="openai-batch"
    )
    assert [(r["id"], r["completion"], r["prompt_tokens"]) for r in rows(batch)] == [
        (r["id"], r["completion"], r["prompt_tokens"]) for r in rows(sync)
    ]
    assert fake.batches_created == 3 and fake.batch_lines == 14  # 14 requests at 5 per batch
    state = json.loads((batch / "batches" / "train-00000-of-00001.json").read_text())
    assert [b["status"] for b in state["batches"]] == ["completed"] * 3


def test_batch_splits_at_the_byte_limit(fake, tmp_path):
    out = tmp_path / "out"
    generate(fake, prompts(tmp_path, 6, extra=" pad" * 100), out, *batch_flags("--batch-max-bytes", "3000"),
             engine="openai-batch")  # fmt: skip
    sizes = [len(content) for content in fake.files.values() if b'"custom_id"' in content and b'"method"' in content]
    assert fake.batches_created >= 3 and all(size <= 3000 for size in sizes) and len(rows(out)) == 6


@pytest.mark.parametrize("outcome, resubmitted", [("expired", 3), ("failed", 6), ("partial", 2)])
def test_batch_resubmits_only_what_is_missing(fake, tmp_path, outcome, resubmitted):
    fake.batch_outcomes = [outcome]
    out = tmp_path / "out"
    generate(fake, prompts(tmp_path, 6), out, *batch_flags(), engine="openai-batch")
    assert fake.batches_created == 2 and len(rows(out)) == 6 and stats(out)["errors"] == 0
    second = [f for f in fake.files.values() if b'"method"' in f][1]
    assert second.count(b"\n") == resubmitted  # the second batch holds only the requests the first did not answer
    assert fake.batch_lines == 6


def test_batch_gives_up_after_max_retries(fake, tmp_path):
    fake.batch_outcomes = ["failed"] * 3
    out = tmp_path / "out"
    generate(fake, prompts(tmp_path, 2), out, *batch_flags("--max-retries", "2"), engine="openai-batch")
    assert fake.batches_created == 3
    assert all(r["error"].startswith("batch_failed: invalid_request") for r in rows(out))


def test_interrupted_batch_run_submits_nothing_twice(fake, tmp_path):
    fake.batch_seconds = 3600  # a batch that takes its time
    source = prompts(tmp_path, 5)
    out = tmp_path / "out"
    flags = ["--engine", "openai-batch", "--base-url", fake.base_url, "--model", fake.model_id, "--source",
             str(source), "--out", str(out), "-q", *batch_flags()]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", "generate", *flags],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while fake.batches_created == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "keep running at the provider" in err and "--cancel" in err, err[-800:]
    assert fake.batches_created == 1
    # --overwrite would forget a batch that is paid for: refused
    refused = CliRunner().invoke(main, ["generate", *flags, "--overwrite"])
    assert refused.exit_code == 1 and "--cancel" in refused.output
    # the batch finishes at the provider meanwhile; the rerun collects it
    ((batch_id, batch),) = fake.batches.items()
    fake._loop.call_soon_threadsafe(fake._finish_batch, batch_id, "completed")
    time.sleep(0.2)
    result = CliRunner().invoke(main, ["generate", *flags, "--resume"])
    assert result.exit_code == 0, result.output
    assert fake.batches_created == 1 and len(rows(out)) == 5


def test_cancel_then_resume(fake, tmp_path):
    fake.batch_seconds = 3600
    source = prompts(tmp_path, 4)
    out = tmp_path / "out"
    flags = ["--engine", "openai-batch", "--base-url", fake.base_url, "--model", fake.model_id, "--source",
             str(source), "--out", str(out), "-q", *batch_flags()]  # fmt: skip
    # Submit, then stop waiting (a stop from the run's control, as a Ctrl-C would)
    from distill.config import GenerateConfig
    from distill.engines import make_engine
    from distill.settings import build_config

    config = build_config(GenerateConfig, None, {"engine": "openai-batch", "base_url": fake.base_url,
                                                 "model": "fake-model", "out": str(out), "source": str(source),
                                                 "batch_poll_seconds": 0.05, "quiet": True}, "test")  # fmt: skip
    engine = make_engine(config)
    control = RunControl()
    threading.Timer(0.5, control.request_stop).start()
    assert list(engine.generate([ask("a"), ask("b")], SAMPLING, control=control)) == []
    assert "keep running" in control.notes[0]
    result = CliRunner().invoke(main, ["generate", *flags, "--cancel"])
    assert result.exit_code == 0 and "cancelled 1 batches" in result.output
    assert [b["status"] for b in fake.batches.values()] == ["cancelled"]
    fake.batch_seconds = 0.1
    result = CliRunner().invoke(main, ["generate", *flags, "--resume"])
    assert result.exit_code == 0, result.output
    assert len(rows(out)) == 4


def test_dataset_card_says_what_generation_cost(fake, tmp_path):
    from distill.cards import dataset_card

    fake.reasoning = True
    out = tmp_path / "out"
    generate(fake, prompts(tmp_path, 4), out, "--price-input", "2", "--price-output", "8")
    got = stats(out)
    card = dataset_card(out, "me/traces", 4, "other")
    line = next(x for x in card.splitlines() if x.startswith("| generation |"))
    assert f"4 samples, {got['prompt_tokens']} prompt and {got['completion_tokens']} completion tokens" in line
    assert f"({got['reasoning_tokens']} of them reasoning)" in line and f"${got['cost_usd']:.2f} paid" in line


def test_the_benchmark_runs_at_a_tiny_size(tmp_path):
    from benchmarks import api

    items = api.bench_cache(tmp_path / "cache", 20, 0.05) + api.bench_budget(tmp_path / "budget", 10)
    assert [i["met"] for i in items[1:]] == [True, True, True], items  # times (items[0]) are the benchmark's
