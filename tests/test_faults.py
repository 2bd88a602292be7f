"""Fault injection (issue 6): the FaultProxy in front of the scripted fake server, and the openai engine through it.

Each fault kind once, exactly (the proxy's script), to show how the engine recovers or gives up; then whole
`distill generate` runs at a 20% mix and at 50% of each kind, where every sample must end done or with an error
reason, exactly once. The same check against real vLLM is `benchmarks/checks/faults.py` (the reliability run).
"""

from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("pyarrow")

from click.testing import CliRunner  # noqa: E402

from benchmarks.checks.faults import (  # noqa: E402
    FAULT_KINDS,
    FaultProxy,
    check_rows,
    generate_through_proxy,
    outcome_for,
    spread,
    write_prompts,
)
from distill.cli import main  # noqa: E402
from distill.engines.base import Request, Sampling  # noqa: E402
from distill.engines.openai_engine import OpenAIEngine  # noqa: E402
from distill.errors import DistillError  # noqa: E402
from tests.fake_openai_server import FakeOpenAIServer  # noqa: E402

SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_tokens=16)
# Its first 40 draws at a 20% mix hold every kind at least twice, so 40 samples see all five.
MIX_SEED = 31
TIMEOUT = 0.5  # the client's request timeout in the engine tests: a held request costs this much


@pytest.fixture
def fake():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def engine_for(proxy: FaultProxy, **kwargs) -> OpenAIEngine:
    options = dict(max_retries=3, backoff_base=0.01, backoff_max=0.05, request_timeout=TIMEOUT)
    options.update(kwargs)
    return OpenAIEngine(proxy.base_url, "fake-model", **options)


def ask_once(engine: OpenAIEngine, text: str = "two plus two"):
    [(index, result)] = list(engine.generate([Request(messages=[{"role": "user", "content": text}])], SAMPLING))
    assert index == 0
    return result


@pytest.fixture
def fast_backoff(monkeypatch):
    """The CLI builds its engine with a 1 s backoff base; tests wait 0.01-0.05 s instead (Retry-After still holds)."""
    original = OpenAIEngine.from_config.__func__

    def from_config(cls, config):
        engine = original(cls, config)
        engine.backoff_base, engine.backoff_max = 0.01, 0.05
        return engine

    monkeypatch.setattr(OpenAIEngine, "from_config", classmethod(from_config))


def generate(proxy: FaultProxy, prompts: Path, out: Path, request_timeout: float, samples: int = 2):
    args = [
        "generate", "--engine", "openai", "--base-url", proxy.base_url, "--model", "fake-model",
        "--source", str(prompts), "-n", str(samples), "--max-tokens", "16", "--request-timeout", str(request_timeout),
        "--max-retries", "6", "--max-concurrency", "8", "--out", str(out), "-q",
    ]  # fmt: skip
    return CliRunner().invoke(main, args)


# -- the proxy itself -----------------------------------------------------------------------------------------


def test_proxy_without_faults_is_transparent(fake):
    with FaultProxy(fake.base_url) as proxy:
        assert proxy.base_url.endswith("/v1") and proxy.port != fake.port
        engine = OpenAIEngine(proxy.base_url, None, max_retries=0)  # GET /v1/models passes through
        assert engine.model == "fake-model"
        result = ask_once(engine)
    assert result.error is None and result.text == "echo: two plus two"
    assert (proxy.requests, proxy.faults, proxy.forwarded, proxy.passed) == (1, 0, 1, 1)
    assert fake.calls == 1


def test_proxy_rejects_bad_rates(fake):
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy(fake.base_url, {"status503": 0.1})
    with pytest.raises(ValueError, match="add up to at most 1"):
        FaultProxy(fake.base_url, {"drop": 0.6, "timeout": 0.6})


# -- one fault of each kind: the engine recovers --------------------------------------------------------------


def test_500_is_retried(fake):
    with FaultProxy(fake.base_url, script=["status500"]) as proxy:
        result = ask_once(engine_for(proxy))
    assert result.error is None
    assert proxy.injected == {"status500": 1} and proxy.requests == 2
    assert fake.calls == 1  # the 500 came from the proxy; only the retry reached the server


def test_429_honours_retry_after(fake):
    with FaultProxy(fake.base_url, script=["status429"], retry_after=1) as proxy:
        result = ask_once(engine_for(proxy))
    assert result.error is None and proxy.injected == {"status429": 1}
    (first, _), (second, _) = proxy.arrivals
    # The backoff alone would wait at most 0.05 s: the retry waited for the server's Retry-After.
    assert second - first >= 0.95


@pytest.mark.parametrize("variant", ["before", "after"])
def test_timeout_gives_up_at_the_request_timeout_and_retries(fake, variant):
    with FaultProxy(fake.base_url, script=[f"timeout:{variant}"]) as proxy:
        result = ask_once(engine_for(proxy))
    assert result.error is None and proxy.variants == {f"timeout:{variant}": 1}
    # The client hung up at its own timeout: the proxy held it about that long, not its hold_max of an hour.
    [held] = proxy.holds
    assert TIMEOUT * 0.8 <= held < TIMEOUT + 2
    assert fake.calls == (2 if variant == "after" else 1)  # `after`: the server did the first one for nothing


