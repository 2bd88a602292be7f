"""`distill filter --resume`: a run killed at any write finishes with exactly the rows and stats of a clean run."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_filter import row, write_generate

import distill.filter.run as filter_run
from distill.cli import main

# 24 rows over 3 input files: right and wrong answers, errors, several samples per prompt and one near-duplicate
# prompt, so that dedupe, --max-per-prompt and --select best all have something to remember across a resume.
ROWS = []
for i in range(24):
    n = i // 3
    problem = f"What is {n} + {n}?" if n != 7 else "What is 6 + 6 ?"  # prompt p7 repeats p6 up to spacing
    answer = 2 * n if i % 3 != 2 else 2 * n + 1
    error = "http_500: gave up" if i == 4 else None
    completion = None if error else f"<think>\n{n} and {n} make {answer}\n</think>\n\nSo \\boxed{{{answer}}}."
    ROWS.append(row(i, problem, completion, str(2 * n), prompt_id=f"p{n}", k=i % 3, error=error))

MODES = {
    "plain": [],
    "dedupe": ["--dedupe", "near", "--dedupe-threshold", "0.5"],
    "max-per-prompt": ["--max-per-prompt", "1"],
    "select-best": ["--select", "best"],
}


@pytest.fixture
def inputs(tmp_path):
    folders = []
    for part in range(3):
        folders.append(write_generate(tmp_path / f"gen{part}", ROWS[part * 8 : (part + 1) * 8]))
    return [str(f) for f in folders]


def filter_args(inputs, out, mode):
    # math.workers=0: math-verify in this process, as a pool's start-up would dominate these tiny runs
    return ["filter", *inputs, "--out", str(out), "--verifiers", "math,format", "--option", "math.workers=0", "-q",
            "--batch-size", "2", "--rows-per-file", "3", *MODES[mode]]  # fmt: skip


def outcome(out):
    def ids(folder):
        files = sorted((out / folder).glob("*.parquet"))
        return sorted(r for f in files for r in pq.read_table(f, columns=["id"]).column("id").to_pylist())

    stats = json.loads((out / "stats.json").read_text())
    return ids("data"), ids("rejected"), stats


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, not even `except Exception` handlers."""


def count_writes(monkeypatch, kill_at=None):
    """Count the output files written; with kill_at, die right after writing that one (before the record)."""
    calls = {"n": 0}
    write = filter_run.ShardWriter.write

    def counting(self, rows):
        path = write(self, rows)
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
        return path

    monkeypatch.setattr(filter_run.ShardWriter, "write", counting)
    return calls


@pytest.mark.parametrize("mode", MODES)
def test_killed_at_every_write_resumes_to_the_clean_result(inputs, tmp_path, monkeypatch, mode):
    clean = tmp_path / "clean"
    calls = count_writes(monkeypatch)
    result = CliRunner().invoke(main, filter_args(inputs, clean, mode), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected, writes = outcome(clean), calls["n"]
    kept, rejected, stats = expected
    assert len(kept) + len(rejected) == len(ROWS) and not set(kept) & set(rejected)
    assert writes > 4  # enough commit points for the kills below to land in different places

    for kill_at in range(1, writes + 1):
        out = tmp_path / f"killed{kill_at}"
        count_writes(monkeypatch, kill_at)
        with pytest.raises(Killed):
            CliRunner().invoke(main, filter_args(inputs, out, mode), catch_exceptions=False)
        assert not (out / "stats.json").exists()
        count_writes(monkeypatch)
        result = CliRunner().invoke(main, [*filter_args(inputs, out, mode), "--resume"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert outcome(out) == expected, f"killed after write {kill_at}"
        assert not (out / ".staging").exists()


def test_resume_of_a_complete_output_changes_nothing(inputs, tmp_path):
    out = tmp_path / "out"
    CliRunner().invoke(main, filter_args(inputs, out, "plain"), catch_exceptions=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    result = CliRunner().invoke(main, [*filter_args(inputs, out, "plain"), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_resume_refuses_other_settings_or_inputs(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    count_writes(monkeypatch, kill_at=2)
    with pytest.raises(Killed):
        CliRunner().invoke(main, filter_args(inputs, out, "plain"), catch_exceptions=False)
    count_writes(monkeypatch)
    result = CliRunner().invoke(main, [*filter_args(inputs, out, "dedupe"), "--resume"])
    assert result.exit_code == 1 and "cannot resume" in result.output and "`dedupe`" in result.output
    result = CliRunner().invoke(main, [*filter_args(inputs[:2], out, "plain"), "--resume"])
    assert result.exit_code == 1 and "other input files" in result.output
    (out / "progress.json").write_text("{not json")
    result = CliRunner().invoke(main, [*filter_args(inputs, out, "plain"), "--resume"])
    assert result.exit_code == 1 and "damaged" in result.output and "--overwrite" in result.output


def test_resume_without_a_progress_record_starts_again(inputs, tmp_path):
    out = tmp_path / "out"
    CliRunner().invoke(main, filter_args(inputs, out, "plain"), catch_exceptions=False)
    expected = outcome(out)
    (out / "progress.json").unlink()
    (out / "stats.json").unlink()
    shutil.copy(next((out / "data").glob("*.parquet")), out / "data" / "train-00000-of-00001-part-00099.parquet")
    result = CliRunner().invoke(main, [*filter_args(inputs, out, "plain"), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert outcome(out) == expected
