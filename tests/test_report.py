"""`write_report`: one self-contained HTML page for a filter output folder, with every data string escaped."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distill.filter.report as report_module
from distill.errors import DistillError
from distill.filter.report import Reservoir, write_report
from distill.schema import filter_schema
from distill.testing import example_row

VERIFIERS = ["math", "judge"]
HOSTILE = "<script>alert('pwned')</script>"


def row(i: int, *, kept: bool, reasoning: str = "step one, step two", tokens: int | None = 100) -> dict:
    judge_score = float(8 if kept else 3) if i % 2 else None
    data = example_row(
        id=f"s{i}",
        prompt_id=f"p{i // 2}",
        sample_index=i % 2,
        domain="math" if i % 3 else "general",
        problem=f"What is {i} + {i}?",
        prompt_messages=json.dumps([{"role": "user", "content": f"What is {i} + {i}?"}]),
        gold=str(2 * i),
        reasoning=reasoning,
        answer=str(2 * i if kept else 2 * i + 1),
        completion=f"<think>{reasoning}</think>{2 * i}",
        prompt_tokens=20,
        completion_tokens=tokens,
        teacher="smollm2-135m",
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        verdict_math={"passed": kept, "reason": "ok" if kept else "wrong_answer", "score": None, "details": None},
        verdict_judge={
            "passed": kept if judge_score is not None else None,
            "reason": "ok" if judge_score is not None else "judge_unparseable",
            "score": judge_score,
            "details": json.dumps({"model": "fake", "prompt_version": "v1", "raw": "SCORE: 8"}),
        },
    )
    if not kept:
        data["filter_reason"] = "math_wrong_answer"
    return data


def write_rows(path, rows, rejected: bool) -> None:
    schema = filter_schema(VERIFIERS, rejected=rejected)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=4)


@pytest.fixture
def filter_folder(tmp_path):
    out = tmp_path / "filtered"
    kept = [row(i, kept=True, tokens=50 + i) for i in range(10)]
    kept[3]["completion_tokens"] = None  # falls back to words of reasoning
    rejected = [row(100 + i, kept=False, tokens=400 + i) for i in range(6)]
    # A hostile trace: model-written text must never reach the page as markup.
    rejected[0]["reasoning"] = f"{HOSTILE} & <b>bold</b>"
    rejected[0]["answer"] = HOSTILE
    rejected[0]["completion_tokens"] = None
    for r in rejected:
        r["reasoning"] = HOSTILE + " " + r["reasoning"]
    write_rows(out / "data" / "train-00000-of-00001-part-00000.parquet", kept[:6], rejected=False)
    write_rows(out / "data" / "train-00000-of-00001-part-00001.parquet", kept[6:], rejected=False)
    write_rows(out / "rejected" / "train-00000-of-00001-part-00000.parquet", rejected, rejected=True)
    stats = {
        "total": 16,
        "kept": 10,
        "dropped_math_wrong_answer": 6,
        "dropped_duplicate": 0,
        "pass_rate": {"math": 0.625, "judge": 0.5},
        "pass_rate_by_domain": {"math": 0.7, "general": 0.5, HOSTILE: 0.1},
        "prompts_without_kept_sample": 3,
    }
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def test_report_contents(filter_folder):
    path = write_report(filter_folder)
    assert path == filter_folder / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Five plots: pass rate per verifier, per domain, lengths, judge scores, drop reasons.
    assert page.count("data:image/png;base64,") == 5
    for text in (
        "Pass rate per verifier",
        "Reasoning length",
        "Judge scores",
        "Drop reasons",
        "62.5%",
        "50.0%",
        "prompts_without_kept_sample",
        "math_wrong_answer",
        "keep rate",
    ):
        assert text in page, text
    assert ">16<" in page and ">10<" in page and ">3<" in page
    # Samples of both sides with their verdicts and filter_reason.
    assert "Kept samples" in page and "Rejected samples" in page
    assert "filter_reason" in page and "wrong_answer" in page and "judge_unparseable" in page
    # Nothing from the data is markup: the hostile trace is shown escaped, never as a tag.
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    assert not (filter_folder / ".report.html.tmp").exists()


def test_report_is_deterministic_and_self_contained(filter_folder):
    first = write_report(filter_folder).read_text(encoding="utf-8")
    second = write_report(filter_folder).read_text(encoding="utf-8")
    assert first == second
    # No external resources: no links to other files or servers.
    assert "http://" not in first and "https://" not in first and "<link" not in first


def test_report_without_judge_or_rejected(tmp_path):
    out = tmp_path / "f"
    rows = [row(i, kept=True) for i in range(3)]
    for r in rows:
        r.pop("verdict_judge")
    schema = filter_schema(["math"])
    (out / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "data" / "a.parquet")
    (out / "stats.json").write_text(json.dumps({"total": 3, "kept": 3, "pass_rate": {"math": 1.0}}))
    page = write_report(out).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2  # pass rate and lengths: no judge, no drops
    assert "Judge scores" not in page
    assert "No rows." in page  # the rejected side


def test_not_a_filter_folder(tmp_path):
    with pytest.raises(DistillError, match="folder not found"):
        write_report(tmp_path / "missing")
    with pytest.raises(DistillError, match="no stats.json"):
        write_report(tmp_path)
    # A generate output: stats.json of another shape.
    (tmp_path / "data").mkdir()
    (tmp_path / "stats.json").write_text(json.dumps({"prompts": 8, "samples": 16}))
    with pytest.raises(DistillError, match="must go through `distill filter`"):
        write_report(tmp_path)
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(DistillError, match="unreadable"):
        write_report(tmp_path)


def test_damaged_parquet_is_named(filter_folder):
    bad = filter_folder / "data" / "train-00000-of-00001-part-00002.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DistillError, match="part-00002.parquet is unreadable"):
        write_report(filter_folder)


def test_histogram_values_and_cap(filter_folder, monkeypatch):
    files = sorted((filter_folder / "data").glob("*.parquet"))
    lengths, scores, rows = report_module.scan(files)
    # Row s3 had no token count: its length is the word count of its reasoning ("step one, step two" = 4).
    assert sorted(lengths.values) == sorted([4.0] + [50.0 + i for i in range(10) if i != 3])
    assert sorted(scores.values) == [8.0] * 5  # the odd rows carry a judge score
    monkeypatch.setattr(report_module, "HIST_CAP", 4)
    lengths, scores, rows = report_module.scan(files)
    assert rows == 10 and lengths.seen == 10 and len(lengths.values) == 4
    assert len(scores.values) == 4


def test_reservoir_is_uniform_sample():
    res = Reservoir(cap=1000, seed=0)
    for start in range(0, 100_000, 7_000):
        res.add(np.arange(start, min(start + 7_000, 100_000)))
    assert res.seen == 100_000 and len(res.values) == 1000 and len(set(res.values)) == 1000
    # Drawn from the whole stream, not just its beginning or end.
    assert res.values.min() < 10_000 and res.values.max() > 90_000 and 40_000 < res.values.mean() < 60_000
