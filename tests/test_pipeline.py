"""`distill run RECIPE` on the tiny model: stage order, skip and resume, overrides, validation."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from distill.cli import main
from distill.errors import DistillError
from distill.pipeline import plan
from distill.recipe import apply_sets, load_recipe


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
    assert "recipe changed" not in second.output  # the settings a stage writes back read as no change
    # A finished stage whose recipe settings changed is kept, and the plan says so, naming the setting
    changed = run("--dry-run", str(recipe), "--set", "generate.max_tokens=7", "--set", "generate.temperature=0.5")
    assert changed.output.count("complete: skip") == 2
    (warning,) = [line for line in changed.output.splitlines() if "recipe changed" in line]
    assert "max_tokens 6 -> 7" in warning and "temperature 0.6 -> 0.5" in warning and str(out / "generate") in warning


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
    with pytest.raises(Exception, match="SECTION.KEY=VALUE or out=DIR"):
        apply_sets({}, ("nope",))
    with pytest.raises(Exception, match="unknown section `trian`"):
        apply_sets({}, ("trian.max_steps=1",))


ROOT = Path(__file__).resolve().parent.parent


def test_shipped_recipes_validate():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        steps = plan(load_recipe(str(path)), str(path))
        assert steps, path


@pytest.mark.parametrize("name", ["quickstart.yaml", "r1-zero-cpu.yaml", "opd-cpu.yaml"])
def test_shipped_cpu_recipes_plan_from_any_folder(tmp_path, monkeypatch, name):
    # A user runs the checkout's recipe from elsewhere: files beside the recipe are found, outputs land here.
    monkeypatch.chdir(tmp_path)
    recipe = ROOT / "recipes" / name
    result = run(str(recipe), "--dry-run")
    steps = plan(load_recipe(str(recipe)), str(recipe))
    for step in steps:
        assert not step.out.is_absolute() and step.out.parts[0] == "runs", step.out
        source = getattr(step.config, "source", "")
        if source and not source.startswith("reasoning-gym:"):
            assert Path(source).is_file() and Path(source).is_relative_to(ROOT), source
    assert "runs/" in result.output


def test_recipe_inputs_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "prompts.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    (folder / "bench.jsonl").write_text('{"problem": "2+2?"}\n')
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.jsonl").write_text('{"problem": "3+3?"}\n')
    recipe = {
        "generate": [
            {"name": "a", "source": "data/prompts.jsonl", "model": "smollm2-135m"},
            {"name": "b", "source": "mine.jsonl"},  # not beside the recipe: the working directory's, as before
            {"name": "c", "source": "reasoning-gym:basic_arithmetic"},
            {"name": "d", "source": "HuggingFaceH4/MATH-500"},
        ],
        "filter": {"decontaminate": ["bench.jsonl"], "verifiers": {"judge": {"model": "data"}}},
        "train": {"data": ["data"], "chat_template": "think-preserving"},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(work)
    loaded = load_recipe(str(path), ("generate.b.num_prompts=1",))
    a, b, c, d = loaded["generate"]
    assert a["source"] == str(folder / "data" / "prompts.jsonl") and a["model"] == "smollm2-135m"
    assert (b["source"], b["num_prompts"]) == ("mine.jsonl", 1)
    assert (c["source"], d["source"]) == ("reasoning-gym:basic_arithmetic", "HuggingFaceH4/MATH-500")
    assert loaded["filter"]["decontaminate"] == [str(folder / "bench.jsonl")]
    assert loaded["filter"]["verifiers"]["judge"]["model"] == str(folder / "data")
    assert loaded["train"] == {"data": [str(folder / "data")], "chat_template": "think-preserving"}
    # Under the working directory, a resolved path stays relative to it (as the user would have written it).
    monkeypatch.chdir(tmp_path)
    assert load_recipe(str(path))["generate"][0]["source"] == "recipes/data/prompts.jsonl"


def test_run_out_and_set_out_choose_the_output_folder(tmp_path, tiny_model, prompts_file, monkeypatch):
    recipe = write_recipe(tmp_path, tiny_model, prompts_file)
    monkeypatch.chdir(tmp_path)
    assert "elsewhere/generate" in run(str(recipe), "--out", "elsewhere", "--dry-run").output
    assert "other/filter" in run(str(recipe), "--set", "out=other", "--dry-run").output
    run(str(recipe), "--out", "elsewhere", "--until", "generate")
    assert json.loads((tmp_path / "elsewhere" / "generate" / "stats.json").read_text())["samples"] == 12
    assert not (tmp_path / "run").exists()


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
