"""Held out means held out: eval leaves out every problem a training set holds (problem_key), and says how many."""

import json

import pytest
from click.testing import CliRunner
from test_eval import FAST_MATH, StubEngine  # noqa: F401 - the stub engine of test_eval

from distill.cli import main
from distill.config import GenerateConfig
from distill.generate.sources import load_prompts
from distill.pipeline import plan
from distill.recipe import load_recipe
from distill.train.compare import held_out, problem_key

SUMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ["+", "-"]}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Calculate 5 + 2.", "Calculate 5 + 2.", True),
        ("Calculate ( 8 - -8 ).", "What is 8 + 8?", True),  # brackets, doubled signs, other words
        ("Calculate -5 - -2.", "Calculate ( -5 + 2 ).", True),
        ("Calculate 5 + 2.", "Calculate 2 + 5.", False),  # another expression, though the same value
        ("Calculate (2 + 3) * (4 - 1).", "Calculate 2 + 3 * 4 - 1.", False),  # inner brackets matter
        ("Write a poem about the sea.", "write a  poem about the sea.", True),
        ("Write a poem about the sea.", "Write a poem about a lake.", False),
    ],
)
def test_problem_key(a, b, same):
    assert (problem_key(a) == problem_key(b)) is same


def sums(seed: int, n: int):
    return load_prompts(GenerateConfig(source="reasoning-gym:basic_arithmetic", num_prompts=n, seed=seed,
                                       source_options=SUMS))  # fmt: skip


def test_the_proofs_held_out_sums_overlap_its_training_sums():
    """benchmarks/proof.py's sets: 144 training sums (seed 0) and 100 held-out ones (seed 1000)."""
    train, evaluated = sums(0, 144), sums(1000, 100)
    kept, dropped = held_out(evaluated, [p.problem for p in train])
    word_for_word = sum(p.problem in {t.problem for t in train} for p in evaluated)
    assert (word_for_word, dropped, len(kept)) == (4, 8, 92)


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr("distill.generate.run.make_engine", lambda config: StubEngine(config.model))


def test_eval_leaves_out_training_problems_and_counts_them(stub, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)})
                             + "\n" for i in range(8)))  # fmt: skip
    training = tmp_path / "train.jsonl"  # two of the benchmark's sums, one in other words
    training.write_text(json.dumps({"problem": "Calculate 1 + 1."}) + "\n" + json.dumps({"problem": "What is 3 + 3?"}))
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["eval", "good", "--source", str(bench), "--num-prompts", "4", "-n", "1",
                                       "--out", str(out), *FAST_MATH, "--exclude", str(training)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["excluded_training_problems"] == 2 and summary["prompts"] == 4
    evaluated = [json.loads(line)["id"] for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert evaluated == ["p0", "p2", "p4", "p5"]  # the first four that no training set holds
    import pyarrow.parquet as pq

    assert sorted(pq.read_table(out / "good" / "samples.parquet").column("prompt_id").to_pylist()) == evaluated
    # a rerun resumes into the same folder and the same held-out prompts
    again = CliRunner().invoke(main, ["eval", "good", "--source", str(bench), "--num-prompts", "4", "-n", "1", "--out",
                                      str(out), *FAST_MATH, "--exclude", str(training), "--resume"])  # fmt: skip
    assert again.exit_code == 0, again.output


def test_recipes_exclude_what_their_stages_trained_on():
    steps = plan(load_recipe("recipes/quickstart.yaml"), "recipes/quickstart.yaml")
    (evaluation,) = [s for s in steps if s.stage == "eval"]
    assert evaluation.config.exclude == [str(s.out) for s in steps if s.stage == "generate"]
    steps = plan(load_recipe("recipes/r1-zero-cpu.yaml"), "recipes/r1-zero-cpu.yaml")
    (evaluation,) = [s for s in steps if s.stage == "eval"]
    (rl,) = [s for s in steps if s.stage == "rl"]
    assert evaluation.config.exclude[0]["seed"] == rl.config.seed == 0
    assert evaluation.config.exclude[0]["num_prompts"] == rl.config.num_prompts
