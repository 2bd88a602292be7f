"""The openai engine against a scripted fake server (fast), and against a real vLLM OpenAI server (slow)."""

import email.utils
import socket
import sys
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("aiohttp")

from distill.engines.base import Request, Result, Sampling  # noqa: E402
from distill.engines.openai_engine import OpenAIEngine, parse_retry_after  # noqa: E402
from distill.errors import DistillError, MissingDependency  # noqa: E402

try:  # tests/ is on sys.path when it is not a package (pytest's default import mode)
    from fake_openai_server import Action, FakeOpenAIServer, ok, status
except ImportError:  # tests/ became a package
    from tests.fake_openai_server import Action, FakeOpenAIServer, ok, status

KEY = "sk-MARKER-123"
SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_tokens=16)


@pytest.fixture
def fake():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def make_engine(server: FakeOpenAIServer, **kwargs) -> OpenAIEngine:
    options = dict(max_retries=3, backoff_base=0.01, backoff_max=0.05, request_timeout=5.0)
    options.update(kwargs)
    return OpenAIEngine(server.base_url, server.model_id, **options)


def ask(text: str = "hi", prefill: str = "") -> Request:
    return Request(messages=[{"role": "user", "content": text}], prefill=prefill)


def run_one(engine: OpenAIEngine, request: Request | None = None, sampling: Sampling = SAMPLING) -> Result:
    results = list(engine.generate([request or ask()], sampling))
    assert [i for i, _ in results] == [0]
    return results[0][1]


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "openai-engine"]


def config(**kwargs) -> SimpleNamespace:
    values = dict(
        base_url=None,
        model=None,
        api_key_env="DISTILL_TEST_KEY",
        max_concurrency=4,
        request_timeout=5.0,
        max_retries=1,
        rate_limit_timeout=300.0,
        server_wait=5.0,
    )
    values.update(kwargs)
    return SimpleNamespace(**values)


# -- request and response -------------------------------------------------------------------------------------


def test_success_reads_text_finish_reason_and_usage(fake):
    result = run_one(make_engine(fake), ask("two plus two"))
    assert result == Result(
        text="echo: two plus two",
        reasoning=None,
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=3,
        token_source="server",
    )
    body = fake.bodies[0]
    assert body == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "two plus two"}],
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 16,
        "n": 1,
    }


def test_stop_strings_are_sent_only_when_given(fake):
    engine = make_engine(fake)
    run_one(engine, sampling=Sampling(max_tokens=8, stop=["</answer>"]))
    assert fake.bodies[0]["stop"] == ["</answer>"]
    run_one(engine, sampling=Sampling(max_tokens=8, stop=[]))
    assert "stop" not in fake.bodies[1]


def test_min_p_is_sent_only_when_set(fake):
    engine = make_engine(fake)
    run_one(engine, sampling=Sampling(max_tokens=8, min_p=0.1))
    assert fake.bodies[0]["min_p"] == 0.1
    run_one(engine, sampling=Sampling(max_tokens=8))
    assert "min_p" not in fake.bodies[1]  # hosted APIs without min_p never see the key


def test_reasoning_content_and_reasoning_are_both_read(fake):
    fake.script = [ok(reasoning_content="deepseek thinks"), ok(reasoning="vllm thinks"), ok(content=None)]
    engine = make_engine(fake)
    assert run_one(engine).reasoning == "deepseek thinks"
    assert run_one(engine).reasoning == "vllm thinks"
    last = run_one(engine)
    assert last.reasoning is None and last.text == ""


def test_prefill_continues_the_assistant_turn(fake):
    run_one(make_engine(fake), ask("solve it", prefill="<think>\n"))
    body = fake.bodies[0]
    assert body["messages"] == [
        {"role": "user", "content": "solve it"},
        {"role": "assistant", "content": "<think>\n"},
    ]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    # Without a prefill the extension fields stay out: hosted APIs reject unknown fields.
    run_one(make_engine(fake), ask("again"))
    assert "continue_final_message" not in fake.bodies[1] and "add_generation_prompt" not in fake.bodies[1]


