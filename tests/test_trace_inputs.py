"""Imported traces that once passed silently: rows no verifier could check, list columns glued into one row, a
gold column nobody read, conventional column names that still needed --map, truncation read only on some paths."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.schema import GENERATE_SCHEMA


def filter_cli(*args, expect=0):
    result = CliRunner().invoke(main, ["filter", *args, "-q"])
    assert result.exit_code == expect, result.output
    return result


def read(folder):
    files = sorted(folder.glob("*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


LENIENT = ["--verifiers", "math", "--option", "math.extraction=lenient", "--option", "math.workers=0"]
MAP = ["--map", "problem=q", "--map", "completion=r", "--map", "gold=g"]


def test_a_gold_without_boxes_makes_an_imported_row_math(tmp_path):
    """The issue's repro: a GSM8K-style row without \\boxed{} was `general`, so --verifiers math kept it unchecked."""
    source = jsonl(tmp_path / "gsm.jsonl", [{"q": "x", "r": "9 * 2 = 18\nA: 17", "g": "#### 18"}])
    out = tmp_path / "o"
    filter_cli(source, "--out", str(out), *LENIENT, *MAP)
    assert read(out / "data") == []
    (rejected,) = read(out / "rejected")
    assert rejected["domain"] == "math" and rejected["filter_reason"] == "math_wrong_answer"


def test_rows_no_answer_check_applies_to_are_counted_and_refused_when_all(tmp_path):
    rows = [
        {"q": "chat", "r": "Hello there.", "g": None, "domain": "general"},
        {"q": "sum", "r": "So \\boxed{3}.", "g": "3", "domain": None},
    ]
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["filter", jsonl(tmp_path / "mixed.jsonl", rows), "--out", str(out), *LENIENT, *MAP]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 2 rows (general 1)" in warnings[0] and "--map gold=COLUMN" in warnings[0]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["unchecked"] == {"rows": 1, "by_domain": {"general": 1}} and stats["kept"] == 2
    # Every row outside what the verifiers check: an error naming the fix, and nothing left behind.
    source = jsonl(tmp_path / "plain.jsonl", [{"q": "x", "r": "so 17"}])
    result = filter_cli(
        source, "--out", str(tmp_path / "none"), *LENIENT, "--map", "problem=q", "--map", "completion=r", expect=1
    )
    assert "none of the 1 rows is one (general 1)" in result.output and "--map gold=COLUMN" in result.output
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    # The judge checks every domain: nothing is unchecked, so no warning and no error.
    from distill.config import FilterConfig
    from distill.filter.cascade import answer_coverage

    config = FilterConfig(inputs=[source], out=str(tmp_path / "j"), verifiers={"math": {}, "judge": {}})
    assert answer_coverage([out / "data" / p.name for p in (out / "data").glob("*.parquet")], config) == {
        "unchecked": {"rows": 0, "by_domain": {}}
    }


def test_a_list_of_samples_is_one_row_each(tmp_path):
    """`--map completion=response` where response holds N samples: N rows, never one row of N answers glued."""
    record = {"q": "What is 1 + 1?", "r": ["wrong: \\boxed{1}", "right: \\boxed{2}"], "g": "2"}
    source = jsonl(tmp_path / "n.jsonl", [record])
    out = tmp_path / "o"
    filter_cli(source, "--out", str(out), "--verifiers", "math", "--option", "math.workers=0", *MAP)
    (kept,) = read(out / "data")
    (rejected,) = read(out / "rejected")
    assert kept["answer"] == "right: \\boxed{2}" and kept["sample_index"] == 1 and kept["origin"] == f"{source}:0#1"
    assert rejected["answer"] == "wrong: \\boxed{1}" and rejected["sample_index"] == 0
    assert kept["prompt_id"] == rejected["prompt_id"] and kept["id"] != rejected["id"]


def test_a_list_where_one_text_belongs_is_refused(tmp_path):
    source = jsonl(tmp_path / "p.jsonl", [{"q": ["a", "b"], "r": "\\boxed{2}", "g": "2"}])
    result = filter_cli(source, "--out", str(tmp_path / "o"), "--verifiers", "math", *MAP, expect=1)
    assert "column `q` (problem) holds a list of 2" in result.output
    source = jsonl(tmp_path / "g.jsonl", [{"q": "x", "r": "\\boxed{2}", "g": ["1", "2"]}])
    result = filter_cli(source, "--out", str(tmp_path / "o2"), "--verifiers", "math", *MAP, expect=1)
    assert "column `g` (gold) holds a list of 2" in result.output


def messages_rows(tmp_path):
    turns = [
        {"role": "user", "content": "What is 9 + 9?"},
        {"role": "assistant", "content": "<think>\nnine and nine\n</think>\n\nSo \\boxed{18}."},
    ]
    return jsonl(tmp_path / "m.jsonl", [{"messages": turns, "answer": "18"}])


