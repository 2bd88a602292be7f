"""`distill run RECIPE` on the tiny model: stage order, skip and resume, overrides, validation."""

import json

import pytest
import yaml
from click.testing import CliRunner

from distill.cli import main
from distill.errors import DistillError
from distill.pipeline import apply_sets, plan


def write_recipe(tmp_path, tiny_model, prompts_file, **extra):
    recipe = {
        "out": str(tmp_path / "run"),
        "generate": {"source": str(prompts_file), "model": tiny_model, "num_samples": 2, "max_tokens": 6},
        "filter": {"verifiers": {"length": {"min_tokens": 0}}},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(*args, expect=0):
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == expect, result.output
    return result


def test_stages_run_in_order_then_skip_when_complete(tmp_path, tiny_model, prompts_file):
    recipe = write_recipe(tmp_path, tiny_model, prompts_file)
    first = run(str(recipe))
    out = tmp_path / "run"
    assert json.loads((out / "generate" / "stats.json").read_text())["samples"] == 12
    assert json.loads((out / "filter" / "stats.json").read_text())["total"] == 12
    assert (out / "filter" / "report.html").exists()
    assert "generate" in first.output and str(out / "filter") in first.output
    second = run(str(recipe))
    assert "complete, skipped" in second.output
    assert second.output.count("complete: skip") == 2


def test_interrupted_stage_resumes_and_later_stages_rerun(tmp_path, tiny_model, prompts_file):
    recipe = write_recipe(tmp_path, tiny_model, prompts_file)
    run(str(recipe))
    out = tmp_path / "run"
    # Simulate a kill inside generate: one shard file and the completion marker gone.
    files = sorted((out / "generate" / "data").glob("*.parquet"))
    (out / "generate" / "stats.json").unlink()
    (out / "filter" / "stats.json").unlink()
    dry = run("--dry-run", str(recipe))
    assert "incomplete: resume" in dry.output
    run(str(recipe))
    stats = json.loads((out / "generate" / "stats.json").read_text())
    assert stats["samples"] == 12 and stats["generated_this_run"] == 0  # resumed, nothing regenerated
    assert len(sorted((out / "generate" / "data").glob("*.parquet"))) == len(files)
    assert (out / "filter" / "stats.json").exists()


def test_from_until_and_set(tmp_path, tiny_model, prompts_file):
    recipe = write_recipe(tmp_path, tiny_model, prompts_file)
    result = run(str(recipe), "--until", "generate", "--set", "generate.num_samples=1")
    out = tmp_path / "run"
    assert json.loads((out / "generate" / "stats.json").read_text())["samples"] == 6
    assert not (out / "filter").exists()
    assert "not selected" in result.output
    run(str(recipe), "--from", "filter", "--set", "generate.num_samples=1")
    assert json.loads((out / "filter" / "stats.json").read_text())["total"] == 6


def test_named_sections_and_set_into_a_list():
    recipe = {
        "generate": [
            {"name": "math", "source": "reasoning-gym:basic_arithmetic"},
            {"name": "general", "source": "reasoning-gym:basic_arithmetic"},
        ]
    }
    changed = apply_sets(recipe, ("generate.general.num_prompts=3",))
    assert changed["generate"][1]["num_prompts"] == 3 and "num_prompts" not in recipe["generate"][1]
    steps = plan({**changed, "out": "/tmp/x", "filter": [{"name": "math"}, {"name": "general"}]})
    filters = [s for s in steps if s.stage == "filter"]
    assert [s.config.inputs for s in filters] == [["/tmp/x/generate/math"], ["/tmp/x/generate/general"]]


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"generate": {"source": "reasoning-gym:basic_arithmetic", "temprature": 1}}, "did you mean `temperature`"),
        ({"genrate": {}}, "r.yaml (did you mean `generate`?)"),
        ({"generate": {"source": "missing.jsonl"}}, "source not found: missing.jsonl"),
        ({"generate": {"source": "x.jsonl", "engine": "tgi"}}, "unknown engine `tgi`"),
        ({"filter": {"inputs": ["a"], "verifiers": {"math": {"extractoin": 1}}}}, "did you mean `extraction`"),
        ({"filter": {"inputs": ["a"], "verifiers": ["maths"]}}, "unknown verifier `maths`"),
        ({"mix": {"ratio": {"x": 1}}}, "mix.ratio must name filter entries"),
        ({"train": {"data": ["d"], "lora_rank": 8}}, "did you mean `lora_r`"),
    ],
)
def test_recipe_is_validated_before_anything_runs(tmp_path, recipe, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "o"), **recipe}))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_set_errors():
    with pytest.raises(Exception, match="SECTION.KEY=VALUE"):
        apply_sets({}, ("nope",))
    with pytest.raises(Exception, match="unknown section `trian`"):
        apply_sets({}, ("trian.max_steps=1",))


