"""No stage writes into or deletes its inputs: an output folder that is, holds or lies inside an input (symlinks
resolved) is refused in one line naming both paths, before anything is touched. `--out` given as a link to an
empty folder works; a dangling link is refused in one line."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.errors import DistillError
from distill.io import check_output
from distill.schema import GENERATE_SCHEMA


def generate_output(folder: Path, n: int = 4) -> Path:
    """A finished `distill generate` folder, written by hand (the filter and the checks only read its files)."""
    rows = []
    for i in range(n):
        problem = f"What is {i} + {i}?"
        rows.append(
            {name: None for name in GENERATE_SCHEMA.names}
            | {
                "id": f"id{i}", "prompt_id": f"p{i}", "sample_index": 0, "domain": "math", "source": "test",
                "problem": problem, "prompt_messages": json.dumps([{"role": "user", "content": problem}]),
                "gold": str(2 * i), "reasoning": "add", "answer": f"\\boxed{{{2 * i}}}",
                "completion": f"add</think>\\boxed{{{2 * i}}}", "finish_reason": "stop", "truncated": False,
                "prompt_tokens": 5, "completion_tokens": 5, "teacher": "t", "sampling": "{}",
            }
        )  # fmt: skip
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA), folder / "data" / "train-00000.parquet")
    (folder / "stats.json").write_text("{}")
    return folder


def snapshot(folder: Path) -> dict:
    """Every file under a folder with a hash of its bytes: equal snapshots mean nothing was touched."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def one_line_error(result, *fragments) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def gen(tmp_path) -> Path:
    return generate_output(tmp_path / "gen")


# --- filter: the reported case ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [None, "--overwrite", "--resume"])
def test_filter_into_its_own_input_is_refused_and_the_input_kept(gen, flag):
    before = snapshot(gen)
    result = invoke("filter", gen, "--out", gen, *([flag] if flag else []), "-q")
    one_line_error(result, f"--out {gen} is the input {gen}")
    assert snapshot(gen) == before


@pytest.mark.parametrize("where", ["inside", "holds"])
def test_filter_output_inside_or_around_its_input(gen, tmp_path, where):
    out = gen / "filtered" if where == "inside" else tmp_path
    before = snapshot(gen)
    one_line_error(
        invoke("filter", gen, "--out", out, "--overwrite", "-q"), "lies inside" if where == "inside" else "holds"
    )
    assert snapshot(gen) == before


