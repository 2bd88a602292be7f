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
