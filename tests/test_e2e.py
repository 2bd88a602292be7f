"""End to end on the real SmolLM2-135M-Instruct: transformers, in-process CPU vLLM, and a vLLM OpenAI server.

Marked slow (minutes on 2 cores): plain `python -m pytest` skips them, `python -m pytest -m slow` runs them;
CI runs both.
"""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

ACCEPTANCE = [
    "generate",
    "--source",
    "reasoning-gym:basic_arithmetic",
    "--num-prompts",
    "8",
    "-n",
    "2",
    "--max-tokens",
    "256",
]


def check_rows(out, teacher="smollm2-135m"):
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 16
    assert len({r["id"] for r in rows}) == 16
    assert sorted({r["prompt_id"] for r in rows}) == [f"rg-basic_arithmetic-0-{i}" for i in range(8)]
    for r in rows:
        assert r["error"] is None, r["error"]
        assert r["reasoning"] or r["answer"], r
        assert r["gold"] is not None and r["teacher"] == teacher
        assert r["completion_tokens"] > 0 and r["prompt_tokens"] > 0
        assert r["finish_reason"] in ("stop", "length")
    return rows


@pytest.fixture(scope="module")
def transformers_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "out"
    result = run_cli(*ACCEPTANCE, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 16 samples for 8 prompts" in result.stdout
    return out


def test_acceptance_command_on_smollm2(transformers_run):
    check_rows(transformers_run)


def test_sigkill_halfway_then_resume_gives_the_same_ids(transformers_run, tmp_path):
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "distill",
        *ACCEPTANCE,
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--rows-per-file",
        "2",
        "-q",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((out / "data").glob("train-*.parquet"))) >= 2:  # about halfway: 2 of 8 batches flushed
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = pq.read_table(out / "data").num_rows
    assert 0 < partial < 16
    resumed = run_cli(*ACCEPTANCE, "--out", str(out), "--batch-size", "2", "--rows-per-file", "2", "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = check_rows(out)
    whole = pq.read_table(transformers_run / "data").column("id").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(whole)


def test_vllm_engine_in_process(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    result = run_cli(*ACCEPTANCE, "--out", str(out), "--engine", "vllm", "--max-model-len", "2048", "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    check_rows(out)


def test_openai_engine_against_vllm_server(vllm_server, transformers_run, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        *ACCEPTANCE,
        "--out",
        str(out),
        "--engine",
        "openai",
        "--base-url",
        vllm_server,
        "-q",
        env={"OPENAI_API_KEY": "sk-e2e-marker-secret"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The server reports the model as `smollm2-135m`, so ids are the same as the transformers engine's.
    rows = check_rows(out)
    assert {r["id"] for r in rows} == set(pq.read_table(transformers_run / "data").column("id").to_pylist())
    for path in out.rglob("*"):
        if path.is_file():
            assert b"sk-e2e-marker-secret" not in path.read_bytes()
    assert "sk-e2e-marker-secret" not in result.stdout + result.stderr
