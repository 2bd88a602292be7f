import pytest

from distill.config import GenerateConfig, build_config, load_yaml
from distill.errors import DistillError


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
    from distill.config import GenerateConfig
    from distill.errors import DistillError
    from distill.config import EvalConfig

    for config in (
        GenerateConfig(source="s", out="o", temperature=temperature, top_p=top_p),
        EvalConfig(source="s", out="o", temperature=temperature, top_p=top_p),
    ):
        with pytest.raises(DistillError, match="temperature|top-p"):
            config.validate()
    assert EvalConfig(source="s", out="o", stop="###").stop == ["###"]
