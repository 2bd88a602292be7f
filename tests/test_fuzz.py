"""Fuzzing (issue 6): hostile prompt files, recipes and --config files end in a load or a one-line error.

The strategies and checks live in benchmarks/checks/fuzz.py, which the reliability table runs with thousands of
examples; here a few dozen per target keep CI fast, and Hypothesis shrinks a crash to the smallest input that
shows it. Then one test per bug the fuzzing found, with the input that found it.
"""

import json

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.checks.fuzz import (
    HUGE,
    PROMPT_FILES,
    check_cli,
    check_dataset_folder,
    check_prompt_file,
    check_recipe,
    check_recipe_file,
    check_runtime,
    check_stage_config,
    cli_cases,
    dataset_folders,
    extractors,
    prompt_options,
    recipes,
    runtime_cases,
    set_args,
    stage_configs,
    yaml_texts,
)
from distill.cli import main
from distill.config import FilterConfig, GenerateConfig
from distill.errors import DistillError
from distill.generate.sources import load_prompts
from distill.pipeline import plan
from distill.recipe import apply_sets, load_yaml
from distill.settings import build_config

LINEAR_SCANS = sorted(extractors())

FAST = settings(
    max_examples=40,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------------------------------------------
# The properties, on generated inputs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(PROMPT_FILES))
@FAST
@given(data=st.data())
def test_prompt_files_load_or_fail_cleanly(work, suffix, data):
    case = (data.draw(PROMPT_FILES[suffix]), suffix, data.draw(prompt_options))
    assert check_prompt_file(case, work) in ("ok", "error")


@settings(FAST, max_examples=10)
@given(case=dataset_folders())
def test_dataset_folders_load_or_fail_cleanly(work, case):
    assert check_dataset_folder(case, work) in ("ok", "error")


@FAST
@given(case=yaml_texts)
def test_recipe_files_plan_or_fail_cleanly(work, case):
    assert check_recipe_file(case, work) in ("ok", "error")


@FAST
@given(case=st.tuples(recipes(), set_args))
def test_recipes_with_sets_plan_or_fail_cleanly(work, case):
    assert check_recipe(case, work) in ("ok", "error")


@FAST
@given(case=stage_configs())
def test_stage_configs_build_or_fail_cleanly(work, case):
    assert check_stage_config(case, work) in ("ok", "error")


@settings(FAST, max_examples=30)
@given(case=cli_cases())
def test_cli_exits_cleanly(work, case):
    assert check_cli(case, work) in ("ok", "error")


@FAST
@given(case=runtime_cases(LINEAR_SCANS))
def test_verifier_scans_run_in_linear_time_on_hostile_text(work, case):
    # Before the linear rewrites, `\boxed{` or `\[` repeated took seconds at 32k characters (12 s at 54k).
    assert check_runtime(case, work) == "ok"


@pytest.mark.parametrize("unit", ["\\boxed{", "\\fbox{", "\\[", "\\(", "\\begin{x}", "{", "<think>"])
@pytest.mark.parametrize("name", LINEAR_SCANS)
def test_the_known_quadratic_inputs_stay_linear(work, name, unit):
    assert check_runtime((unit, name), work) == "ok"


# --------------------------------------------------------------------------------------------------------------
# Hand-picked prompt files: what each must give
# --------------------------------------------------------------------------------------------------------------


def prompts(path, **options):
    config = GenerateConfig(source=str(path), out="unused", **options)
    config.validate()
    return load_prompts(config)


@pytest.mark.parametrize(
    "name, data, count",
    [
        ("huge.jsonl", json.dumps({"problem": HUGE}).encode(), 1),  # a 5 MB prompt is no error
        ("huge.csv", b"problem\n" + HUGE.encode() + b"\n", 1),  # csv's own limit is 128 KiB
        ("bom.jsonl", b'\xef\xbb\xbf{"problem": "x"}\n{"problem": "y"}', 2),
        ("bom.json", b'\xef\xbb\xbf[{"problem": "x"}]', 1),
        ("bom.csv", b"\xef\xbb\xbfproblem\nx\n", 1),  # not a column named "\ufeffproblem"
        ("nul.jsonl", b'{"problem": "a\\u0000b"}', 1),
        ("nul.csv", b"problem\na\x00b\n", 1),
        ("blank-lines.jsonl", b'\n{"problem": "x"}\n\n  \n', 1),
        ("same-prompt.jsonl", b'{"problem": "x"}\n{"problem": "x"}', 2),
        ("nested-gold.jsonl", b'{"problem": "x", "answer": [1, {"b": null}], "tests": {"a": 1}}', 1),
    ],
)
def test_hostile_but_valid_files_load(tmp_path, name, data, count):
    (tmp_path / name).write_bytes(data)
    loaded = prompts(tmp_path / name)
    assert len(loaded) == count
    assert len({p.prompt_id for p in loaded}) == count


def test_odd_gold_and_tests_become_text(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet lists may hold dates and bytes, which json.dumps cannot write without help.
    table = pa.table(
        {
            "problem": ["x"],
            "answer": pa.array([[datetime.date(2020, 1, 2)]], pa.list_(pa.date32())),
            "tests": pa.array([[b"\x00\xff"]], pa.list_(pa.binary())),
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    (prompt,) = prompts(tmp_path / "p.parquet")
    assert prompt.gold == '["2020-01-02"]'
    assert isinstance(prompt.tests, str)


@pytest.mark.parametrize(
    "name, data, options, message",
    [
        ("empty.jsonl", b"", {}, "holds no rows"),
        ("blank.jsonl", b" \n\t\n", {}, "holds no rows"),
        ("empty.json", b"", {}, r"not valid JSON \(Expecting value"),
        ("blank.csv", b"  \n  \n", {}, "no prompt column"),
        ("bytes.jsonl", b'{"problem": "\xff"}', {}, "bytes.jsonl:1: not valid UTF-8"),
        ("bytes.json", b'[{"problem": "\xff"}]', {}, "bytes.json: not valid UTF-8"),
        ("bytes.csv", b"problem\n\xff\n", {}, "bytes.csv: not valid UTF-8"),
        ("long-int.jsonl", b'{"problem": "x", "id": ' + b"9" * 5000 + b"}", {}, "more than 4300 digits"),
        ("long-int.json", b'[{"problem": ' + b"9" * 5000 + b"}]", {}, "more than 4300 digits"),
        ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
        ("ragged.csv", b"problem\na,b\n", {}, r"ragged.csv:2: more fields than the header's 1"),
        ("lone-id.jsonl", b'{"id": "a", "problem": "x"}\n{"problem": "y"}', {}, "row 2 .* no usable id"),
        ("null-id.jsonl", b'{"id": null, "problem": "x"}', {}, "row 1 .* no usable id"),
        ("list-id.jsonl", b'{"id": [1], "problem": "x"}', {}, "row 1 .* no usable id"),
        ("same-id.jsonl", b'{"id": 1, "problem": "x"}\n{"id": "1", "problem": "y"}', {}, "row 2 .* repeats id `1`"),
        ("surrogate.jsonl", b'{"problem": "\\ud800"}', {}, "row 1 .* not valid Unicode"),
        ("surrogate-id.jsonl", b'{"problem": "x", "id": "\\udfff"}', {}, "row 1 .* not valid Unicode"),
        ("domain.jsonl", b'{"problem": "x", "domain": "a\\nb"}', {}, r"unknown domain `a\\nb`"),
        ("p.jsonl", b'{"problem": "x"}', {"num_prompts": -1}, "--num-prompts must be at least 1"),
        ("p.jsonl", b'{"problem": "x"}', {"system_prompt": "\udcff"}, "--system-prompt is not valid UTF-8"),
    ],
)
def test_hostile_files_are_one_line_errors(tmp_path, name, data, options, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DistillError, match=message) as caught:
        prompts(tmp_path / name, **options)
    assert "\n" not in str(caught.value)


def test_raw_folder_with_a_null_json_file_is_an_error_not_a_segfault(tmp_path):
    # pyarrow's JSON reader (under `datasets`) kills the process on this file; we read it first.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.json").write_bytes(b"null")
    with pytest.raises(DistillError, match="expected a JSON list of objects"):
        prompts(tmp_path / "data")


# --------------------------------------------------------------------------------------------------------------
# Recipes and --config files
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"generate: {source: \xff}", "not UTF-8 text"),
        (b"[" * 5000, "nests too deeply"),
        (b"out: " + b"9" * 5000, "more than 4300 digits"),
        (b"a: \x00", "not valid YAML: unacceptable character"),
        (b"- generate", "must hold a mapping"),
        (b"42", "must hold a mapping"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, data, message):
    (tmp_path / "r.yaml").write_bytes(data)
    with pytest.raises(DistillError, match=message) as caught:
        load_yaml(tmp_path / "r.yaml")
    assert "\n" not in str(caught.value)
    with pytest.raises(DistillError, match="cannot read config file"):
        load_yaml(tmp_path)  # a folder


@pytest.mark.parametrize(
    "cls, recipe, message",
    [
        (GenerateConfig, {"temperature": "1e-5"}, r"`temperature` .* must be a number, got text .*write 1.0e-5"),
        (GenerateConfig, {"num_prompts": 2.5}, "`num_prompts` .* must be a whole number or null"),
        (GenerateConfig, {"seed": True}, "`seed` .* must be a whole number, got a boolean"),
        (GenerateConfig, {"source": 5}, "`source` .* must be text, got a number"),
        (GenerateConfig, {"source_options": [1]}, "`source_options` .* must be a mapping"),
        (GenerateConfig, {1: "x"}, "key `1` in the recipe is not a name"),
        (GenerateConfig, ["source"], "the recipe must be a mapping of keys to values, got a list"),
        (FilterConfig, {"verifiers": {"math": 5}}, "`verifiers` .* must be a mapping of verifier names to options"),
        (FilterConfig, {"verifiers": {1: {}}}, "`verifiers` .* must be a mapping of verifier names"),
        (FilterConfig, {"inputs": [1]}, "`inputs` .* must be a list of text"),
    ],
)
def test_wrong_types_name_the_key(cls, recipe, message):
    with pytest.raises(DistillError, match=message):
        build_config(cls, recipe, {})


def test_what_the_stages_normalize_still_fits():
    config = build_config(GenerateConfig, {"stop": "###", "source_options": {"x": [1]}}, {})
    assert config.stop == ["###"]  # one stop string, not one per character
    config = build_config(FilterConfig, {"inputs": "a", "verifiers": {"math": None, "format": {}}}, {})
    assert config.inputs == ["a"] and config.verifiers == {"math": {}, "format": {}}
    assert build_config(FilterConfig, {"verifiers": "math,format"}, {}).verifiers == {"math": {}, "format": {}}


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"out": ["x"]}, "`out` in r.yaml must be a folder path"),
        ({"train": ["x"]}, "each entry of the `train` list needs a `name`"),  # train, as generate, takes a list
        ({"train": "x"}, "section `train` must be a mapping or a list of mappings"),
        ({"eval": "x"}, "section `eval` of r.yaml must be a mapping"),
        ({1: {}}, "unknown section `1`"),
        ({"generate": [{"name": "../up", "source": "reasoning-gym:x"}]}, "name `../up` is not a folder name"),
        ({"generate": {"name": 5, "source": "reasoning-gym:x"}}, "name `5` is not a folder name"),
        ({"filter": [{"name": "a\nb", "inputs": "x"}]}, r"name `a\\nb` is not a folder name"),
        ({"filter": {"inputs": {"a": 1}}}, "`inputs` must be a generate entry's name or a folder"),
        ({"filter": {"inputs": "x"}, "mix": {"ratio": {"default": 0}}}, "mix.ratio shares must be"),
        ({"filter": {"inputs": "x"}, "mix": {"ratio": {"default": float("nan")}}}, "mix.ratio shares must be"),
        ({"filter": {"inputs": "x"}, "mix": {"ratio": {"default": 1}, "total": 0}}, "mix.total must be at least 1"),
    ],
)
def test_recipe_shapes_are_one_line_errors(recipe, message):
    with pytest.raises(DistillError, match=message):
        plan(recipe, "r.yaml")


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(DistillError, match="is a file, not a folder"):
        plan({"filter": {"inputs": "x", "out": str(tmp_path / "taken")}}, "r.yaml")