def test_request_messages_are_not_modified_by_prefill(fake):
    request = ask("q", prefill="<think>")
    run_one(make_engine(fake), request)
    assert request.messages == [{"role": "user", "content": "q"}]


# -- retries --------------------------------------------------------------------------------------------------


def test_503_is_retried_until_success(fake):
    fake.script = [status(503), status(502), status(500)]
    result = run_one(make_engine(fake, max_retries=3))
    assert result.error is None and result.text == "echo: hi"
    assert fake.calls == 4


def test_retry_after_is_honoured(fake):
    fake.script = [status(429, "slow down", headers={"Retry-After": "1"})]
    start = time.monotonic()
    result = run_one(make_engine(fake))
    assert result.error is None
    assert fake.calls == 2
    assert fake.arrivals[1] - fake.arrivals[0] >= 1.0
    assert time.monotonic() - start >= 1.0


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 <= parse_retry_after(when) <= 3.5
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("kind", ["drop", "cut", "truncated"])
def test_broken_responses_are_retried(fake, kind):
    fake.script = [Action(kind), Action(kind)]
    result = run_one(make_engine(fake))
    assert result.error is None and result.text == "echo: hi"
    assert fake.calls == 3


def test_timeout_is_retried(fake):
    fake.script = [Action("slow", delay=2.0)]
    start = time.monotonic()
    result = run_one(make_engine(fake, request_timeout=0.3))
    assert result.error is None
    assert fake.calls == 2
    assert time.monotonic() - start < 1.5  # the client gave up on the slow reply instead of waiting for it


@pytest.mark.parametrize(
    "action, kind",
    [
        (status(503), "http_503"),
        (Action("drop"), "connection"),
        (Action("truncated"), "bad_response"),
        (Action("slow", delay=1.0), "timeout"),
    ],
)
def test_error_result_after_max_retries(fake, action, kind):
    fake.script = [action] * 10
    result = run_one(make_engine(fake, max_retries=2, request_timeout=0.2))
    assert fake.calls == 3  # the first try and two retries
    assert result.error.startswith(f"{kind}: "), result.error
    assert result.text == "" and result.finish_reason is None


def test_unreachable_server_gives_connection_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_base=0.01, server_wait=0)
    engine._ready = True  # past the readiness check (tested below): a server that went away mid-run
    results = dict(engine.generate([ask("a"), ask("b")], SAMPLING))
    assert sorted(results) == [0, 1]
    assert all(r.error.startswith("connection: ") for r in results.values())


def test_400_is_not_retried(fake):
    fake.script = [status(400, "temperature must be non-negative")]
    result = run_one(make_engine(fake))
    assert fake.calls == 1
    assert result.error == "bad_request: temperature must be non-negative"


def test_too_long_prompt_is_a_context_length_error(fake):
    message = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."
    fake.script = [status(400, message)]
    result = run_one(make_engine(fake))
    assert fake.calls == 1
    assert result.error == f"context_length: {message}"


def test_max_tokens_over_the_server_limit_is_fatal(fake):
    # vLLM's words: every request of the run would fail the same way, so stop instead of writing error rows.
    message = "max_tokens=4000 cannot be greater than max_model_len=2048. Please request fewer output tokens."
    fake.script = [status(400, message)]
    with pytest.raises(DistillError, match="lower --max-tokens") as info:
        run_one(make_engine(fake), sampling=Sampling(max_tokens=4000))
    assert "max_tokens=4000" in str(info.value)


def test_server_message_is_cut_to_300_chars(fake):
    fake.script = [Action("status", status=400, body="x" * 1000)]
    result = run_one(make_engine(fake))
    assert result.error == "bad_request: " + "x" * 300


def test_key_echoed_by_the_server_is_redacted(fake):
    fake.script = [status(400, f"invalid request from key {KEY}")]
    result = run_one(make_engine(fake, api_key=KEY))
    assert KEY not in result.error and "***" in result.error


# -- credentials, fatal errors ---------------------------------------------------------------------------------