@pytest.mark.parametrize("variant", ["before", "after"])
def test_dropped_connection_is_retried(fake, variant):
    with FaultProxy(fake.base_url, script=[f"drop:{variant}"]) as proxy:
        result = ask_once(engine_for(proxy))
    assert result.error is None and proxy.variants == {f"drop:{variant}": 1}
    assert proxy.requests == 2


@pytest.mark.parametrize("variant", ["cut", "half"])
def test_truncated_body_is_retried(fake, variant):
    with FaultProxy(fake.base_url, script=[f"truncate:{variant}"]) as proxy:
        result = ask_once(engine_for(proxy))
    assert result.error is None and result.text == "echo: two plus two"
    assert proxy.variants == {f"truncate:{variant}": 1} and fake.calls == 2


# -- a fault every time: the engine gives up with a reason ----------------------------------------------------


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("status500", "http_500: injected fault"),
        ("timeout:before", "timeout: no complete response within 0.5 s"),
        ("drop:before", "connection: "),
        ("truncate:cut", "connection: response body cut short"),
        ("truncate:half", "bad_response: not a chat completion"),
    ],
)
def test_persistent_fault_becomes_an_error_with_its_reason(fake, fault, reason):
    with FaultProxy(fake.base_url, script=[fault] * 3, retry_after=0) as proxy:
        result = ask_once(engine_for(proxy, max_retries=2))
    assert result.text == "" and result.error.startswith(reason)
    assert result.error.endswith("(gave up after 3 attempts)")
    assert proxy.requests == 3 and proxy.faults == 3


def test_persistent_429_stops_the_run_after_the_rate_limit_timeout(fake):
    # A 429 is the rate limit, not a failure of the request: it waits its turn, not one of --max-retries; a server
    # that answers nothing else for --rate-limit-timeout seconds stops the run with one line.
    with FaultProxy(fake.base_url, script=["status429"] * 10_000, retry_after=0) as proxy:
        with pytest.raises(DistillError, match="answered only 429"):
            ask_once(engine_for(proxy, max_retries=2, rate_limit_timeout=0.5))
    assert proxy.faults >= 2 and fake.calls == 0  # it waited, tried again, and gave up without a success


# -- whole generate runs ----------------------------------------------------------------------------------------


def expected_samples(prompts: Path, count: int, samples: int = 2) -> set[tuple[str, int]]:
    return {(pid, k) for pid in write_prompts(prompts, count) for k in range(samples)}


def test_generate_at_a_20_percent_mix_accounts_for_every_sample(fake, tmp_path):
    # As the reliability check runs it: `python -m distill generate` in a process of its own, real backoff.
    prompts = tmp_path / "prompts.jsonl"
    expected = expected_samples(prompts, 20)
    common = dict(upstream=fake.base_url, model="fake-model", prompts=prompts, expected=expected)
    options = dict(num_samples=2, max_tokens=16, request_timeout=2, max_concurrency=8, process_timeout=120)
    baseline = generate_through_proxy(tmp_path, "clean", rates={}, **common, **options)
    result = generate_through_proxy(tmp_path, "mix", rates=spread(0.2), seed=MIX_SEED, **common, **options)

    assert baseline.returncode == 0 and baseline.rows.done == 40 and baseline.proxy.faults == 0
    assert result.returncode == 0, result.stderr_tail
    rows = result.rows
    assert rows.rows_lost == 0 and rows.done + rows.errors == 40
    assert all(result.proxy.injected[kind] > 0 for kind in FAULT_KINDS), result.proxy.injected
    outcome = outcome_for("20% mix", result, baseline)
    assert outcome.ok and outcome.tried == result.proxy.faults > 0
    assert f"success rate {rows.success_rate:.0%}" in outcome.note and "time vs 0% faults" in outcome.note


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_generate_at_50_percent_of_one_kind_accounts_for_every_sample(fake, tmp_path, fast_backoff, kind):
    prompts = tmp_path / "prompts.jsonl"
    expected = expected_samples(prompts, 8)
    with FaultProxy(fake.base_url, {kind: 0.5}, seed=3) as proxy:
        # A held request costs the whole timeout: short for that kind, roomy for the others (a busy CI machine).
        outcome = generate(proxy, prompts, tmp_path / "out", request_timeout=1.5 if kind == "timeout" else 10)
    assert outcome.exit_code == 0, outcome.output
    rows = check_rows(tmp_path / "out", expected)
    assert rows.rows_lost == 0 and rows.done + rows.errors == 16
    assert proxy.injected[kind] > 0 and proxy.faults == proxy.injected[kind]
    # Error rows are samples that met a fault on all 7 attempts: each one's reason says which.
    assert rows.faulted_attempts == 7 * rows.errors
    assert proxy.requests == rows.done + proxy.faults
