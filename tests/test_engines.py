from types import SimpleNamespace

import pytest

from distill.config import GenerateConfig
from distill.engines import Request, Sampling, make_engine
from distill.engines.vllm_engine import engine_kwargs
from distill.errors import DistillError

PROMPTS = [
    "Calculate 2 + 3.",
    "Write a short poem about the sea, please, in the style of the capital of France.",
    "Paris",
]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return make_engine(GenerateConfig(model=tiny_model, engine="transformers", batch_size=3))


def requests():
    return [Request(messages=[{"role": "user", "content": p}]) for p in PROMPTS]


def test_left_padded_batches_match_one_by_one(engine):
    greedy = Sampling(temperature=0.0, max_tokens=6)
    batched = dict(engine.generate(requests(), greedy))
    engine.batch_size = 1
    try:
        single = dict(engine.generate(requests(), greedy))
    finally:
        engine.batch_size = 3
    assert sorted(batched) == [0, 1, 2]
    for i in batched:
        assert batched[i].text == single[i].text
        assert batched[i].completion_tokens == single[i].completion_tokens
        assert batched[i].prompt_tokens == single[i].prompt_tokens  # padding is not counted


def test_max_tokens_sets_length_finish(engine):
    results = dict(engine.generate(requests(), Sampling(temperature=1.0, max_tokens=3)))
    for r in results.values():
        assert r.completion_tokens <= 3
        assert r.finish_reason == ("length" if r.completion_tokens == 3 else "stop")


def test_prompt_over_the_context_is_an_error_result(engine):
    long = Request(messages=[{"role": "user", "content": "sea " * 600}])
    results = dict(engine.generate([long, *requests()], Sampling(max_tokens=2)))
    assert results[0].error.startswith("context_length: prompt has")
    assert all(results[i].error is None for i in (1, 2, 3))


def test_prefill_is_part_of_the_prompt(engine):
    plain = dict(engine.generate(requests()[:1], Sampling(temperature=0.0, max_tokens=2)))[0]
    filled = dict(engine.generate([Request(requests()[0].messages, "<think>\n")], Sampling(max_tokens=2)))[0]
    assert filled.prompt_tokens > plain.prompt_tokens


def test_min_p_reaches_generate_and_one_keeps_only_the_top_token(engine, monkeypatch):
    seen = []
    original = engine.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.model, "generate", spy)
    greedy = dict(engine.generate(requests(), Sampling(temperature=0.0, max_tokens=6)))
    assert "min_p" not in seen[-1]  # greedy decoding takes no sampling parameters
    top_only = dict(engine.generate(requests(), Sampling(temperature=1.5, max_tokens=6, min_p=1.0)))
    assert seen[-1]["min_p"] == 1.0 and seen[-1]["do_sample"] is True
    # min_p 1.0 keeps only the most likely token: hot sampling becomes greedy decoding.
    assert [top_only[i].text for i in range(3)] == [greedy[i].text for i in range(3)]
    dict(engine.generate(requests(), Sampling(temperature=1.0, max_tokens=2)))
    assert "min_p" not in seen[-1]  # 0 means off, and is not passed


def test_vllm_sampling_params_carry_min_p():
    pytest.importorskip("vllm")
    from distill.engines.vllm_engine import sampling_params

    params = sampling_params(Sampling(temperature=0.7, top_p=0.9, min_p=0.05, stop=["</a>"]), max_tokens=12)
    assert (params.temperature, params.top_p, params.min_p, params.max_tokens) == (0.7, 0.9, 0.05, 12)
    assert params.stop == ["</a>"]
    assert sampling_params(Sampling(), max_tokens=3).min_p == 0.0


def test_vllm_arguments_by_device():
    config = GenerateConfig(
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
        engine_args={"enable_prefix_caching": True, "dtype": "bfloat16"},
    )
    gpu = engine_kwargs(config, on_cpu=False)
    assert gpu["tensor_parallel_size"] == 8 and gpu["pipeline_parallel_size"] == 2
    assert gpu["distributed_executor_backend"] == "ray" and gpu["enable_prefix_caching"] is True
    assert gpu["dtype"] == "bfloat16"  # the pass-through wins
    assert gpu["gpu_memory_utilization"] == 0.9
    cpu = engine_kwargs(GenerateConfig(max_model_len=2048), on_cpu=True)
    assert cpu["dtype"] == "float32" and cpu["gpu_memory_utilization"] == 0.4 and cpu["max_model_len"] == 2048
    assert "data_parallel_size" not in cpu and "distributed_executor_backend" not in cpu


def test_small_cpu_machines_give_vllm_every_core():
    from distill.engines.vllm_engine import RESERVE_ENV, use_every_core

    env = {}
    assert use_every_core(env, cpus=2) and env == {RESERVE_ENV: "0"}
    env = {RESERVE_ENV: "1"}  # the user's choice stands
    assert not use_every_core(env, cpus=2) and env == {RESERVE_ENV: "1"}
    env = {}
    assert not use_every_core(env, cpus=64) and env == {}  # one core of 64 for the scheduler costs little


def test_unknown_engine():
    with pytest.raises(DistillError, match="unknown engine `tgi`"):
        make_engine(SimpleNamespace(engine="tgi"))


def test_vllm_engine_close_shuts_the_engine_core_down():
    # Dropping the LLM left vLLM's engine-core process busy-polling a core (and holding its KV cache) for the
    # rest of a `distill run`; close() must stop it.
    from types import SimpleNamespace

    from distill.engines.vllm_engine import VllmEngine

    calls = []
    llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(shutdown=lambda: calls.append(1))))
    engine = VllmEngine.__new__(VllmEngine)
    engine.llm = llm
    engine.close()
    assert calls == [1] and engine.llm is None
    engine.close()  # a second close does nothing
    assert calls == [1]
