"""`--backend ray` asks Ray for what the cluster has: the stages' actors fit beside the reads, or the run is refused
in one line (Ray itself would wait for the CPUs forever). The CI machine has 2 CPUs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_filter import row, write_generate

from distill.errors import DistillError
from distill.filter.ray_backend import MIN_STAGE_CPUS, READ_RESERVE, plan_stages
from distill.testing import example_row

REPO = Path(__file__).resolve().parents[1]


def test_the_stages_fit_the_cluster_beside_the_reads():
    for cpus in (1, 2, 4, 16):
        for names in (["code"], ["code", "math"], ["math", "format", "code", "judge"], ["math"]):
            if MIN_STAGE_CPUS * len(names) > cpus - READ_RESERVE:
                with pytest.raises(DistillError, match="Ray would wait for them forever"):
                    plan_stages([(name, {}) for name in names], {}, cpus)
                continue
            plan = plan_stages([(name, {}) for name in names], {}, cpus)
            # Every stage grown to its most actors still leaves the reads their CPUs.
            assert sum(per_actor * actors for _, per_actor, actors in plan) <= cpus - READ_RESERVE + 1e-9, (
                cpus,
                names,
            )
            assert all(per_actor >= MIN_STAGE_CPUS and actors >= 1 for _, per_actor, actors in plan)
    # What the verifiers ask for, when it fits: code's 4 sandbox workers, math's one pool process.
    assert [p[1] for p in plan_stages([("code", {}), ("math", {})], {}, 16)] == [4.0, 1.0]
    # On 2 CPUs both scale down (the bug: 4 CPUs asked for code alone, or 1 + 1 leaving none for the reads).
    code, math = plan_stages([("code", {}), ("math", {"workers": 1})], {}, 2)
    assert code[1] + math[1] <= 1.5 and code[0]["workers"] == 4 and math[0]["workers"] == 1


def test_stages_that_cannot_fit_are_refused_in_one_line():
    with pytest.raises(DistillError, match=r"ray_stages ask for 4 CPUs.*the Ray cluster has 2 CPUs: lower") as e:
        plan_stages([("code", {}), ("math", {})], {"code": {"num_cpus": 4}}, 2)
    assert "\n" not in str(e.value)
    with pytest.raises(DistillError, match="give Ray more CPUs or use --backend local"):
        plan_stages([("math", {}), ("code", {}), ("judge", {})], {}, 1)


def code_and_math_rows() -> list[dict]:
    tests = json.dumps({"asserts": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"})
    rows = [
        row(i, f"What is {i} + {i}?", f"<think>\nadd\n</think>\n\n\\boxed{{{2 * i}}}", str(2 * i)) for i in range(6)
    ]
    for i, body in enumerate(["return a + b", "return a - b", "return a + b"]):
        answer = f"```python\ndef add(a, b):\n    {body}\n```"
        completion = f"<think>\nsum\n</think>\n\n{answer}"
        rows.append(example_row(id=f"c{i}", prompt_id=f"c{i}", domain="code", problem="Add two numbers.",
                                completion=completion, tests=tests, teacher="t"))  # fmt: skip
    return rows


@pytest.mark.skipif(os.cpu_count() is None, reason="no CPU count")
def test_code_and_math_finish_on_this_machine(tmp_path):
    """`distill filter --backend ray --verifiers code,math` with the defaults, a Ray of this machine's CPUs (2 in
    CI): it hung before (4 CPUs asked for the code stage; or both actors holding both CPUs, the reads never run)."""
    pytest.importorskip("ray")
    gen = write_generate(tmp_path / "gen", code_and_math_rows())
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"}
    cmd = [sys.executable, "-m", "distill", "filter", str(gen), "--out", str(out), "--backend", "ray",
           "--verifiers", "code,math", "-q"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == 9 and stats["kept"] == 8 and stats["dropped_code_wrong_answer"] == 1, stats
