import pytest

from distill.config import GenerateConfig
from distill.errors import DistillError
from distill.recipe import load_yaml
from distill.settings import build_config


def test_precedence_default_recipe_flag():
    config = build_config(GenerateConfig, {"temperature": 0.8, "top_p": 0.9}, {"temperature": 1.0})
    assert config.temperature == 1.0  # flag beats recipe
    assert config.top_p == 0.9  # recipe beats default
    assert config.max_tokens == 32768  # default (R1's budget)


def test_unknown_key_names_the_near_one():
    with pytest.raises(DistillError, match="unknown key `temprature`.*did you mean `temperature`"):
        build_config(GenerateConfig, {"temprature": 0.7}, {})


def test_bad_yaml_is_one_line(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("generate: [unclosed\n")
    with pytest.raises(DistillError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(DistillError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_samples": 0}, "-n must be"),
        ({"shard_index": 2, "num_shards": 2}, "--shard-index"),
        ({"resume": True, "overwrite": True}, "contradict"),
        ({"source": ""}, "no prompt source"),
    ],
)
def test_validate(changes, message):
    config = GenerateConfig(**{"source": "x.jsonl", "out": "o", **changes})
    with pytest.raises(DistillError, match=message):
        config.validate()


@pytest.mark.parametrize("temperature, top_p", [(float("nan"), 0.95), (-0.1, 0.95), (0.6, 0.0), (0.6, 1.5)])
def test_sampling_must_be_sane_in_generate_and_eval(temperature, top_p):
    from distill.config import EvalConfig

    for config in (
        GenerateConfig(source="s", out="o", temperature=temperature, top_p=top_p),
        EvalConfig(source="s", out="o", temperature=temperature, top_p=top_p),
    ):
        with pytest.raises(DistillError, match="temperature|top-p"):
            config.validate()
    assert EvalConfig(source="s", out="o", stop="###").stop == ["###"]


# --- one teacher config ---------------------------------------------------------------------------------------


def test_generate_eval_and_the_judge_share_one_teacher_config():
    import dataclasses

    from distill.config import EngineConfig, EvalConfig, SampledConfig, TeacherConfig
    from distill.filter.verifiers.judge import JudgeVerifier

    assert issubclass(GenerateConfig, SampledConfig) and issubclass(EvalConfig, SampledConfig)
    judge = JudgeVerifier(engine="transformers", max_tokens=64, engine_options={"device": "cpu"})
    assert isinstance(judge.config, TeacherConfig) and judge.config.device == "cpu"
    # The defaults are written once: every stage and the engines' Sampling agree.
    from distill.engines import Sampling

    for name in ("temperature", "top_p", "min_p", "max_tokens"):
        defaults = {getattr(cls(), name) for cls in (GenerateConfig, EvalConfig, TeacherConfig)}
        assert defaults == {getattr(Sampling(), name)}, name
    assert EvalConfig().num_samples == 4 and GenerateConfig().num_samples == 1
    # A setting added to the shared classes reaches eval's generations: nothing is copied by matching names.
    from distill.train.eval import generate_config

    shared = {f.name for f in dataclasses.fields(SampledConfig)} - {"model"}
    evaluation = EvalConfig(source="b.jsonl", out="o", min_p=0.05, max_concurrency=3, request_timeout=9.0, seed=7)
    generation = generate_config(evaluation, "m", __import__("pathlib").Path("o/m/generations"))
    assert {n: getattr(generation, n) for n in shared} == {n: getattr(evaluation, n) for n in shared}
    assert generation.model == "m" and generation.min_p == 0.05
    assert {f.name for f in dataclasses.fields(EngineConfig)} < {f.name for f in dataclasses.fields(EvalConfig)}


def test_min_p_flag_reaches_the_config_and_is_checked(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main
    from distill.config import EvalConfig

    assert build_config(GenerateConfig, {"min_p": 0.1}, {}).min_p == 0.1
    assert GenerateConfig(min_p=0.1).sampling().min_p == 0.1
    for config in (GenerateConfig(source="s", out="o", min_p=1.5), EvalConfig(source="s", out="o", min_p=-0.1)):
        with pytest.raises(DistillError, match="--min-p must be in"):
            config.validate()
    for command in ("generate", "eval"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert "--min-p" in result.output
    result = CliRunner().invoke(
        main, ["generate", "--source", "x.jsonl", "--out", str(tmp_path / "o"), "--min-p", "2"]
    )
    assert result.exit_code == 1 and "--min-p must be in [0, 1], got 2.0" in result.output


def test_min_p_is_part_of_the_sample_id_only_when_set():
    from distill.generate.run import sampling_params

    assert "min_p" not in sampling_params(GenerateConfig())  # ids of runs without it stay what they were
    assert sampling_params(GenerateConfig(min_p=0.05))["min_p"] == 0.05


# --- bounded recipes (issue 11.9) -----------------------------------------------------------------------------


def laughs(levels: int) -> str:
    """Nested anchors: each level is ten aliases of the one before, 10**levels values from a few hundred bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\ngenerate: {{source: x.jsonl, stop: *l{levels - 1}}}\n"


def test_alias_expansion_is_refused_before_anything_is_built(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(laughs(6))  # 10**6 values
    assert bomb.stat().st_size < 400
    with pytest.raises(DistillError, match="expands to more than 100,000 values through its aliases"):
        load_yaml(bomb)
    for args in (["run", str(bomb), "--dry-run"], ["generate", "--config", str(bomb)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "use fewer aliases" in result.output
    # A few aliases are fine: they are part of YAML, and recipes use them.
    fine = tmp_path / "fine.yaml"
    fine.write_text("common: &c {source: x.jsonl, max_tokens: 8}\ngenerate: *c\n")
    assert load_yaml(fine)["generate"] == {"source": "x.jsonl", "max_tokens": 8}


def test_a_value_that_refers_to_itself_is_refused(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("generate: &g\n  source: x\n  source_options: *g\n")
    with pytest.raises(DistillError, match="refers to itself"):
        load_yaml(loop)


def test_aliases_in_a_flag_value_are_bounded_too(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("generate: {source: x.jsonl}\n")
    value = laughs(6).split("\ngenerate")[0].replace("\n", ", ").replace(": &", ": &")
    flow = "{" + value + "}"
    result = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", f"generate.source_options={flow}"])
    assert result.exit_code == 1 and "expands to more than" in result.output, result.output


def test_a_huge_value_never_gives_a_traceback_nor_comes_back_whole(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    (tmp_path / "p.jsonl").write_text('{"problem": "1 + 1"}\n')
    huge = tmp_path / "huge.yaml"
    huge.write_text("out: " + "a" * 10_000_000 + "\ngenerate: {source: p.jsonl}\n")
    result = CliRunner().invoke(main, ["run", str(huge), "--dry-run"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "more than a recipe's 1 MiB" in result.output and len(result.output) < 500
    long = tmp_path / "long.yaml"  # under the file cap, far over any path length
    for text in (
        f"out: {'a' * 100_000}\ngenerate: {{source: {tmp_path / 'p.jsonl'}}}\n",
        f"generate: {{source: {tmp_path / 'p.jsonl'}, out: {'b' * 100_000}}}\n",
        f"generate: {{source: {'c' * 100_000}.jsonl}}\n",
        f"generate: {{source: x.jsonl, engine: {'d' * 100_000}}}\n",
    ):
        long.write_text(text)
        for args in (
            ["run", str(long), "--dry-run"],
            ["generate", "--config", str(long)],
        ):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1, result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) < 600, lines[0][:300]
