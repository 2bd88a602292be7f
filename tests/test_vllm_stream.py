"""In-process vLLM hands each result over the step it finishes, so the writer flushes rows as they come (not per
chunk of 512 requests at the chunk's end), isolates a request vLLM refuses, and takes its requests off the engine
when the caller stops. A stand-in for `vllm.LLM` plays vLLM 0.32's queue-and-step API (enqueue_chat, step)."""

from types import SimpleNamespace

import pytest

from distill.engines.base import Request, Sampling
from distill.engines.vllm_engine import VllmEngine


class FakeLLM:
    """`enqueue_chat` queues requests (ids as vLLM returns them, with a random suffix); `step` finishes one
    request per call, in queue order; a conversation saying "bad" is refused, and sinks the whole call."""

    def __init__(self):
        self.counter, self.queue, self.steps, self.aborted = 0, [], 0, []
        self.llm_engine = SimpleNamespace(
            step=self.step, has_unfinished_requests=lambda: bool(self.queue), abort_request=self.aborted.extend
        )

    def enqueue_chat(self, conversations, params, **kwargs):
        if any(c[0]["content"] == "bad" for c in conversations):
            raise ValueError("prompt too long for the model")
        ids = []
        for conversation in conversations:
            self.counter += 1
            self.queue.append((str(self.counter), conversation[0]["content"]))
            ids.append(f"{self.counter}-1a2b3c4d")
        return ids

    def step(self):
        self.steps += 1
        request_id, content = self.queue.pop(0)
        done = SimpleNamespace(text=content.upper(), finish_reason="stop", token_ids=[1, 2, 3], logprobs=None)
        running = SimpleNamespace(request_id="other", finished=False, outputs=[], prompt_token_ids=[])
        return [running, SimpleNamespace(request_id=request_id, finished=True, outputs=[done], prompt_token_ids=[9])]


def engine() -> tuple[VllmEngine, FakeLLM]:
    llm = FakeLLM()
    vllm_engine = VllmEngine.__new__(VllmEngine)
    vllm_engine.llm, vllm_engine.model_name, vllm_engine.max_model_len = llm, "fake", 4096
    vllm_engine.tokenizer = None  # no --logprobs here: the results carry no token ids to cut
    vllm_engine._prompt_tokens = lambda request: 10
    return vllm_engine, llm


@pytest.fixture(autouse=True)
def no_vllm_params(monkeypatch):
    monkeypatch.setattr(
        "distill.engines.vllm_engine.sampling_params",
        lambda sampling, max_tokens: SimpleNamespace(max_tokens=max_tokens, logprobs=None),
    )


def test_each_result_comes_the_step_it_finishes():
    vllm_engine, llm = engine()
    requests = [Request([{"role": "user", "content": f"q{i}"}]) for i in range(600)]
    stream = vllm_engine.generate(requests, Sampling(max_tokens=16))
    index, result = next(stream)
    # The first row is handed over after one engine step, not after the 512 requests of a chunk.
    assert (index, result.text, result.completion_tokens, llm.steps) == (0, "Q0", 3, 1)
    rest = list(stream)
    assert sorted(i for i, _ in rest) == list(range(1, 600)) and llm.steps == 600


def test_a_request_vllm_refuses_fails_alone():
    vllm_engine, llm = engine()
    requests = [Request([{"role": "user", "content": c}]) for c in ("a", "bad", "c")]
    results = dict(vllm_engine.generate(requests, Sampling(max_tokens=16)))
    assert results[1].error.startswith("engine: prompt too long")
    assert (results[0].text, results[2].text) == ("A", "C") and results[0].error is None


def test_a_consumer_that_stops_takes_its_requests_off_the_engine():
    vllm_engine, llm = engine()
    requests = [Request([{"role": "user", "content": f"q{i}"}]) for i in range(5)]
    stream = vllm_engine.generate(requests, Sampling(max_tokens=16))
    next(stream)
    stream.close()  # the writer was interrupted
    assert llm.aborted == ["2", "3", "4", "5"]
