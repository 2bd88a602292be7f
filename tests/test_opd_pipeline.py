"""Recipes with several train stages: SFT then on-policy distillation, each from the student of the one before."""

import json

import yaml
from click.testing import CliRunner

from distill.cli import main
from distill.pipeline import plan
from distill.recipe import load_recipe


def test_sft_then_opd_then_eval_of_each(tmp_path, tiny_model, prompts_file):
    bench = tmp_path / "bench.jsonl"  # other sums than the training ones, but for one
    rows = [{"id": "same", "problem": "Calculate 2 + 2.", "answer": "4"}]
    rows += [{"id": f"b{i}", "problem": f"Calculate {i} + {i + 1}.", "answer": str(2 * i + 1)} for i in range(4)]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "out": str(tmp_path / "run"),
        "generate": {"source": str(prompts_file), "model": tiny_model, "num_samples": 1, "max_tokens": 6},
        "filter": {"verifiers": {"length": {"min_tokens": 0}}},
        "train": [
            {"name": "sft", "student": tiny_model, "max_steps": 1, "max_length": 64},
            {
                "name": "opd",
                "method": "opd",
                "teacher": tiny_model,
                "prompts": {"source": str(prompts_file)},
                "max_completion_length": 4,
                "max_steps": 1,
            },
        ],  # fmt: skip
        "eval": {
            "source": str(bench),
            "num_prompts": 3,
            "num_samples": 1,
            "max_tokens": 4,
            "verifiers": {"math": {"workers": 0}},
        },  # fmt: skip
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    steps = plan(load_recipe(str(path)), str(path))
    sft, opd = [s for s in steps if s.stage == "train"]
    assert opd.config.student == sft.config.out and opd.config.data == [] and sft.config.data
    (evaluation,) = [s for s in steps if s.stage == "eval"]
    assert evaluation.config.models == [tiny_model, sft.config.out, opd.config.out]
    assert evaluation.config.labels == ["before", "sft", "opd"]
    assert evaluation.config.gain_of == [["before", "sft"], ["sft", "opd"]]
    # the prompts every stage trained on: the generate output and the OPD prompts
    assert evaluation.config.exclude == [str(tmp_path / "run" / "generate"), {"source": str(prompts_file)}]

    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "train" / "opd" / "train_results.json").read_text())["global_step"] == 1
    assert "gain sft - before" in result.output and "gain opd - sft" in result.output
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert summary["excluded_training_problems"] == 1 and summary["prompts"] == 3


def test_opd_cpu_shares_the_quickstarts_stages():
    """recipes/opd-cpu.yaml reuses the quickstart's folders: its stages before OPD must be the quickstart's."""
    quickstart, opd = load_recipe("recipes/quickstart.yaml"), load_recipe("recipes/opd-cpu.yaml")
    for stage in ("generate", "filter", "mix"):
        ours = opd[stage] if isinstance(opd[stage], dict) else [dict(e) for e in opd[stage]]
        theirs = quickstart[stage]
        strip = lambda e: {k: v for k, v in e.items() if k != "out"}  # noqa: E731
        assert ([strip(e) for e in ours] if isinstance(ours, list) else strip(ours)) == theirs, stage
    sft = {k: v for k, v in opd["train"][0].items() if k not in ("name", "out")}
    assert sft == quickstart["train"]
    steps = {s.label: s for s in plan(opd, "recipes/opd-cpu.yaml")}
    assert str(steps["train:sft"].out) == "runs/quickstart/train" and steps["train:opd"].config.method == "opd"
