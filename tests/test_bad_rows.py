"""One bad row never stops a run: a row that cannot be read is rejected with `malformed_row` on both backends
(and a resumed run passes it too); an imported layout's shape errors are one line naming the row and the column;
imports stream with bounded memory; a recipe's aliases are bounded in bytes."""

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.errors import DistillError
from distill.recipe import load_yaml
from distill.schema import GENERATE_SCHEMA
from distill.testing import example_row

REPO = Path(__file__).resolve().parents[1]
# A schema of the generate output's types where every field may be null (what another tool may write).
LOOSE = pa.schema([field.with_nullable(True) for field in GENERATE_SCHEMA])


def rows_with_bad_ones(n: int = 140, bad=(5, 130, 131)) -> list[dict]:
    rows = []
    for i in range(n):
        row = example_row(id=f"id{i}", prompt_id=f"p{i}", problem=f"What is {i} + {i}?", gold=str(2 * i),
                          completion=f"<think>\nadd\n</think>\n\n\\boxed{{{2 * i}}}", teacher="t")  # fmt: skip
        if i == bad[0]:
            row["prompt_messages"] = "not JSON {"
        elif i == bad[1]:
            row["prompt_messages"] = json.dumps({"role": "user"})  # JSON, not a list of turns
        elif i == bad[2]:
            row["prompt_id"] = None
        rows.append(row)
    return rows


def write(folder: Path, rows: list[dict]) -> Path:
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=LOOSE), folder / "data" / "train-part-0.parquet")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read(out: Path, where: str) -> list[dict]:
    files = sorted((out / where).glob("*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


def test_a_row_that_cannot_be_read_is_rejected_not_a_crash(tmp_path):
    gen = write(tmp_path / "gen", rows_with_bad_ones())
    out = tmp_path / "out"
    result = invoke("filter", gen, "--out", out, "--verifiers", "math", "--option", "math.workers=0", "-q")
    assert result.exit_code == 0, result.output
    rejected = {r["id"]: r["filter_reason"] for r in read(out, "rejected")}
    assert {k: v for k, v in rejected.items() if v == "malformed_row"} == {
        "id5": "malformed_row", "id130": "malformed_row", "id131": "malformed_row"
    }  # fmt: skip
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == 140 and stats["dropped_malformed_row"] == 3 and stats["kept"] == 137


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, not even `except Exception` handlers."""


def test_resume_past_a_malformed_row(tmp_path, monkeypatch):
    """A run killed after its first commit resumes and passes the bad rows (every --resume crashed on them)."""
    from distill.filter import run as filter_run

    gen = write(tmp_path / "gen", rows_with_bad_ones())
    out = tmp_path / "out"
    saved = filter_run._save_progress

    def dying(out_dir, progress):
        saved(out_dir, progress)
        if progress["rows_done"] >= 64:
            raise Killed

    monkeypatch.setattr(filter_run, "_save_progress", dying)
    argv = ["filter", gen, "--out", out, "--verifiers", "format", "--rows-per-file", "32", "--batch-size", "32", "-q"]
    with pytest.raises(Killed):
        CliRunner().invoke(main, [str(a) for a in argv], catch_exceptions=False)
    assert not (out / "stats.json").exists()
    monkeypatch.setattr(filter_run, "_save_progress", saved)
    result = invoke(*argv, "--resume")
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == 140 and stats["dropped_malformed_row"] == 3


@pytest.mark.slow
def test_the_ray_backend_rejects_the_same_rows(tmp_path):
    pytest.importorskip("ray")
    gen = write(tmp_path / "gen", rows_with_bad_ones(44, bad=(1, 20, 43)))
    local, remote = tmp_path / "local", tmp_path / "ray"
    base = ["filter", gen, "--verifiers", "format", "-q"]
    assert invoke(*base, "--out", local).exit_code == 0
    code = f"""
        import ray, sys
        from click.testing import CliRunner
        from distill.cli import main
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        result = CliRunner().invoke(main, {[str(a) for a in base] + ["--out", str(remote), "--backend", "ray"]!r})
        print(result.output)
        sys.exit(result.exit_code)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert json.loads((remote / "stats.json").read_text()) == json.loads((local / "stats.json").read_text())
    assert sorted(r["id"] for r in read(remote, "rejected") if r["filter_reason"] == "malformed_row") == [
        "id1", "id20", "id43"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "layout,record,column",
    [
        ("sharegpt", {"conversations": ["hello", "world"]}, "conversations"),
        ("sharegpt", {"conversations": [42, 7]}, "conversations"),
        ("messages", {"messages": "not JSON ["}, "messages"),
        ("messages", {"messages": [[1, 2]]}, "messages"),
        ("openr1", {"problem": "p", "generations": "one string", "answer": "1"}, "generations"),
        ("openr1", {"problem": "p", "generations": [7], "answer": "1"}, "generations"),
    ],
)
def test_shape_errors_name_the_row_and_the_column(tmp_path, layout, record, column):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "a"} | record) + "\n")
    result = invoke("filter", path, "--out", tmp_path / "out", "--input-format", layout, "--verifiers", "format")
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{path}:0" in lines[0] and f"`{column}`" in lines[0], result.output


MEMORY_CHILD = """
import json, sys
from pathlib import Path
from distill.filter.dataset.inputs import prepare_inputs, write_normalized
folder = Path(sys.argv[1])
plans = prepare_inputs([str(folder / "openr1.jsonl")], "openr1", {})
files = write_normalized(plans, {}, folder / "norm")
import pyarrow.parquet as pq
rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
# This process's own peak (VmHWM): ru_maxrss would also count the pytest process it was forked from.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(rows, peak >> 10)
"""


def test_an_openr1_record_with_many_generations_streams(tmp_path):
    """A 100 KB problem with 4,000 short generations: every row carries the problem (twice, with the prompt), so
    made whole they are 800 MB of text; streamed, memory stays near one batch."""
    record = {"problem": "x" * 100_000, "generations": ["<think>a</think>\\boxed{1}"] * 4000, "answer": "1"}
    (tmp_path / "openr1.jsonl").write_text(json.dumps(record) + "\n")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows, peak_mb = map(int, done.stdout.split())
    assert rows == 4000
    assert peak_mb < 600, f"peak {peak_mb} MB"  # made whole: ~2 GB


def test_recipe_aliases_are_bounded_in_bytes(tmp_path):
    """104 KB of YAML whose aliases repeat a 100 KB string 1,000 times: refused at once, in one line."""
    text = "a: &big " + "x" * 100_000 + "\n" + "b: [" + ", ".join(["*big"] * 1000) + "]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DistillError, match="MiB of text through its aliases") as raised:
        load_yaml(path)
    assert "\n" not in str(raised.value)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10 < 200
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: &t hello\nb: [*t, *t]\n")
    assert load_yaml(ok) == {"a": "hello", "b": ["hello", "hello"]}
