"""benchmarks/engines.py's cheap parts: the table items, the prompts both sides send, and the bare loops against ours.

The real comparison (vLLM in-process and as a server, SmolLM2 on transformers) is `python -m benchmarks.engines`;
here the bare transformers loop runs against our engine on the tiny model, and the bare aiohttp client against
the fake OpenAI server, so a change that makes the two sides do different work shows up in CI.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import engines  # importable from the repository root: pytest's `pythonpath` (pyproject.toml)
from distill.config import GenerateConfig
from distill.engines.base import Request, Sampling
from distill.engines.openai_engine import OpenAIEngine
from distill.generate.run import THINK_PREFILL, run_generate
from distill.generate.sources import load_prompts
from tests.fake_openai_server import FakeOpenAIServer

# -- items ----------------------------------------------------------------------------------------------------


def test_item_ratio_and_target():
    row = engines.item("vllm engine overhead", 95.0, 100.0, "tok/s")
    assert row == {
        "name": "vllm engine overhead",
        "ours": 95.0,
        "baseline": 100.0,
        "unit": "tok/s",
        "ratio": 0.95,
        "target": ">= 0.95",
        "met": True,
    }
    assert engines.item("x", 94.9, 100.0, "tok/s")["met"] is False
    assert engines.item("x", 120.0, 100.0, "tok/s", "<= 1.1")["met"] is False


def test_informational_item_has_no_target():
    row = engines.item("openai throughput (concurrency 4)", 50.0, 40.0, "tok/s", None)
    assert (row["ratio"], row["target"], row["met"]) == (1.25, None, None)


def _run(rate: float, tokens: int = 100, texts: dict | None = None) -> dict:
    return {"seconds": tokens / rate, "completion_tokens": tokens, "tokens_per_second": rate, "texts": texts or {}}


def test_compare_items_takes_each_sides_median():
    ours = [_run(90.0), _run(200.0), _run(100.0, texts={"a": "x", "b": "y"})]
    base = [_run(100.0), _run(10.0), _run(110.0, texts={"a": "x", "b": "z"})]
    overhead, tokens = engines.compare_items("vllm engine overhead", ours, base)
    assert (overhead["ours"], overhead["baseline"], overhead["ratio"], overhead["met"]) == (100.0, 100.0, 1.0, True)
    assert tokens["name"] == "vllm output tokens"
    assert (tokens["ours"], tokens["baseline"], tokens["target"], tokens["met"]) == (100, 100, None, None)
    assert engines.same_outputs(ours, base) == "1/2"


def test_sides_alternate_baseline_first():
    calls = []
    ours, base = engines.alternate(
        3, lambda k: calls.append(("ours", k)) or k, lambda k: calls.append(("base", k)) or k
    )
    assert calls == [("base", 0), ("ours", 0), ("ours", 1), ("base", 1), ("base", 2), ("ours", 2)]
    assert ours == base == [0, 1, 2]


def test_format_table_lists_every_item():
    items = [engines.item("a", 1, 2, "tok/s"), engines.item("b", 2, 1, "tok/s", None)]
    table = engines.format_table(items).splitlines()
    assert len(table) == 3 and "NO" in table[1] and table[2].split()[-1] == "-"


# -- what both sides send -------------------------------------------------------------------------------------


def test_prompts_are_seeded_mixed_and_what_distill_sends(tmp_path):
    rows = engines.make_prompts(40)
    assert rows == engines.make_prompts(40)
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    assert 0 < sum(engines.R1_INSTRUCTION not in r["problem"] for r in rows) <= 10  # general prompts, ~1 in 4
    path = engines.write_prompts(tmp_path / "p.jsonl", rows)
    config = GenerateConfig(source=str(path), prompt_template="{problem}", out=str(tmp_path / "out"))
    loaded = load_prompts(config)
    assert [p.prompt_id for p in loaded] == [r["id"] for r in rows]
    assert [p.messages for p in loaded] == [engines.chat_messages(r["problem"]) for r in rows]


def test_default_prefill_is_distills():
    assert engines.default_prefill() == ""


def test_ours_is_the_cli_with_greedy_sampling(tmp_path):
    command = engines.ours_command("vllm", tmp_path / "p.jsonl", tmp_path / "o", 64, ["--max-model-len", "2048"])
    assert command[1:5] == ["-m", "distill", "generate", "--engine"]
    joined = " ".join(command)
    for flag in ("--prompt-template {problem}", "--temperature 0", "--max-tokens 64", "--max-model-len 2048"):
        assert flag in joined


# -- the bare loops against ours ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefill_think", [False, True])
def test_bare_transformers_loop_writes_what_our_engine_writes(tiny_model, tmp_path, prefill_think):
    prefill = THINK_PREFILL if prefill_think else ""
    rows = engines.sort_by_prompt_length(engines.make_prompts(7), tiny_model, prefill)
    prompts = engines.write_prompts(tmp_path / "p.jsonl", rows)
    out = tmp_path / "ours"
    config = GenerateConfig(
        source=str(prompts),
        prompt_template="{problem}",
        engine="transformers",
        model=tiny_model,
        batch_size=3,
        temperature=0.0,
        max_tokens=12,
        prefill_think=prefill_think,
        out=str(out),
        quiet=True,
    )
    run_generate(config)
    ours = engines.read_ours(out)
    spec = {**engines._spec("transformers", prompts, 12, model=tiny_model, batch_size=3), "prefill": prefill}
    bare = engines.bare_transformers(spec)
    assert bare["tokens"] == ours["tokens"]
    assert bare["texts"] == ours["texts"]
    assert bare["completion_tokens"] == ours["completion_tokens"] > 0


@pytest.mark.parametrize("prefill", ["", THINK_PREFILL])
def test_bare_openai_client_sends_what_our_engine_sends(tmp_path, prefill):
    rows = engines.make_prompts(9)
    prompts = engines.write_prompts(tmp_path / "p.jsonl", rows)
    with FakeOpenAIServer() as server:
        spec = engines._spec("openai", prompts, 32, base_url=server.base_url, model="fake-model", concurrency=4)
        spec["prefill"] = prefill
        bare = engines.bare_openai(spec)
        bodies = list(server.bodies)
        assert 1 <= server.max_in_flight <= 4
    assert bare["completion_tokens"] == 3 * len(rows)  # the fake server reports 3 per completion
    assert set(bare["texts"]) == {r["id"] for r in rows}
    assert all(text.startswith(prefill + "echo: ") for text in bare["texts"].values())
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "fake-model")
    sampling = Sampling(temperature=0.0, top_p=0.95, max_tokens=32)
    expected = [engine._body(Request(engines.chat_messages(r["problem"]), prefill), sampling) for r in rows]
    canonical = sorted(json.dumps(b, sort_keys=True) for b in bodies)
    assert canonical == sorted(json.dumps(b, sort_keys=True) for b in expected)


def test_baseline_runs_in_its_own_process(tmp_path):
    prompts = engines.write_prompts(tmp_path / "p.jsonl", engines.make_prompts(3))
    with FakeOpenAIServer() as server:
        spec = engines._spec("openai", prompts, 8, base_url=server.base_url, model="fake-model", concurrency=2)
        result = engines.run_baseline(spec, tmp_path / "side")
    assert result["completion_tokens"] == 9 and result["seconds"] > 0


# -- nothing left running -------------------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_failing_side_raises_with_its_log_and_leaves_no_child(tmp_path):
    # The leader exits at once; the child it left behind (like vLLM's engine core) must not outlive the run.
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys; child = subprocess.Popen(['sleep', '60']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('boom'); sys.exit(3)"
    )
    with pytest.raises(RuntimeError, match="exited with 3") as info:
        engines.run_process([sys.executable, "-c", script], tmp_path / "side.log")
    assert "boom" in str(info.value)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_server_is_stopped_when_a_side_fails(tmp_path, monkeypatch):
    from benchmarks.checks import faults

    fake = subprocess.Popen(["sleep", "120"], start_new_session=True)

    def start(port, log_path, **kwargs):
        return fake, "http://127.0.0.1:9/v1"

    def fail(*args, **kwargs):
        raise RuntimeError("side failed")

    monkeypatch.setattr(faults, "start_vllm_server", start)
    monkeypatch.setattr(engines, "run_baseline", fail)
    try:
        with pytest.raises(RuntimeError, match="side failed"):
            engines.bench_openai(engines.QUICK, tmp_path, 0.15)
        deadline = time.monotonic() + 10
        while fake.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake.poll() is not None and not _group_alive(fake.pid)
    finally:
        if fake.poll() is None:
            os.killpg(fake.pid, signal.SIGKILL)