def test_filter_out_as_a_link_to_its_input_is_refused(gen, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(gen, target_is_directory=True)
    before = snapshot(gen)
    for flag in ("--overwrite", "--resume"):
        one_line_error(invoke("filter", gen, "--out", link, flag, "-q"), f"--out {link} is the input {gen}")
    assert snapshot(gen) == before


def test_filter_input_given_through_a_link_is_recognised(gen, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(gen, target_is_directory=True)
    before = snapshot(gen)
    one_line_error(invoke("filter", link, "--out", gen / "out", "--overwrite", "-q"), "lies inside the input")
    assert snapshot(gen) == before


def test_out_as_a_link_to_an_empty_folder_works_and_stays_a_link(gen, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    result = invoke("filter", gen, "--out", link, "--verifiers", "format", "-q")
    assert result.exit_code == 0, result.output
    assert (target / "stats.json").exists()
    result = invoke("filter", gen, "--out", link, "--verifiers", "format", "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and (target / "stats.json").exists()


def test_out_as_a_dangling_link_is_refused_in_one_line(gen, tmp_path):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    for stage in (["filter", gen], ["mix", f"{gen}:2"]):
        one_line_error(invoke(*stage, "--out", link), "is a link to", "does not exist")
    assert not (tmp_path / "nowhere").exists()


# --- the other stages ---------------------------------------------------------------------------------------------


def test_generate_refuses_its_source_and_its_model(tiny_model, prompts_file, tmp_path):
    source_folder = tmp_path / "prompts"
    source_folder.mkdir()
    (source_folder / "p.jsonl").write_text(prompts_file.read_text())
    model_before = snapshot(Path(tiny_model))
    common = ["generate", "--model", tiny_model, "--max-tokens", "4", "-q"]
    for flag in ("--overwrite", "--resume"):
        one_line_error(invoke(*common, "--source", source_folder, "--out", source_folder, flag), "is the input")
        one_line_error(invoke(*common, "--source", prompts_file, "--out", tmp_path, flag), "holds the input")
        result = invoke(*common, "--source", prompts_file, "--out", Path(tiny_model) / "gen", flag)
        one_line_error(result, f"lies inside the input {tiny_model}")
    assert (source_folder / "p.jsonl").read_text() == prompts_file.read_text()
    assert snapshot(Path(tiny_model)) == model_before


def test_mix_refuses_its_input(gen, tmp_path):
    filtered = tmp_path / "filtered"
    assert invoke("filter", gen, "--out", filtered, "--verifiers", "format", "-q").exit_code == 0
    before = snapshot(filtered)
    one_line_error(invoke("mix", f"{filtered}:2", "--out", filtered, "--overwrite"), "is the input")
    one_line_error(invoke("mix", f"{filtered}:2", "--out", filtered / "data", "--overwrite"), "lies inside")
    assert snapshot(filtered) == before


def test_train_refuses_its_data_and_its_student(gen, tiny_model, tmp_path):
    filtered = tmp_path / "filtered"
    assert invoke("filter", gen, "--out", filtered, "--verifiers", "format", "-q").exit_code == 0
    before, model_before = snapshot(filtered), snapshot(Path(tiny_model))
    for flag in ("--overwrite", "--resume"):
        args = ["train", filtered, "--student", tiny_model, "--max-steps", "1", flag, "-q"]
        one_line_error(invoke(*args, "--out", filtered), f"--out {filtered} is the input {filtered}")
        one_line_error(invoke(*args, "--out", tiny_model), f"is the input {tiny_model}")
    assert snapshot(filtered) == before and snapshot(Path(tiny_model)) == model_before


def test_eval_refuses_its_models_and_its_benchmark(tiny_model, prompts_file, tmp_path):
    model_before = snapshot(Path(tiny_model))
    for flag in ("--overwrite", "--resume"):
        args = ["eval", tiny_model, "--source", prompts_file, "--max-tokens", "4", "-n", "1", flag, "-q"]
        one_line_error(invoke(*args, "--out", tiny_model), f"is the input {tiny_model}")
        one_line_error(invoke(*args, "--out", tmp_path), f"holds the input {prompts_file}")
    assert snapshot(Path(tiny_model)) == model_before and prompts_file.exists()


def test_publish_stage_dir_inside_the_published_folder_is_refused(gen, tmp_path):
    before = snapshot(gen)
    args = ["publish", "dataset", gen, "me/x", "--dry-run", "--license", "mit", "--stage-dir", gen / "stage"]
    result = invoke(*args)
    one_line_error(result, f"--stage-dir {gen / 'stage'} lies inside the input {gen}")
    assert snapshot(gen) == before


def test_report_never_writes_through_a_link_to_its_data(gen, tmp_path):
    filtered = tmp_path / "filtered"
    assert invoke("filter", gen, "--out", filtered, "--verifiers", "format", "-q").exit_code == 0
    data = sorted((filtered / "data").glob("*.parquet"))[0]
    before = snapshot(filtered)
    (filtered / "report.html").symlink_to(data)
    one_line_error(invoke("report", filtered), "the report", f"is the input {data}")
    (filtered / "report.html").unlink()
    assert snapshot(filtered) == before
    assert invoke("report", filtered).exit_code == 0 and (filtered / "report.html").is_file()


def test_run_refuses_a_recipe_whose_stage_writes_into_its_input(gen, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"out: {tmp_path / 'run'}\nfilter:\n  inputs: {gen}\n  out: {gen}\n")
    before = snapshot(gen)
    one_line_error(invoke("run", recipe), f"filter: out {gen} is the input {gen}")
    recipe.write_text(
        f"out: {tmp_path / 'run'}\nfilter:\n  inputs: {gen}\n"
        f"mix:\n  ratio: {{default: 1}}\n  out: {tmp_path / 'run' / 'filter'}\n"
    )
    one_line_error(invoke("run", recipe), "is the input")
    assert snapshot(gen) == before


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_an_input_file_linked_into_the_output_is_refused_and_kept(gen, tmp_path, flag):
    """The input folder is elsewhere, but its Parquet file is a link into --out: --overwrite deleted that file
    (the input's rows lost) when only the folder was resolved. Its files are resolved too."""
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    real = out / "data" / "train-00000.parquet"
    (gen / "data" / "train-00000.parquet").rename(real)
    (gen / "data" / "train-00000.parquet").symlink_to(real)
    (out / "stats.json").write_text("{}")
    before = snapshot(out)
    result = invoke("filter", gen, "--out", out, "--verifiers", "format", flag)
    one_line_error(result, str(out), "link")
    assert snapshot(out) == before and pq.read_table(gen / "data" / "train-00000.parquet").num_rows == 4
    # The output check itself resolves an input folder's files, for every stage (generate's --source, ...).
    with pytest.raises(DistillError, match="reads through its link .*never writes into its inputs"):
        check_output(out, inputs=[gen], overwrite=True)
    assert snapshot(out) == before


def test_a_data_file_linked_out_of_a_dataset_repo_is_not_read(gen, tmp_path):
    """A cloned dataset repo can hold a data file that is a link anywhere (a key, a token file): not read."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    secret = tmp_path / "home" / ".cache" / "token.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"problem": "MARKER", "completion": "x"}\n')
    (repo / "data" / "train.jsonl").symlink_to(secret)
    result = invoke("filter", repo, "--out", tmp_path / "out", "--verifiers", "format")
    one_line_error(result, "train.jsonl", "is a link to", "outside")
    assert not (tmp_path / "out").exists() or "MARKER" not in str(list((tmp_path / "out").rglob("*")))
