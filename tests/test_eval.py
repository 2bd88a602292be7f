"""`distill eval`: the pass@k estimator, the standard error, end-to-end runs on the tiny model and a stub engine."""

import json
import math
import re
from collections import Counter
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.engines.base import Result
from distill.train.eval import EVAL_SAMPLES_SCHEMA, pass_at_k, standard_error, summarize
from distill.train.eval_cli import eval_command

FAST_MATH = ["--option", "math.workers=0"]  # verify in this process: no worker pool to spawn in tests


def invoke(*args):
    return CliRunner().invoke(eval_command, [str(a) for a in args])


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


def test_pass_at_k_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0 and pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k: every pair holds a correct sample


def test_pass_at_k_is_stable_where_binomials_are_huge():
    # C(2000, 500) has ~490 digits: the product form must still match the exact rational value.
    n, c, k = 2000, 7, 500
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_standard_error_of_per_prompt_rates():
    # rates 1, 0, .5, .5: mean .5, sample variance (.25 + .25) / 3 = 1/6
    assert standard_error([1.0, 0.0, 0.5, 0.5]) == pytest.approx(math.sqrt(1 / 6) / 2)
    assert standard_error([0.3, 0.3, 0.3]) == 0.0
    assert standard_error([1.0]) is None and standard_error([]) is None


def test_summarize_counts_unverified_as_not_correct():
    def s(prompt, correct, reason="ok"):
        return {"prompt_id": prompt, "correct": correct, "reason": reason, "truncated": False, "completion_tokens": 10}

    samples = [s("a", True), s("a", False), s("b", None, "math_unverified"), s("b", True)]
    summary = summarize(samples)
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@k"]["2"] == pytest.approx(1.0)
    assert summary["pass@1_se"] == pytest.approx(0.0)
    assert (summary["prompts"], summary["samples"], summary["unverified"], summary["correct"]) == (2, 4, 1, 2)
    assert summary["completion_tokens"] == 40 and summary["mean_completion_tokens"] == 10.0


# --------------------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"id": f"p{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class StubEngine:
    """A model whose correctness we choose: `good` always right, `bad` never, `mixed` right on the first
    i % 3 samples of prompt `Calculate i + i.` (requests come prompt by prompt, sample index ascending)."""

    def __init__(self, model):
        self.model_name = model
        self.seen = Counter()

    def generate(self, requests, sampling):
        for index, request in enumerate(requests):
            i = int(re.search(r"Calculate (\d+)", request.messages[-1]["content"]).group(1))
            k = self.seen[i]
            self.seen[i] += 1
            right = self.model_name == "good" or (self.model_name == "mixed" and k < i % 3)
            text = f"<think>\n{i} plus {i}\n</think>\n\nThe answer is \\boxed{{{2 * i if right else 999}}}."
            yield index, Result(text=text, finish_reason="stop", prompt_tokens=5, completion_tokens=7)

    def close(self):
        pass


@pytest.fixture
def stub_engine(monkeypatch):
    # run_generate builds its engine through this name: every model becomes a StubEngine.
    monkeypatch.setattr("distill.generate.run.make_engine", lambda config: StubEngine(config.model))


def test_tiny_model_end_to_end_and_resume(tiny_model, bench_file, tmp_path):
    out = tmp_path / "eval"
    args = [tiny_model, "--label", "tiny", "--source", bench_file, "-n", 2, "--max-tokens", 8, "--out", out, "-q"]
    result = invoke(*args, *FAST_MATH)
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "pass@2" in result.output and "tiny" in result.output

    summary = json.loads((out / "summary.json").read_text())
    model = summary["models"]["tiny"]
    assert (summary["prompts"], summary["samples_per_prompt"], model["prompts"], model["samples"]) == (6, 2, 6, 12)
    assert 0.0 <= model["pass@1"] <= 1.0 and set(model["pass@k"]) == {"1", "2"}
    assert model["completion_tokens"] > 0 and model["unverified"] == 0
    assert summary["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 8}

    table = pq.read_table(out / "tiny" / "samples.parquet")
    assert table.schema.equals(EVAL_SAMPLES_SCHEMA)
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(f"p{i}", k) for i in range(6) for k in range(2)]
    assert all(r["correct"] is not None for r in rows)
    assert (out / "tiny" / "generations" / "stats.json").exists()
    assert (out / "config.resolved.yaml").exists()

    again = invoke(*args, *FAST_MATH)
    assert again.exit_code == 1 and "--resume or --overwrite" in again.output
    resumed = invoke(*args, *FAST_MATH, "--resume")
    assert resumed.exit_code == 0, resumed.output
    stats = json.loads((out / "tiny" / "generations" / "stats.json").read_text())
    assert stats["generated_this_run"] == 0  # every sample was already there
    assert json.loads((out / "summary.json").read_text())["models"]["tiny"]["samples"] == 12


def test_verification_path_gives_the_expected_pass_rates(stub_engine, bench_file, tmp_path):
    out = tmp_path / "eval"
    result = invoke("mixed", "--source", bench_file, "-n", 2, "--out", out, "-q", *FAST_MATH)
    assert result.exit_code == 0, result.output
    model = json.loads((out / "summary.json").read_text())["models"]["mixed"]
    # correct samples per prompt: i % 3 capped at 2 -> 0, 1, 2, 0, 1, 2 of 2
    rates = [0, 0.5, 1, 0, 0.5, 1]
    assert model["pass@1"] == pytest.approx(0.5)
    assert model["pass@k"]["2"] == pytest.approx(4 / 6)
    assert model["pass@1_se"] == pytest.approx(standard_error(rates), abs=1e-6)
    assert model["correct"] == 6 and model["samples"] == 12
    rows = pq.read_table(out / "mixed" / "samples.parquet").to_pylist()
    assert Counter(r["reason"] for r in rows) == {"ok": 6, "math_wrong_answer": 6}


