"""Anyone's traces through `distill filter` and `distill train`: small hand-built files in each public layout.

Column names used, as on the dataset cards (checked on the Hub cards through the search tool):
- OpenR1-Math-220k (open-r1/OpenR1-Math-220k, configs default/extended/all): problem, solution, answer,
  problem_type, question_type, source, uuid, is_reasoning_complete (list of bool), generations (list of str),
  correctness_math_verify (list of bool), correctness_llama (list of bool), finish_reasons (list of str),
  correctness_count (int64), messages (list of {content, role}).
- OpenThoughts-114k (default config) and Bespoke-Stratos-17k: system (str), conversations (list of {from, value},
  `from` being "user" and "assistant"); Bespoke-Stratos writes <|begin_of_thought|> ... <|end_of_thought|>
  <|begin_of_solution|> ... <|end_of_solution|> instead of think tags.
- s1K (simplescaling/s1K): question, solution, cot_type, source_type, metadata, cot, thinking_trajectories
  (list of str), attempt; read with --input-format columns.
- TRL conversational: messages (list of {role, content}).
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.generate.parse import truncated_from_text
from distill.schema import GENERATE_SCHEMA, LOGPROB_COLUMNS
from distill.train.cli import train_command

SUFFIX = " Please reason step by step, and put your final answer within \\boxed{}."


def good(a: int, b: int) -> str:
    return f"<think>\n{a} plus {b} is {a + b}.\n</think>\n\nThe answer is \\boxed{{{a + b}}}."


def wrong(a: int, b: int) -> str:
    return f"<think>\n{a} plus {b} is {a + b + 1}.\n</think>\n\nThe answer is \\boxed{{{a + b + 1}}}."


def openr1_file(path):
    """Three problems, generations right/wrong/cut: pass rates 1.0, 0.5 and 0.0."""
    rows = []
    for i, gens in enumerate(
        [
            [good(1, 1), good(1, 1)],
            [good(2, 2), wrong(2, 2)],
            [wrong(3, 3), "<think>\n3 plus 3 is, let me see"],
        ]
    ):
        a = i + 1
        rows.append(
            {
                "problem": f"What is {a} + {a}?",
                "solution": f"{a} + {a} = {2 * a}",
                "answer": str(2 * a),
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "source": "olympiads",
                "uuid": f"uuid-{a}",
                "is_reasoning_complete": [True] * len(gens),
                "generations": gens,
                "correctness_math_verify": [g == good(a, a) for g in gens],
                "correctness_llama": None,
                "finish_reasons": None if i == 2 else ["stop"] * len(gens),
                "correctness_count": sum(g == good(a, a) for g in gens),
                "messages": [{"role": "user", "content": f"What is {a} + {a}?"}],
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def sharegpt_file(path, stratos: bool = False):
    """OpenThoughts-style JSONL: system prompt, user/assistant turns, no gold."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(4):
            answer = good(i, 5)
            if stratos:
                answer = (
                    f"<|begin_of_thought|>\n\n{i} plus 5 is {i + 5}.\n\n<|end_of_thought|>\n\n"
                    f"<|begin_of_solution|>\n\nThe answer is \\boxed{{{i + 5}}}.\n\n<|end_of_solution|>"
                )
            record = {
                "system": "Your role as an assistant involves thoroughly exploring questions.",
                "conversations": [
                    {"from": "user", "value": f"What is {i} + 5?" + SUFFIX},
                    {"from": "assistant", "value": answer},
                ],
            }
            fh.write(json.dumps(record) + "\n")
    return path


def messages_file(path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + 7?" + SUFFIX},
                {"role": "assistant", "content": good(i, 7)},
            ]
        }
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def s1k_file(path):
    rows = [
        {
            "question": f"What is {i} + 9?",
            "solution": str(i + 9),
            "cot_type": "math",
            "source_type": "AI-MO/NuminaMath-CoT/aops_forum",
            "metadata": "{}",
            "cot": None,
            "thinking_trajectories": [f"{i} plus 9 is {i + 9}."],
            "attempt": f"The answer is \\boxed{{{i + 9}}}.",
        }
        for i in range(3)
    ]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rows, fh)
    return path


def filter_cli(*args, expect=0):
    result = CliRunner().invoke(main, ["filter", *args, "-q"])
    assert result.exit_code == expect, result.output
    return result