def test_a_gold_column_no_layout_reads_is_named_and_map_composes_with_messages(tmp_path):
    source = messages_rows(tmp_path)
    result = CliRunner().invoke(main, ["filter", source, "--out", str(tmp_path / "o"), "--verifiers", "math", "-q"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "column `answer` looks like the gold answer" in result.output
    assert "--map gold=answer" in result.output
    # --map gold=answer keeps the messages layout (it used to switch to `columns` and fail)
    out = tmp_path / "with-gold"
    filter_cli(source, "--out", str(out), "--verifiers", "math", "--map", "gold=answer")
    (kept,) = read(out / "data")
    assert kept["gold"] == "18" and kept["domain"] == "math"
    help_text = CliRunner().invoke(main, ["filter", "--help"]).output
    assert "work with every layout" in " ".join(help_text.split())


def test_conventional_column_names_need_no_map(tmp_path):
    source = jsonl(tmp_path / "c.jsonl", [{"question": "What is 2 + 2?", "response": "So \\boxed{4}.", "answer": "4"}])
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["filter", source, "--out", str(out), "--verifiers", "math", "-q"])
    assert result.exit_code == 0, result.output
    guessed = [line for line in result.output.splitlines() if "read as columns" in line]
    assert guessed == [f"{source}: read as columns: problem=question, completion=response, gold=answer "
                       "(--map FIELD=COLUMN to change)"]  # fmt: skip
    (kept,) = read(out / "data")
    assert kept["problem"] == "What is 2 + 2?" and kept["gold"] == "4"
    # A mapped field is not guessed; the others still are.
    filter_cli(source, "--out", str(tmp_path / "o2"), "--verifiers", "math", "--map", "gold=response", expect=1)
    # Two candidates for one field: refused, both named.
    both = jsonl(tmp_path / "b.jsonl", [{"question": "x", "prompt": "y", "response": "z", "answer": "1"}])
    result = filter_cli(both, "--out", str(tmp_path / "o3"), expect=1)
    assert "columns `question` and `prompt` could each be the problem: pass --map problem=COLUMN" in result.output


def test_an_api_dump_with_reasoning_apart_needs_no_map(tmp_path):
    """DeepSeek's API returns `reasoning_content` beside `content`: both are read, the thought goes in the think
    block (reading `content` alone as the completion would lose it)."""
    record = {"prompt": "What is 5 + 5?", "reasoning_content": "five and five", "content": "So \\boxed{10}.",
              "answer": "10"}  # fmt: skip
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["filter", jsonl(tmp_path / "api.jsonl", [record]), "--out", str(out),
                                       "--verifiers", "math,format", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "problem=prompt, reasoning=reasoning_content, answer=content, gold=answer" in result.output
    (kept,) = read(out / "data")
    assert kept["reasoning"] == "five and five" and kept["answer"] == "So \\boxed{10}." and kept["gold"] == "10"


def test_trl_prompt_completion_turns_read_as_columns(tmp_path):
    record = {
        "prompt": [{"role": "user", "content": "What is 3 + 3?"}],
        "completion": [{"role": "assistant", "content": "<think>\nsix\n</think>\n\nSo \\boxed{6}."}],
        "gold": "6",
    }
    out = tmp_path / "o"
    filter_cli(jsonl(tmp_path / "pc.jsonl", [record]), "--out", str(out), "--verifiers", "math,format")
    (kept,) = read(out / "data")
    assert kept["problem"] == "What is 3 + 3?" and kept["reasoning"] == "six" and kept["answer"] == "So \\boxed{6}."


def generate_shaped(path, completion, finish_reason=None):
    row = {
        "id": "s0", "prompt_id": "p0", "sample_index": 0, "domain": "math", "source": "mine",
        "problem": "What is 2 + 2?", "prompt_messages": json.dumps([{"role": "user", "content": "What is 2 + 2?"}]),
        "gold": "4", "tests": None, "reasoning": None, "answer": None, "completion": completion,
        "finish_reason": finish_reason, "truncated": False, "prompt_tokens": None, "completion_tokens": None,
        "teacher": "t", "sampling": "{}", "error": None,
    }  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], schema=GENERATE_SCHEMA), path)
    return str(path)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_truncation_is_read_from_the_text_whatever_the_layout(tmp_path, suffix):
    """The same cut row, finish_reason null: dropped as a generate-schema Parquet (streamed as it is) and as JSONL."""
    cut = "<think>\n2 plus 2 is 4.\n</think>\n\nSo the answer is \\boxed{4}. To check, we add the"
    path = tmp_path / f"gen{suffix}"
    if suffix == ".parquet":
        source = generate_shaped(path, cut)
    else:
        source = jsonl(path, [{"problem": "What is 2 + 2?", "completion": cut, "gold": "4"}])
    out = tmp_path / "o"
    filter_cli(source, "--out", str(out), "--verifiers", "math,format", "--option", "math.workers=0")
    (rejected,) = read(out / "rejected")
    assert rejected["filter_reason"] == "format_truncated"
    assert "finish_reason unknown" in rejected["verdict_format"]["details"]
    # A known finish reason is believed: "stop" means complete, whatever the text.
    source = generate_shaped(tmp_path / "stop.parquet", cut, finish_reason="stop")
    filter_cli(source, "--out", str(tmp_path / "s"), "--verifiers", "format")
    assert len(read(tmp_path / "s" / "data")) == 1