def test_two_models_side_by_side(stub_engine, bench_file, tmp_path):
    out = tmp_path / "eval"
    result = invoke(
        "bad", "good", "--label", "student", "--label", "teacher", "--source", bench_file, "-n", 3, "--out", out,
        "-q", *FAST_MATH,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert "pass@1" in header and "pass@3" in header and "samples" in header
    student = next(line for line in lines if line.startswith("student"))
    teacher = next(line for line in lines if line.startswith("teacher"))
    assert "0.0%" in student and "100.0%" in teacher and " 18 " in f"{teacher} "
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["student", "teacher"]
    assert summary["models"]["teacher"]["pass@k"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert (out / "student" / "samples.parquet").exists() and (out / "teacher" / "samples.parquet").exists()


def test_prompts_without_gold_are_unverified(stub_engine, tmp_path):
    source = tmp_path / "bench.jsonl"
    rows = [{"id": "a", "problem": "Calculate 1 + 1.", "answer": "2"}, {"id": "b", "problem": "Calculate 2 + 2."}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke("good", "--source", source, "-n", 2, "--out", tmp_path / "eval", "-q", *FAST_MATH)
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "eval" / "summary.json").read_text())["models"]["good"]
    assert model["unverified"] == 2 and model["pass@1"] == pytest.approx(0.5)  # unverified counts as not correct
    reasons = {r["prompt_id"]: r["reason"] for r in pq.read_table(tmp_path / "eval/good/samples.parquet").to_pylist()}
    assert reasons == {"a": "ok", "b": "math_unverified"}


def test_config_file_and_flag_precedence(stub_engine, bench_file, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"eval:\n  models: [good]\n  source: {bench_file}\n  num_samples: 3\n  num_prompts: 2\n"
        f"  verifiers: {{math: {{workers: 0}}}}\n  out: {tmp_path / 'eval'}\n  quiet: true\n"
    )
    result = invoke("--config", recipe, "-n", 1)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["samples_per_prompt"] == 1 and summary["prompts"] == 2  # the flag beat the recipe
    assert summary["verifiers"] == {"math": {"workers": 0}}


def test_lora_adapter_is_merged_for_the_run(tiny_model, bench_file, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(adapter)
    out = tmp_path / "eval"
    result = invoke(adapter, "--label", "lora", "--source", bench_file, "--num-prompts", 2, "-n", 1,
                    "--max-tokens", 4, "--out", out, "-q", *FAST_MATH)  # fmt: skip
    assert result.exit_code == 0, result.output
    model_summary = json.loads((out / "summary.json").read_text())["models"]["lora"]
    assert model_summary["adapter_base"] == tiny_model and model_summary["samples"] == 2
    assert not (out / "lora" / "merged").exists()  # the merged copy is not left behind


@pytest.mark.parametrize(
    "args, message",
    [
        (["good", "--out", "OUT"], "no benchmark: pass --source"),
        (["good", "--source", "BENCH"], "no output folder"),
        (["good", "--source", "BENCH", "--out", "OUT", "--label", "a", "--label", "b"], "give one label per model"),
        (["good", "--source", "BENCH", "--out", "OUT", "--verifiers", "maths"], "did you mean `math`"),
        (["good", "--source", "BENCH", "--out", "OUT", "--option", "format.x=1"], "not in --verifiers"),
        (["good", "--source", "BENCH", "--out", "OUT", "--option", "math.extractoin=lenient"], "unknown option"),
        (["a/b", "a-b", "--source", "BENCH", "--out", "OUT"], "give each a --label"),
        (["good", "--source", "BENCH", "--out", "OUT", "-n", "0"], "-n/--samples must be at least 1"),
        (["good", "--source", "BENCH", "--out", "OUT", "--domain", "general"], "checks domain general"),
        (["good", "--source", "missing.jsonl", "--out", "OUT"], "source not found"),
        (["good", "--source", "BENCH", "--out", "OUT", "--resume", "--overwrite"], "contradict"),
    ],
)
def test_bad_input_is_a_one_line_error(stub_engine, bench_file, tmp_path, args, message):
    args = [str(bench_file) if a == "BENCH" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_overwrite_refuses_a_folder_eval_did_not_write(stub_engine, bench_file, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("good", "--source", bench_file, "--out", out, "--overwrite", "-q", *FAST_MATH)
    assert result.exit_code == 1 and "notes.txt" in result.output
    assert (out / "notes.txt").exists()


def test_help():
    result = CliRunner().invoke(eval_command, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    for flag in ("--samples", "--label", "--verifiers", "--option", "--resume", "--overwrite", "--source-option"):
        assert flag in result.output


@pytest.mark.slow
def test_embedded_smollm2_on_reasoning_gym(tmp_path):
    out = tmp_path / "eval"
    result = invoke(
        "--source", "reasoning-gym:basic_arithmetic", "--source-option", "min_terms=2", "--source-option",
        "max_terms=2", "--source-option", "min_digits=1", "--source-option", "max_digits=1", "--num-prompts", 4,
        "-n", 2, "--max-tokens", 128, "--option", "math.extraction=lenient", "--out", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = json.loads((out / "summary.json").read_text())["models"]["smollm2-135m"]
    assert model["prompts"] == 4 and model["samples"] == 8
    values = [model["pass@1"], model["pass@1_se"], *model["pass@k"].values()]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
