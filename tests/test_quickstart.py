"""The README's main command, `distill run recipes/quickstart.yaml`, end to end on the real models (slow).

The Qwen2.5-Coder-0.5B teacher writes traces on vLLM's CPU build, SmolLM2-135M learns from the kept ones, and the
eval table shows teacher, before and after with strict and lenient columns and the gain with its interval. The run
is killed once the teacher's traces are written: the rerun must not generate them again.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_distils_the_teacher_and_prints_the_gain(tmp_path):
    # As a user runs the checkout's recipe from any folder: its data file is read from beside the recipe, and
    # --out puts the outputs where the user says.
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    argv = [sys.executable, "-m", "distill", "run", str(ROOT / "recipes" / "quickstart.yaml"), "--out", "run"]
    run = tmp_path / "run"
    math_stats = run / "generate" / "math" / "stats.json"

    first = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 1800
    while first.poll() is None and time.monotonic() < deadline and not math_stats.exists():
        time.sleep(0.5)
    assert first.poll() is None, first.stdout.read()[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()

    second = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[generate:math] complete, skipped" in second.stderr
    stats = json.loads(math_stats.read_text())
    assert stats["samples"] == recipe["generate"][0]["num_prompts"] * recipe["generate"][0]["num_samples"]
    assert stats["duplicate_ids"] == 0

    for name in ("math", "general"):
        assert json.loads((run / "filter" / name / "stats.json").read_text())["kept"] > 0
        assert (run / "filter" / name / "report.html").exists()
    assert list((run / "mix" / "data").glob("*.parquet"))
    assert (run / "train" / "model.safetensors").exists()  # full fine-tuning, not an adapter

    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert list(summary["models"]) == ["teacher", "before", "after"]
    for result in summary["models"].values():
        assert 0.0 <= result["pass@1"] <= 1.0 and 0.0 <= result["pass@1_lenient"] <= 1.0
    gain = summary["gain"]
    assert (gain["before"], gain["after"]) == ("before", "after")
    models = summary["models"]
    assert gain["strict"]["gain"] == pytest.approx(models["after"]["pass@1"] - models["before"]["pass@1"], abs=1e-6)
    assert gain["strict"]["low"] <= gain["strict"]["gain"] <= gain["strict"]["high"]
    # The student learnt from the teacher: it writes right \boxed{} answers it never wrote before.
    assert gain["strict"]["gain"] > 0
    table = second.stdout
    assert "lenient" in table and "teacher" in table and "gain after - before (95% paired bootstrap" in table

    third = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and third.stdout.count("complete: skip") == 7