def test_shipped_recipes_validate():
    from pathlib import Path

    from distill.pipeline import load_recipe

    for path in sorted(Path("recipes").glob("*.yaml")):
        steps = plan(load_recipe(str(path)), str(path))
        assert steps, path


def filtered_folder(folder, name: str, rows: int) -> None:
    """A finished filter output of `rows` rows (what the mix reads: data/*.parquet with id and messages)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    messages = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    table = pa.table({"id": [f"{name}-{i}" for i in range(rows)], "messages": [messages] * rows})
    pq.write_table(table, folder / "data" / "train-00000-of-00001-part-00000.parquet")
    (folder / "stats.json").write_text(json.dumps({"kept": rows, "total": rows}))


@pytest.mark.parametrize(
    "ratio, total, expected",
    [
        ({"a": 1, "b": 1}, 1001, {"a": 501, "b": 500}),  # Python's round gave 500 + 500 = 1000
        ({"a": 1, "b": 1, "c": 1}, 100, {"a": 34, "b": 33, "c": 33}),  # round gave 33 x 3 = 99
        ({"a": 1, "b": 1, "c": 1}, None, {"a": 600, "b": 600, "c": 600}),  # the most the folders hold: 3 x 600
        ({"a": 3, "b": 1}, None, {"a": 1800, "b": 600}),  # b holds 600 of the 1/4 share
    ],
)
def test_recipe_mix_writes_exactly_its_total(tmp_path, ratio, total, expected):
    import pyarrow.parquet as pq

    root = tmp_path / "run"
    sizes = {"a": 2000, "b": 600, "c": 600}
    for name in ratio:
        filtered_folder(root / "filter" / name, name, sizes[name])
    recipe = {
        "out": str(root),
        "filter": [{"name": name, "inputs": str(tmp_path / "gen")} for name in ratio],
        "mix": {"ratio": ratio, **({"total": total} if total else {})},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run(str(path))
    ids = pq.read_table(root / "mix" / "data", columns=["id"]).column("id").to_pylist()
    assert len(ids) == sum(expected.values()) == (total or len(ids))
    assert {name: sum(i.startswith(f"{name}-") for i in ids) for name in ratio} == expected
    assert len(set(ids)) == len(ids)


def test_recipe_mix_short_of_rows_is_one_line(tmp_path):
    root = tmp_path / "run"
    for name in ("a", "b"):
        filtered_folder(root / "filter" / name, name, 10)
    recipe = {
        "out": str(root),
        "filter": [{"name": name, "inputs": str(tmp_path / "gen")} for name in ("a", "b")],
        "mix": {"ratio": {"a": 3, "b": 1}, "total": 20},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run(str(path), expect=1)
    assert "mix: not enough kept rows for total 20: a needs 15, has 10" in result.output


def test_eval_teacher_is_scored_beside_the_student_and_the_gain_is_after_minus_before():
    recipe = {
        "out": "/tmp/x",
        "train": {"data": ["d"], "student": "smollm2-135m"},
        "eval": {"source": "reasoning-gym:basic_arithmetic", "teacher": "qwen2.5-coder-0.5b"},
    }
    (step,) = [s for s in plan(recipe) if s.stage == "eval"]
    assert step.config.models == ["qwen2.5-coder-0.5b", "smollm2-135m", "/tmp/x/train"]
    assert step.config.labels == ["teacher", "before", "after"]
    assert step.config.gain_of == ["before", "after"]
    with pytest.raises(DistillError, match="eval.teacher .* must be a model name"):
        plan({**recipe, "eval": {**recipe["eval"], "teacher": ["a", "b"]}})
    with pytest.raises(DistillError, match="gain_of must name two of the models' labels"):
        plan({**recipe, "eval": {**recipe["eval"], "gain_of": ["before", "nope"]}})