def test_sets_on_odd_recipes():
    assert apply_sets({"train": None}, ("train.max_steps=5",)) == {"train": {"max_steps": 5}}
    with pytest.raises(DistillError, match="not valid YAML: quote it"):
        apply_sets({}, ("train.max_steps=[",))
    with pytest.raises(DistillError, match="`train` in the recipe is not a mapping"):
        apply_sets({"train": 5}, ("train.max_steps=5",))
    with pytest.raises(DistillError, match=r"got `a\\nb`"):
        apply_sets({}, ("a\nb",))


def test_cli_turns_config_shapes_into_errors(tmp_path):
    runner = CliRunner()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"generate": [{"name": "a", "source": "x.jsonl"}]}))
    result = runner.invoke(main, ["generate", "--config", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "is a list of entries: run it with `distill run" in result.output
    recipe.write_text("generate: 5\n")
    result = runner.invoke(main, ["generate", "--config", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "must be a mapping of keys to values" in result.output
    prompts_file = tmp_path / "p.jsonl"
    prompts_file.write_text('{"problem": "x"}\n')
    args = ["generate", "--source", str(prompts_file), "--out", str(tmp_path / "o"), "--source-option", "a=["]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "the value of `a` is not valid YAML" in result.output
    recipe.write_bytes(b"[" * 5000)
    result = runner.invoke(main, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 1 and "nests too deeply" in result.output and "Traceback" not in result.output