def read(folder):
    files = sorted(folder.glob("*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


PRESETS = {
    # name: (writer, file name, filter flags, rows kept)
    "openr1": (openr1_file, "train-00000-of-00001.parquet", ["--verifiers", "math,format"], 3),
    "sharegpt": (sharegpt_file, "open_thoughts.jsonl", ["--verifiers", "format"], 4),
    "stratos": (lambda p: sharegpt_file(p, stratos=True), "stratos.jsonl", ["--verifiers", "format"], 4),
    "messages": (messages_file, "messages.parquet", ["--verifiers", "format"], 3),
    "columns": (
        s1k_file,
        "s1k.json",
        ["--verifiers", "math,format", "--input-format", "columns", "--map", "problem=question"]
        + ["--map", "reasoning=thinking_trajectories", "--map", "answer=attempt", "--map", "gold=solution"],
        3,
    ),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_through_filter_and_train(preset, tmp_path, tiny_model):
    writer, name, flags, kept = PRESETS[preset]
    source = writer(tmp_path / name)
    out = tmp_path / "filtered"
    filter_cli(str(source), "--out", str(out), *flags)
    rows = read(out / "data")
    assert len(rows) == kept
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == kept and stats["total"] == kept + len(read(out / "rejected"))
    for row in rows:
        assert row["origin"].startswith(f"{source}:")
        assistant = row["messages"][-1]
        assert assistant["role"] == "assistant" and assistant["content"].startswith("<think>\n")
        assert "\\boxed{" in assistant["content"] and "begin_of" not in assistant["content"]
    assert not (out / ".inputs").exists()  # the normalized copy is gone once the run is complete
    result = CliRunner().invoke(
        train_command,
        [str(out), "--student", tiny_model, "--out", str(tmp_path / "model"), "--max-steps", "1"]
        + ["--max-length", "64", "--no-gradient-checkpointing", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "config.json").exists()


def test_openr1_rows_ids_gold_and_truncation(tmp_path):
    source = openr1_file(tmp_path / "r1.parquet")
    out = tmp_path / "o"
    filter_cli(str(source), "--out", str(out), "--verifiers", "math,format")
    rows = {r["origin"]: r for r in read(out / "data") + read(out / "rejected")}
    assert len(rows) == 6  # one row per generation
    first = rows[f"{source}:0#0"]
    assert first["prompt_id"] == "uuid-1" and first["gold"] == "2" and first["sample_index"] == 0
    assert json.loads(first["prompt_messages"]) == [{"role": "user", "content": "What is 1 + 1?"}]
    cut = rows[f"{source}:2#1"]  # no finish_reasons on this problem: the open <think> says it was cut
    assert cut["finish_reason"] is None and cut["truncated"] is True
    assert rows[f"{source}:1#1"]["filter_reason"] == "math_wrong_answer"
    # ids are stable: a second run gives the same ones
    filter_cli(str(source), "--out", str(tmp_path / "again"), "--verifiers", "math,format")
    again = {r["origin"]: r["id"] for r in read(tmp_path / "again" / "data") + read(tmp_path / "again" / "rejected")}
    assert again == {origin: r["id"] for origin, r in rows.items()}


def test_pass_rate_window_and_histogram(tmp_path):
    source = openr1_file(tmp_path / "r1.parquet")
    out = tmp_path / "o"
    filter_cli(str(source), "--out", str(out), "--verifiers", "math,format", "--pass-rate", "0.2:0.8")
    kept = read(out / "data")
    assert {r["prompt_id"] for r in kept} == {"uuid-2"}  # 1/2 passed; uuid-1 always right, uuid-3 never
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped_pass_rate_too_easy"] == 2  # both right samples of uuid-1
    assert "dropped_pass_rate_too_hard" not in stats  # uuid-3 has no passing sample: its rows fail verification
    assert stats["prompt_pass_rate_histogram"]["all"] == {
        "0": 1, "0-0.2": 0, "0.2-0.4": 0, "0.4-0.6": 1, "0.6-0.8": 0, "0.8-1": 0, "1": 1,
    }  # fmt: skip
    per_prompt = {
        json.loads(line)["prompt_id"]: json.loads(line) for line in (out / "pass_rates.jsonl").read_text().splitlines()
    }
    assert per_prompt["uuid-2"]["pass_rate"] == 0.5 and per_prompt["uuid-2"]["verifiers"]["math"] == 0.5
    assert per_prompt["uuid-1"]["pass_rate"] == 1.0 and per_prompt["uuid-3"]["samples"] == 2
    # an open top end keeps the always-solved prompt
    filter_cli(str(source), "--out", str(tmp_path / "p"), "--verifiers", "math,format", "--pass-rate", "0.5:1")
    assert {r["prompt_id"] for r in read(tmp_path / "p" / "data")} == {"uuid-1", "uuid-2"}


def test_pass_rate_with_select_best_and_resume(tmp_path):
    source = openr1_file(tmp_path / "r1.parquet")
    out = tmp_path / "o"
    flags = ["--verifiers", "math,format", "--pass-rate", "0.4:1", "--select", "best"]
    filter_cli(str(source), "--out", str(out), *flags)
    assert sorted(r["prompt_id"] for r in read(out / "data")) == ["uuid-1", "uuid-2"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped_not_selected"] == 1  # uuid-1's second right sample
    before = stats
    (out / "stats.json").unlink()  # as if killed after the selection
    filter_cli(str(source), "--out", str(out), *flags, "--resume")
    assert json.loads((out / "stats.json").read_text()) == before


def test_bad_pass_rate(tmp_path):
    source = openr1_file(tmp_path / "r1.parquet")
    result = filter_cli(str(source), "--out", str(tmp_path / "o"), "--pass-rate", "0.9:0.1", expect=1)
    assert "--pass-rate takes MIN:MAX between 0 and 1" in result.output


def test_generate_shaped_file_with_int64_and_missing_optional_columns(tmp_path):
    """A file shaped like a generate output, but written by someone else: int64 numbers, no token counts."""
    usage = ("reasoning_tokens", "cached_tokens", "token_source", "cost_usd", "from_cache")
    missing = ("prompt_tokens", "completion_tokens", "tests", *usage, *LOGPROB_COLUMNS)  # log-probs: --logprobs only
    names = [f.name for f in GENERATE_SCHEMA if f.name not in missing]
    row = {
        "id": "s0", "prompt_id": "p0", "sample_index": 0, "domain": "math", "source": "mine",
        "problem": "What is 2 + 2?", "prompt_messages": json.dumps([{"role": "user", "content": "What is 2 + 2?"}]),
        "gold": "4", "reasoning": "2 plus 2 is 4.", "answer": "The answer is \\boxed{4}.",
        "completion": good(2, 2), "finish_reason": "stop", "truncated": False, "teacher": "t", "sampling": "{}",
        "error": None,
    }  # fmt: skip
    table = pa.Table.from_pylist([row, {**row, "id": "s1", "sample_index": 1}])
    assert table.schema.field("sample_index").type == pa.int64()
    pq.write_table(table.select(names), tmp_path / "gen.parquet")
    filter_cli(str(tmp_path / "gen.parquet"), "--out", str(tmp_path / "o"), "--verifiers", "math,format")
    rows = read(tmp_path / "o" / "data")
    assert [r["id"] for r in rows] == ["s0", "s1"] and rows[0]["prompt_tokens"] is None
    assert rows[1]["origin"] == f"{tmp_path / 'gen.parquet'}:1"


def test_unknown_layout_and_bad_map(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("q,r\nWhat is 1+1?,2\n")
    result = filter_cli(str(path), "--out", str(tmp_path / "o"), expect=1)
    assert "unknown layout (columns: q, r)" in result.output and "--map problem=COLUMN" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = filter_cli(str(path), "--out", str(tmp_path / "o"), "--map", "probem=q", expect=1)
    assert "unknown --map field `probem` (did you mean `problem`?)" in result.output
    result = filter_cli(
        str(path), "--out", str(tmp_path / "o"), "--map", "problem=q", "--map", "answer=r",
        "--verifiers", "format", "--keep-unverified",
    )  # fmt: skip
    assert "rows" in result.output  # CSV with a map goes through


@pytest.mark.parametrize(
    "text, cut",
    [
        ("<think>\nLet me think about this", True),
        ("<think>\nok\n</think>\n\nThe answer is \\boxed{5}", False),
        ("<think>\nok\n</think>\n\nThe answer is \\boxed{5", True),
        ("<think>\nok\n</think>\n\nSo we multiply both sides by", True),
        ("<think>\nok\n</think>\n\nSo the answer is 42", False),  # no full stop is not enough
        ("<think>\nok\n</think>\n\nTherefore the area of the", True),
        ("<think>\nok\n</think>\n\nWe have $$x = 2", True),
        ("<think>\nok\n</think>\n\nAdding the terms,", True),
        ("<think>\nok\n</think>\n\nx = \\pi", True),  # a formula's end without a full stop: "x = \\pi r^2"
        ("<think>\nok\n</think>\n\nThe answer is **42**", False),  # bold is not cut off
        ("<think>\nok\n</think>\n\nThe answer is **42", True),
        ("<think>\nok\n</think>\n\nWe get $x = 2$.", False),
        ("<think>\nok\n</think>\n\nWe get $x = \\frac{1}{2}", True),
        ("<think>\nok\n</think>\n\nShe pays $5 for it.", False),  # currency, not math
        ("<think>\nok\n</think>\n\nThe total is 18 + 4", True),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", False),
        ("```python\nprint(1)\n```", False),
        ("```python\nprint(1)\n", True),
        ("Factor 42.\n\n2. **Find the common factors:**", True),  # a heading of what never came
        ("<think>\nok\n</think>", True),
        ("Just an answer: 42.", False),
    ],
)
def test_truncated_from_text(text, cut):
    assert truncated_from_text(text) is cut


def test_train_takes_prompt_completion_jsonl(tmp_path, tiny_model):
    """Any dataset in TRL's prompt/completion shape trains as it is: strings or lists of turns."""
    path = tmp_path / "pc.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(4):
            fh.write(json.dumps({"prompt": f"What is {i} + 1?", "completion": good(i, 1)}) + "\n")
    from distill.train.sft import load_messages

    dataset = load_messages([str(path)], quiet=True)
    assert dataset[0]["messages"] == [
        {"role": "user", "content": "What is 0 + 1?"},
        {"role": "assistant", "content": good(0, 1)},
    ]
    result = CliRunner().invoke(
        train_command,
        [str(path), "--student", tiny_model, "--out", str(tmp_path / "model"), "--max-steps", "1"]
        + ["--max-length", "64", "--no-gradient-checkpointing", "-q"],
    )
    assert result.exit_code == 0, result.output


def test_datasets_folder_input(tmp_path):
    """A folder written by datasets' save_to_disk (what a hub download saved locally looks like)."""
    import datasets

    records = [json.loads(line) for line in sharegpt_file(tmp_path / "s.jsonl").read_text().splitlines()]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    filter_cli(str(tmp_path / "saved"), "--out", str(tmp_path / "o"), "--verifiers", "format")
    rows = read(tmp_path / "o" / "data")
    assert len(rows) == 4 and rows[0]["origin"] == f"{tmp_path / 'saved'}:0"


def test_consensus_majority_labels_goldless_prompts(tmp_path):
    """Samples of one prompt share its prompt text, so they share the content-derived prompt id."""
    samples = {
        "What is 2 + 3?": ["5", "5", "6"],  # 2 of 3 agree: gold 5
        "What is 1 / 2?": ["\\frac{1}{2}", "0.5", "3"],  # equal by math-verify, not by text: gold 1/2
        "What is 7 - 7?": ["1", "2"],  # a tie: no gold
        "What is 9 + 9?": ["18", "17", "16"],  # 1 of 3 is below --min-agreement 0.6
    }
    path = tmp_path / "goldless.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for question, answers in samples.items():
            for answer in answers:
                turns = [
                    {"role": "user", "content": question + SUFFIX},
                    {"role": "assistant", "content": f"<think>\nhm\n</think>\n\nSo \\boxed{{{answer}}}."},
                ]
                fh.write(json.dumps({"messages": turns}) + "\n")
    out = tmp_path / "o"
    filter_cli(
        str(path), "--out", str(out), "--verifiers", "math", "--consensus", "majority", "--min-agreement", "0.6"
    )
    kept, rejected = read(out / "data"), read(out / "rejected")
    assert sorted(r["answer"] for r in kept) == [
        "So \\boxed{0.5}.",
        "So \\boxed{5}.",
        "So \\boxed{5}.",
        "So \\boxed{\\frac{1}{2}}.",
    ]
    assert {r["gold"] for r in kept} == {"5", "\\frac{1}{2}"} and {r["gold_source"] for r in kept} == {"majority"}
    reasons = sorted(r["filter_reason"] for r in rejected)
    assert reasons == ["math_wrong_answer", "math_wrong_answer"] + ["unverified"] * 5
    stats = json.loads((out / "stats.json").read_text())
    assert stats["gold_source"] == {"given": 0, "majority": 6, "none": 5}
    assert stats["consensus"] == {"method": "majority", "min_agreement": 0.6}
    from distill.filter.report import write_report

    assert "Where the gold came from" in write_report(out).read_text()
    # A given gold is never replaced.
    given = tmp_path / "given.parquet"
    openr1_file(given)
    filter_cli(str(given), "--out", str(tmp_path / "g"), "--verifiers", "math", "--consensus", "majority")
    assert json.loads((tmp_path / "g" / "stats.json").read_text())["gold_source"]["given"] == 6


def test_bad_consensus(tmp_path):
    source = openr1_file(tmp_path / "r1.parquet")
    result = filter_cli(str(source), "--out", str(tmp_path / "o"), "--consensus", "vote", expect=1)
    assert "unknown --consensus `vote`" in result.output
    result = filter_cli(str(source), "--out", str(tmp_path / "o"), "--min-agreement", "2", expect=1)
    assert "--min-agreement is a share" in result.output


@pytest.mark.parametrize(
    "gold, answer, passed",
    [
        ("1, 2, 3", "The roots are \\boxed{1}, \\boxed{2}, \\boxed{3}.", True),  # was: last box 3 != 1, 2, 3
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "So \\boxed{3}, \\boxed{1}, \\boxed{2}", True),  # a set: any order
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "So \\boxed{1, 2, 3}", True),  # one box holding the list
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "So \\boxed{3}", False),  # was: the gold cut to its last box, 3 = 3
        ("\\boxed{\\frac{1}{2}}, \\boxed{2}", "\\boxed{0.5} and \\boxed{2}", True),  # parts equal by math-verify
        ("\\boxed{1}, \\boxed{2}", "\\boxed{1}, \\boxed{5}", False),
        ("1,000", "First \\boxed{10}, then the total is \\boxed{1,000}", True),  # one gold: the last box decides
        ("5", "\\boxed{x = 2} gives \\boxed{5}", True),
    ],
)
def test_several_boxes(gold, answer, passed):
    from distill.filter.verifiers.math import check_math

    assert check_math(gold, answer, "boxed", 5).passed is passed


def test_all_boxed_is_linear_and_outermost():
    from distill.filter.verifiers.multibox import all_boxed, split_parts

    assert all_boxed("\\boxed{\\frac{1}{2}} and \\fbox{\\boxed{3}} \\boxed{4") == ["\\frac{1}{2}", "\\boxed{3}"]
    assert split_parts("(1, 2), \\{3,4\\}, $5$") == ["(1, 2)", "\\{3,4\\}", "5"]
    assert len(all_boxed("\\boxed{1}" * 50000)) == 50000


def test_report_plots_pass_rates_and_gold_sources(tmp_path):
    from distill.filter.report import write_report

    source = openr1_file(tmp_path / "r1.parquet")
    out = tmp_path / "o"
    filter_cli(str(source), "--out", str(out), "--verifiers", "math,format", "--pass-rate", "0.2:0.8")
    page = write_report(out).read_text()
    assert "Prompts by pass rate" in page and "pass_rate_too_easy" in page
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output


def test_imported_traces_resume_to_the_same_output(tmp_path):
    """Killed after its first committed file: the resumed run normalizes the input again, the same way."""
    source = sharegpt_file(tmp_path / "s.jsonl")
    flags = ["--verifiers", "format", "--rows-per-file", "1", "--batch-size", "1"]
    whole = tmp_path / "whole"
    filter_cli(str(source), "--out", str(whole), *flags)
    out = tmp_path / "o"
    filter_cli(str(source), "--out", str(out), *flags)
    progress = json.loads((out / "progress.json").read_text())
    for name in progress["files"][2:]:  # as if killed after two rows
        (out / name).unlink()
    progress["files"], progress["rows_done"] = progress["files"][:2], 2
    (out / "progress.json").write_text(json.dumps(progress))
    (out / "stats.json").unlink()
    filter_cli(str(source), "--out", str(out), *flags, "--resume")
    assert sorted(r["id"] for r in read(out / "data")) == sorted(r["id"] for r in read(whole / "data"))
    assert json.loads((out / "stats.json").read_text()) == json.loads((whole / "stats.json").read_text())
    filter_cli(str(source), "--out", str(out), *flags, "--resume")  # complete: nothing to do, nothing left over
    assert not (out / ".inputs").exists()
