"""The README's main command, `distill run recipes/quickstart.yaml`, end to end on the real SmolLM2 (slow).

One run covers both promises: killed in the middle of generation, the rerun resumes instead of starting over,
and it ends with a filtered dataset and its report, a trained LoRA adapter and a before/after eval table.
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


def test_quickstart_interrupted_then_resumed_to_the_end(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["out"] = str(tmp_path / "run")
    recipe["generate"][0]["rows_per_file"] = 16  # flush after each batch, so a kill leaves finished files
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(recipe))
    argv = [sys.executable, "-m", "distill", "run", str(path)]
    math_data = tmp_path / "run" / "generate" / "math" / "data"

    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 1200
    while first.poll() is None and time.monotonic() < deadline:
        if len(list(math_data.glob("train-*.parquet"))) >= 2:
            break
        time.sleep(0.2)
    assert first.poll() is None, first.stdout.read()[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before = len(list(math_data.glob("train-*.parquet"))) * 16

    second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[generate:math] resuming" in second.stderr
    math_stats = json.loads((math_data.parent / "stats.json").read_text())
    assert math_stats["samples"] == 96 and math_stats["duplicate_ids"] == 0
    assert math_stats["generated_this_run"] == 96 - done_before  # nothing finished was generated again

    run = tmp_path / "run"
    for name in ("math", "general"):
        assert json.loads((run / "filter" / name / "stats.json").read_text())["total"] > 0
        assert (run / "filter" / name / "report.html").exists()
    assert list((run / "mix" / "data").glob("*.parquet"))
    assert (run / "train" / "adapter_config.json").exists()
    assert (
        json.loads((run / "train" / "train_results.json").read_text())["global_step"] == recipe["train"]["max_steps"]
    )
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert list(summary["models"]) == ["before", "after"]
    for result in summary["models"].values():
        assert 0.0 <= result["pass@1"] <= 1.0
    assert "pass@1" in second.stdout + second.stderr
    # Everything is complete now: a third run skips every stage.
    third = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and third.stdout.count("complete: skip") == 7