def test_authorization_header_comes_from_the_env_var(fake, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    engine = OpenAIEngine.from_config(config(base_url=fake.base_url, model="fake-model"))
    run_one(engine)
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_no_authorization_header_without_a_key(fake, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    engine = OpenAIEngine.from_config(config(base_url=fake.base_url, model="fake-model"))
    run_one(engine)
    assert "Authorization" not in fake.headers[0]


def test_401_raises_without_revealing_the_key(fake, monkeypatch):
    fake.api_key = "sk-the-right-one"
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    engine = OpenAIEngine.from_config(config(base_url=fake.base_url, model="fake-model", max_retries=3))
    with pytest.raises(DistillError) as info:
        list(engine.generate([ask(str(i)) for i in range(5)], SAMPLING))
    message = str(info.value)
    assert "HTTP 401" in message and "DISTILL_TEST_KEY" in message and fake.base_url in message
    assert KEY not in message and KEY not in repr(info.value)
    assert KEY not in repr(engine) and KEY not in str(engine)
    assert "api_key=set" in repr(engine)
    assert fake.calls <= 5  # not retried
    assert engine_threads() == []


def test_403_is_fatal_too(fake):
    fake.script = [status(403, "forbidden")]
    with pytest.raises(DistillError, match="HTTP 403"):
        run_one(make_engine(fake, api_key=KEY))


def test_404_names_the_model(fake):
    fake.script = [status(404, "The model `fake-model` does not exist.")]
    with pytest.raises(DistillError, match="--model") as info:
        run_one(make_engine(fake))
    assert "fake-model" in str(info.value) and "--base-url" in str(info.value)


def test_fatal_error_stops_the_other_requests(fake):
    fake.script = [status(404)]
    engine = make_engine(fake, max_concurrency=1)
    with pytest.raises(DistillError):
        list(engine.generate([ask(f"{i} sleep=0.05") for i in range(20)], SAMPLING))
    time.sleep(0.2)
    assert fake.calls <= 2
    assert engine_threads() == []


# -- concurrency and streaming ----------------------------------------------------------------------------------


def test_concurrency_is_bounded(fake):
    engine = make_engine(fake, max_concurrency=3)
    results = list(engine.generate([ask(f"{i} sleep=0.2") for i in range(10)], SAMPLING))
    assert sorted(i for i, _ in results) == list(range(10))
    assert 1 < fake.max_in_flight <= 3
    assert all(r.error is None for _, r in results)


def test_results_are_yielded_as_they_complete(fake):
    engine = make_engine(fake, max_concurrency=8)
    requests = [ask("sleep=0.8"), ask("sleep=0"), ask("sleep=0.4")]
    start = time.monotonic()
    seen = []
    for index, result in engine.generate(requests, SAMPLING):
        seen.append((index, time.monotonic() - start))
        assert result.text == f"echo: {requests[index].messages[0]['content']}"
    assert [i for i, _ in seen] == [1, 2, 0]
    assert seen[0][1] < 0.5  # the fast one came out before the slow one finished, not at the end of the batch


def test_every_index_is_yielded_once_with_mixed_outcomes(fake):
    fake.script = [status(400, "bad"), status(503), Action("drop")]
    engine = make_engine(fake, max_concurrency=4)
    results = list(engine.generate([ask(str(i)) for i in range(12)], SAMPLING))
    assert sorted(i for i, _ in results) == list(range(12))
    assert sum(r.error is not None for _, r in results) == 1  # only the 400; the others succeed on retry


def test_closing_the_generator_early_cancels_the_rest(fake):
    engine = make_engine(fake, max_concurrency=2)
    generator = engine.generate([ask(f"{i} sleep=0.3") for i in range(10)], SAMPLING)
    next(generator)
    start = time.monotonic()
    generator.close()
    assert time.monotonic() - start < 1.0
    assert engine_threads() == []
    # Uncancelled, the requests would keep coming (about 8 of 10 by now); a request sent just before the
    # close may still reach the server, so allow the two in flight and one starting.
    time.sleep(1.0)
    assert fake.calls <= 4


def test_keyboard_interrupt_in_the_consumer_stops_cleanly(fake):
    engine = make_engine(fake, max_concurrency=2)
    generator = engine.generate([ask(f"{i} sleep=0.3") for i in range(10)], SAMPLING)
    next(generator)
    with pytest.raises(KeyboardInterrupt):
        generator.throw(KeyboardInterrupt)
    assert engine_threads() == []


def test_empty_batch_and_reuse(fake):
    engine = make_engine(fake)
    assert list(engine.generate([], SAMPLING)) == []
    assert run_one(engine).error is None
    assert run_one(engine).error is None  # a second generate call opens a fresh session
    engine.close()
    engine.close()


# -- construction ------------------------------------------------------------------------------------------------


def test_base_url_is_required():
    with pytest.raises(DistillError, match="--base-url"):
        OpenAIEngine.from_config(config())


def test_model_is_discovered_from_the_server(fake, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    fake.api_key = KEY
    engine = OpenAIEngine.from_config(config(base_url=fake.base_url + "/"))
    assert engine.model_name == "fake-model" == engine.model
    run_one(engine)
    assert fake.bodies[0]["model"] == "fake-model"


def test_model_discovery_failure_says_to_pass_model(fake):
    fake.models_status = 404
    with pytest.raises(DistillError, match="--model"):
        OpenAIEngine.from_config(config(base_url=fake.base_url))
    fake.models_status = 500  # a server still starting, for longer than --server-wait
    with pytest.raises(DistillError, match="did not come up within 0.3 s .*--server-wait"):
        OpenAIEngine.from_config(config(base_url=fake.base_url, server_wait=0.3))


def test_model_discovery_with_a_wrong_key_is_a_credentials_error(fake, monkeypatch):
    fake.api_key = "sk-the-right-one"
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    with pytest.raises(DistillError, match="rejected the credentials") as info:
        OpenAIEngine.from_config(config(base_url=fake.base_url))
    assert KEY not in str(info.value)


def test_missing_aiohttp(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(MissingDependency, match="pip install aiohttp"):
        OpenAIEngine("http://127.0.0.1:1/v1", "m")


def test_repr_hides_credentials_in_the_url():
    engine = OpenAIEngine(f"http://user:{KEY}@127.0.0.1:1/v1?key={KEY}", "m", api_key=KEY)
    assert KEY not in repr(engine)
    assert "127.0.0.1:1/v1" in repr(engine)


# -- a real vLLM server ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vllm_server_end_to_end(vllm_server, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    engine = OpenAIEngine.from_config(config(base_url=vllm_server, max_retries=2, request_timeout=300.0))
    assert engine.model_name  # discovered from /v1/models
    prompts = ["What is 2 + 2?", "Name a colour.", "Say hello.", "Count to three."]
    requests = [ask(p) for p in prompts]
    # The CPU build of vLLM crashes on a per-request `seed`, and the engine never sends one.
    sampling = Sampling(temperature=0.6, top_p=0.95, max_tokens=32)
    results = dict(engine.generate(requests, sampling))
    assert sorted(results) == [0, 1, 2, 3]
    for result in results.values():
        assert result.error is None, result.error
        assert result.text.strip()
        assert result.finish_reason in {"stop", "length"}
        assert result.prompt_tokens > 0 and result.completion_tokens > 0


@pytest.mark.slow
def test_vllm_server_prefill_and_too_long_prompt(vllm_server):
    engine = OpenAIEngine(vllm_server, None, max_retries=1, request_timeout=300.0)
    long_prompt = " ".join(["word"] * 3000)
    requests = [ask(long_prompt), ask("What is 2 + 2?", prefill="The answer is")]
    results = dict(engine.generate(requests, Sampling(temperature=0.0, top_p=1.0, max_tokens=16)))
    too_long, prefilled = results[0], results[1]
    assert too_long.error is not None
    assert too_long.error.split(":")[0] in {"context_length", "bad_request"}, too_long.error
    assert prefilled.error is None, prefilled.error
    assert prefilled.completion_tokens > 0
    assert not prefilled.text.startswith("The answer is")  # the server returns only what follows the prefill
