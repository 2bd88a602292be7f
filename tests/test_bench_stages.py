"""benchmarks/synth.py makes data the stages accept, with the shapes asked for; benchmarks/stages.py's item logic."""

import json
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import stages, synth
from distill.config import FilterConfig
from distill.filter.dataset.dedupe import PromptDeduper
from distill.filter.run import run_filter
from distill.generate.parse import parse_trace
from distill.schema import GENERATE_SCHEMA


@pytest.fixture(scope="module")
def rows():
    return synth.generate_rows(300, samples=4, seed=1)


def test_generate_rows_fit_the_schema_with_n_samples_per_prompt(rows):
    table = pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA)  # raises on a missing column or a wrong type
    assert table.num_rows == 1200
    assert len(set(table.column("id").to_pylist())) == 1200
    assert set(Counter(table.column("prompt_id").to_pylist()).values()) == {4}
    assert rows == synth.generate_rows(300, samples=4, seed=1)  # seeded


def test_reasoning_and_answer_are_what_the_completion_parses_to(rows):
    for row in rows:
        trace = parse_trace(row["completion"])
        assert trace.reasoning.strip() == row["reasoning"].strip()
        assert trace.answer.strip() == row["answer"].strip()
        assert (
            (row["finish_reason"] == "length")
            == row["truncated"]
            == (not trace.think_closed and "<think>" in row["completion"])
        )


def test_the_mix_has_every_kind_of_sample(rows):
    domains = Counter(r["domain"] for r in rows)
    assert domains["general"] > 0 and domains["math"] > domains["general"]
    assert any(r["truncated"] for r in rows)
    assert any("<think>" not in r["completion"] for r in rows)  # no think block
    assert any("\\boxed" not in r["answer"] and r["domain"] == "math" and r["answer"] for r in rows)
    assert any(
        "铅笔" in r["problem"] or "求" in r["problem"] or "余数" in r["problem"] for r in rows
    )  # Chinese prompts
    # Every math prompt has a gold (a few of them unparseable), general prompts have none.
    assert all(r["gold"] for r in rows if r["domain"] == "math")
    assert not any(r["gold"] for r in rows if r["domain"] == "general")
    assert any(r["gold"].startswith("See the worked solution") for r in rows if r["domain"] == "math")


def test_reasoning_lengths_are_long_tailed():
    lengths = synth.reasoning_tokens(np.random.default_rng(0), 20000)
    median = np.median(lengths)
    assert 250 < median < 350
    assert lengths.mean() > 1.4 * median  # right skew
    assert np.percentile(lengths, 99) > 6 * median  # a tail to thousands of tokens


def test_the_filter_accepts_them_and_drops_for_the_expected_reasons(tmp_path):
    source = synth.write_generate_output(tmp_path / "gen", 800, samples=4, seed=2, rows_per_file=300)
    assert len(list((source / "data").glob("train-00000-of-00001-part-*.parquet"))) == 3
    config = FilterConfig(
        inputs=[str(source)],
        out=str(tmp_path / "filtered"),
        verifiers={"math": {"workers": 0}, "format": {}, "language": {}},
        quiet=True,
    )
    stats = run_filter(config)
    assert stats["total"] == 800
    assert 0.35 < stats["kept"] / stats["total"] < 0.8
    for reason in ("math_wrong_answer", "math_no_final_answer", "language_language_mixing", "format_no_think_block"):
        assert stats.get(f"dropped_{reason}", 0) > 0, reason
    # Equivalent forms pass: more math passes than literal copies of the gold alone would give.
    assert stats["verifiers"]["math"]["pass_rate"] > synth.ANSWER_MIX["literal"] + 0.05
    # Chinese prompts answered in Chinese are kept.
    kept = pq.read_table(tmp_path / "filtered" / "data", columns=["problem"]).column("problem").to_pylist()
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in problem) for problem in kept)


def test_dedupe_prompts_have_the_asked_fraction_of_copies_and_the_deduper_finds_them():
    deduper = PromptDeduper(threshold=0.8)
    copies = found = false = total = 0
    for batch in synth.dedupe_prompts(6000, near_fraction=0.2, seed=3, batch=256):
        assert len(batch) <= 256
        verdicts = deduper.check_batch([(pid, text) for pid, text, _ in batch])
        for (_, _, source), verdict in zip(batch, verdicts, strict=True):
            total += 1
            copies += source is not None
            found += source is not None and verdict is not None
            false += source is None and verdict is not None
    assert total == 6000
    assert abs(copies / total - 0.2) < 0.02
    assert found / copies > 0.9
    assert false == 0  # distinct prompts are far apart


def test_sft_rows_have_the_filter_messages_shape(tmp_path):
    out = synth.write_sft_output(tmp_path / "sft", 50, seed=4)
    table = pq.read_table(out / "data")
    assert table.num_rows == 50
    for messages in table.column("messages").to_pylist():
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["content"].startswith("<think>\n") and "\n</think>\n\n" in messages[1]["content"]
    lengths = [len(m[1]["content"]) for m in table.column("messages").to_pylist()]
    assert max(lengths) > 3 * np.median(lengths)


def test_item_ratio_target_and_met():
    up = stages.item("x", 3.4, 2.0, "rows/s", ">= 1.7")
    assert up == {"name": "x", "ours": 3.4, "baseline": 2.0, "unit": "rows/s", "ratio": 1.7, "target": ">= 1.7",
                  "met": True}  # fmt: skip
    assert stages.item("rss", 160, 100, "MB", "<= 1.5")["met"] is False
    assert stages.item("rss", 150, 100, "MB", "<= 1.5")["met"] is True
    info = stages.item("info", 1, 2, "s", None)
    assert info["target"] is None and info["met"] is None and info["ratio"] == 0.5
    table = stages.format_table([up, info])
    assert "x" in table and "yes" in table and table.count("\n") == 2


def test_run_measured_counts_the_children_of_the_process(tmp_path):
    child = "import time; x = bytearray(80 * 1024 * 1024); time.sleep(0.6)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    result = stages.run_measured([sys.executable, "-c", parent])
    assert result["processes"] >= 2
    assert result["peak_rss"] > 80 * 1024 * 1024 > result["peak_rss_main"]


def test_dedupe_job_reports_time_memory_and_recall():
    result = stages.dedupe_job(3000)
    assert result["prompts"] == 3000 and result["seconds"] > 0 and result["peak_rss"] > result["growth"] > 0
    assert result["found"] / result["copies"] > 0.9
    json.dumps(result)
