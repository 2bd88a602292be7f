"""`distill filter` on generate outputs built by hand: every row lands in exactly one place, for a reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.schema import GENERATE_SCHEMA, filter_schema
from distill.testing import example_row


def row(i, problem, completion, gold=None, domain="math", finish="stop", error=None, prompt_id=None, k=0):
    """A generate row; reasoning and answer are what the completion parses to."""
    return example_row(id=f"id{i}", prompt_id=prompt_id or f"p{i}", sample_index=k, domain=domain, problem=problem,
                       completion=completion, gold=gold, finish_reason=finish, error=error, teacher="t")  # fmt: skip


ROWS = [
    row(0, "What is 1/2 as a decimal?", "<think>\nhalf is 0.5\n</think>\n\nSo \\boxed{\\frac{1}{2}}.", "0.5"),
    row(1, "What is 2 + 3?", "<think>\n2 and 3 make 6\n</think>\n\nThe answer is \\boxed{6}.", "5"),
    row(2, "What is 7 - 2?", "<think>\nI guess \\boxed{5}\n</think>\n\nIt is five.", "5"),  # box only in reasoning
    row(3, "What is 3 * 3?", "<think>\n3 * 3 = 9, so", "9", finish="length"),  # truncated
    row(4, "What is 10 / 2?", "<think>\n10 over 2\n</think>\n\n\\boxed{5}", "not a formula at all ???"),
    row(5, "What is 4 + 4?", None, "8", error="http_503: gave up"),
    row(6, "What is 4 + 4?", "The answer is \\boxed{8}.", "8", prompt_id="p5", k=1),  # no think block
    row(7, "What is 6 + 6?", "<think>\n6 + 6 = 12\n</think>\n\n\\boxed{12}", "12", prompt_id="p7", k=0),
    row(8, "What is 6 + 6?", "<think>\nsix and six is 12\n</think>\n\nSo \\boxed{12}", "12", prompt_id="p7", k=1),
]


def write_generate(folder, rows):
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA), folder / "data" / "train-part-0.parquet")
    return folder


def run(*args, expect=0):
    result = CliRunner().invoke(main, ["filter", *args, "-q"], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def read(out, where):
    files = list((out / where).glob("*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


@pytest.fixture
def generated(tmp_path):
    return write_generate(tmp_path / "gen", ROWS)


def test_math_format_keeps_exactly_the_right_answers(generated, tmp_path):
    out = tmp_path / "out"
    result = run(str(generated), "--out", str(out), "--verifiers", "math,format")
    kept, rejected = read(out, "data"), read(out, "rejected")
    assert sorted(r["id"] for r in kept) == ["id0", "id7", "id8"]
    reasons = {r["id"]: r["filter_reason"] for r in rejected}
    assert reasons == {
        "id1": "math_wrong_answer",
        "id2": "math_no_final_answer",
        "id3": "math_no_final_answer",
        "id4": "unverified",
        "id5": "generate_error",
        "id6": "format_no_think_block",
    }
    assert pq.read_schema(next((out / "data").glob("*.parquet"))).remove_metadata() == filter_schema(
        ["math", "format"]
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == 9 and stats["kept"] == 3 and stats["rejected"] == 6
    assert stats["dropped_unverified"] == 1 and stats["dropped_math_wrong_answer"] == 1
    assert stats["verifiers"]["math"] == {"checked": 8, "passed": 4, "failed": 3, "unverified": 1, "pass_rate": 0.5}
    # format sees the rows math passed or could not check: id0, id4, id6, id7, id8
    assert stats["verifiers"]["format"]["checked"] == 5 and stats["pass_rate"]["format"] == 0.8
    assert stats["pass_rate_by_domain"] == {"math": round(3 / 9, 4)}
    assert stats["prompts"] == 7 and stats["prompts_without_kept_sample"] == 5  # p1..p5
    assert "math" in result.output and "kept 3 of 9 rows" in result.output
    # The SFT boundary: the prompt turn, then the assistant turn with its think block.
    assert kept[0]["messages"][-1] == {
        "role": "assistant",
        "content": "<think>\nhalf is 0.5\n</think>\n\nSo \\boxed{\\frac{1}{2}}.",
    }
    assert kept[0]["verdict_math"]["passed"] is True and kept[0]["verdict_format"]["reason"] == "ok"


def test_keep_unverified_and_max_per_prompt(generated, tmp_path):
    out = tmp_path / "out"
    run(str(generated), "--out", str(out), "--verifiers", "math,format", "--keep-unverified", "--max-per-prompt", "1")
    kept = {r["id"] for r in read(out, "data")}
    assert kept == {"id0", "id4", "id7"}
    assert {r["id"]: r["filter_reason"] for r in read(out, "rejected")}["id8"] == "not_selected"


def test_select_best_uses_scores(tmp_path):
    rows = [
        row(
            0,
            "Write a haiku.",
            "<think>\nshort\n</think>\n\nWaves fold into foam.",
            domain="general",
            prompt_id="h",
            k=0,
        ),
        row(
            1, "Write a haiku.", "<think>\nloop\n</think>\n\n" + "the sea " * 40, domain="general", prompt_id="h", k=1
        ),
    ]
    gen = write_generate(tmp_path / "gen", rows)
    out = tmp_path / "out"
    run(
        str(gen),
        "--out",
        str(out),
        "--verifiers",
        "repetition",
        "--option",
        "repetition.max_ratio=1.0",
        "--select",
        "best",
    )
    # repetition's score is its ratio: "best" keeps the highest, here the looping one - a ranking, not a judgment
    kept, rejected = read(out, "data"), read(out, "rejected")
    assert len(kept) == 1 and len(rejected) == 1 and rejected[0]["filter_reason"] == "not_selected"
    assert not (out / ".staging").exists()


def test_every_input_row_lands_exactly_once_across_many_files(tmp_path):
    gen = tmp_path / "gen"
    (gen / "data").mkdir(parents=True)
    rows = [
        row(i, f"What is {i} + {i}?", f"<think>\nok\n</think>\n\n\\boxed{{{2 * i + i % 3}}}", str(2 * i))
        for i in range(60)
    ]
    for f in range(3):
        pq.write_table(
            pa.Table.from_pylist(rows[f * 20 : (f + 1) * 20], schema=GENERATE_SCHEMA),
            gen / "data" / f"train-part-{f}.parquet",
        )
    out = tmp_path / "out"
    run(str(gen), "--out", str(out), "--batch-size", "7", "--rows-per-file", "9")
    kept, rejected = read(out, "data"), read(out, "rejected")
    ids = [r["id"] for r in kept + rejected]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert {r["id"] for r in kept} == {f"id{i}" for i in range(60) if i % 3 == 0}


def test_output_loads_with_datasets_and_renders_through_a_chat_template(generated, tmp_path, tiny_model):
    import datasets
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    run(str(generated), "--out", str(out))
    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert ds.num_rows == 3
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.apply_chat_template(ds[0]["messages"], tokenize=False)
    assert "<think>" in text and "</think>" in text and "\\boxed" in text


def test_a_verifier_crash_on_one_row_does_not_stop_the_run(generated, tmp_path, monkeypatch):
    from distill.filter.verifiers import rules

    real = rules.FormatVerifier.verify

    def flaky(self, sample):
        if sample["id"] == "id7":
            raise RuntimeError("boom")
        return real(self, sample)

    monkeypatch.setattr(rules.FormatVerifier, "verify", flaky)
    out = tmp_path / "out"
    run(str(generated), "--out", str(out), "--verifiers", "format")
    rejected = {r["id"]: r for r in read(out, "rejected")}
    assert rejected["id7"]["filter_reason"] == "verifier_error"
    assert rejected["id7"]["verdict_format"]["passed"] is None
    assert "RuntimeError: boom" in rejected["id7"]["verdict_format"]["details"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--verifiers", "maths"], "unknown verifier `maths` (did you mean `math`?)"),
        (["--option", "math.extractoin=lenient"], "unknown option `extractoin` for verifier `math`"),
        (["--option", "judge.threshold=3"], "--option names verifier `judge`, which is not in --verifiers"),
        (["--select", "worst"], "unknown --select `worst`"),
        # Fixed vocabularies (issue 11): `domains=maths` once turned the math verifier off and kept wrong answers.
        (["--option", "math.domains=maths"], "unknown domain 'maths' in option `domains` (did you mean `math`?)"),
        (["--option", "math.domains=[math, sciense]"], "unknown domain 'sciense' in option `domains` (did you mean"),
        (["--option", "math.domains=[]"], "option `domains` takes a domain or a list of domains"),
        (["--option", "math.extraction=lenint"], "got 'lenint' (did you mean `lenient`?)"),
        (["--verifiers", "format", "--option", "format.require_boxed=[maths]"], "in option `require_boxed` (did you"),
        (["--verifiers", "language", "--option", "language.language=latn"], "(did you mean `latin`?)"),
    ],
)
def test_bad_options(generated, tmp_path, args, message):
    result = CliRunner().invoke(main, ["filter", str(generated), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.output, result.output


def test_bad_inputs(tmp_path):
    (tmp_path / "x" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "text": ["b"]}), tmp_path / "x" / "data" / "f.parquet")
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "x"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown layout (columns: id, text)" in result.output
    assert "--input-format columns --map problem=COLUMN" in result.output
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "input not found" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no Parquet, JSONL, JSON or CSV files" in result.output


def test_existing_output_needs_resume_or_overwrite(generated, tmp_path):
    out = tmp_path / "out"
    run(str(generated), "--out", str(out))
    result = run(str(generated), "--out", str(out), expect=1)
    assert "already holds a filter output: pass --resume or --overwrite" in result.output
    run(str(generated), "--out", str(out), "--overwrite")
    result = run(str(generated), "--out", str(out), "--resume", "--overwrite", expect=1)
    assert "contradict" in result.output


def test_report_command(generated, tmp_path):
    out = tmp_path / "out"
    run(str(generated), "--out", str(out), "--verifiers", "math,format")
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html or "<svg" in html


@pytest.mark.parametrize("command", [["filter"], ["report"]])
def test_help(command):
    assert CliRunner().invoke(main, [*command, "--help"]).exit_code == 0


def test_dedupe_and_decontamination_drop_prompts_with_reasons(tmp_path):
    long = "A train leaves the station at nine and travels at sixty miles per hour toward a distant city"
    rows = [
        row(0, long + " . How far does it go in two hours?", "<think>\nx\n</think>\n\n\\boxed{120}", "120"),
        row(1, long.upper() + " .  How far does it go in two hours?", "<think>\nx\n</think>\n\n\\boxed{120}", "120"),
        row(
            2,
            "Compute the sum of the first ten positive integers and explain.",
            "<think>\nx\n</think>\n\n\\boxed{55}",
            "55",
        ),
        row(3, "What is 9 * 9?", "<think>\nx\n</think>\n\n\\boxed{81}", "81"),
    ]
    gen = write_generate(tmp_path / "gen", rows)
    bench = tmp_path / "aime_like.jsonl"
    bench.write_text(json.dumps({"problem": "Compute the sum of the first ten positive integers please."}) + "\n")
    out = tmp_path / "out"
    run(str(gen), "--out", str(out), "--dedupe", "near", "--decontaminate", str(bench))
    reasons = {r["id"]: r["filter_reason"] for r in read(out, "rejected")}
    assert reasons == {"id1": "duplicate_exact", "id2": "contaminated"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["contamination"] == {"aime_like": 1}
    assert stats["contaminated_examples"]["aime_like"][0]["prompt_id"] == "p2"
    assert stats["contaminated_examples"]["aime_like"][0]["ngram"] == "compute the sum of the first ten positive"


def test_mix_command_by_counts(generated, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(str(generated), "--out", str(a), "--verifiers", "math")
    run(str(generated), "--out", str(b), "--verifiers", "format", "--option", "format.require_boxed=false")
    kept_a, kept_b = len(read(a, "data")), len(read(b, "data"))
    out = tmp_path / "mix"
    result = CliRunner().invoke(main, ["mix", f"{a}:2", f"{b}:1", "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert kept_a >= 2 and kept_b >= 1
    assert len(read(out, "data")) == 3
    assert json.loads((out / "stats.json").read_text())["seed"] == 1
    result = CliRunner().invoke(main, ["mix", f"{a}:999", "--out", str(tmp_path / "m2")])
    assert result.exit_code == 1 and str(a) in result.output


def test_the_progress_record_holds_no_url_credentials(generated, tmp_path):
    from distill.config import FilterConfig
    from distill.filter.cascade import input_fingerprint
    from distill.filter.dataset.inputs import find_sources

    url = "https://user:MARKERPASS@judge.example.com/v1?api-key=MARKERKEY"
    config = FilterConfig(inputs=[str(generated)], out=str(tmp_path / "o"), verifiers={"judge": {"base_url": url}})
    record = json.dumps(input_fingerprint(config, [source.path for source in find_sources(config.inputs)]))
    assert "judge.example.com" in record and "MARKER" not in record
