"""`distill train --accelerate-config ...`: the exact `accelerate launch` command, built without GPUs; recipes."""

import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from distill.config import TrainConfig
from distill.errors import DistillError
from distill.recipe import load_yaml
from distill.settings import build_config
from distill.train.cli import train_command
from distill.train.launch import ACCELERATE_DIR, SHIPPED, accelerate_config_path, launch_command

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STUDENTS = sorted((RECIPES / "students").glob("*.yaml"))
TAIL = ["filtered", "--student", "qwen2.5-math-7b", "--out", "ckpt", "--packing"]


def cfg(**changes) -> TrainConfig:
    return TrainConfig(data=["filtered"], student="qwen2.5-math-7b", out="ckpt", packing=True, **changes)


def test_zero3_single_node():
    argv = ["filtered", "--student", "qwen2.5-math-7b", "--accelerate-config", "zero3", "--out", "ckpt", "--packing"]
    assert launch_command(cfg(accelerate_config="zero3"), argv) == [
        "accelerate", "launch", "--config_file", str(ACCELERATE_DIR / "zero3.yaml"),
        "-m", "distill", "train", *TAIL,
    ]  # fmt: skip


def test_fsdp_with_processes_and_equals_form():
    argv = [*TAIL, "--accelerate-config=fsdp", "--num-processes", "4"]
    assert launch_command(cfg(accelerate_config="fsdp", num_processes=4), argv) == [
        "accelerate", "launch", "--config_file", str(ACCELERATE_DIR / "fsdp.yaml"), "--num_processes", "4",
        "-m", "distill", "train", *TAIL,
    ]  # fmt: skip


def test_ddp():
    assert launch_command(cfg(accelerate_config="ddp"), [*TAIL, "--accelerate-config", "ddp"]) == [
        "accelerate", "launch", "--config_file", str(ACCELERATE_DIR / "ddp.yaml"), "-m", "distill", "train", *TAIL,
    ]  # fmt: skip


def test_multi_node():
    argv = [
        *TAIL, "--accelerate-config", "zero3", "--num-machines", "2", "--machine-rank", "1",
        "--main-process-ip", "10.0.0.1", "--main-process-port=29500", "--trl", "save_steps=100",
    ]  # fmt: skip
    config = cfg(
        accelerate_config="zero3", num_machines=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29500
    )
    command = launch_command(config, argv)
    assert command == [
        "accelerate", "launch", "--config_file", str(ACCELERATE_DIR / "zero3.yaml"),
        "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1", "--main_process_port", "29500",
        "--num_processes", "16",  # accelerate counts all machines: 8 GPUs each in the shipped configs
        "-m", "distill", "train", *TAIL, "--trl", "save_steps=100",
    ]  # fmt: skip
    # and accelerate's own parser reads it as meant: `python -m distill train ...` in every process
    from accelerate.commands.launch import launch_command_parser

    parsed = launch_command_parser().parse_args(command[2:])
    assert (parsed.module, parsed.training_script, parsed.num_processes, parsed.machine_rank) == (
        True,
        "distill",
        16,
        1,
    )
    assert parsed.training_script_args == ["train", *TAIL, "--trl", "save_steps=100"]


def test_multi_node_needs_the_main_address():
    with pytest.raises(DistillError, match="needs --main-process-ip"):
        launch_command(cfg(accelerate_config="zero3", num_machines=2, machine_rank=0), [])
    with pytest.raises(DistillError, match="needs --machine-rank"):
        launch_command(cfg(accelerate_config="zero3", num_machines=2, main_process_ip="10.0.0.1"), [])


def test_config_by_path_and_unknown_name(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    assert launch_command(cfg(accelerate_config=str(own)), ["--accelerate-config", str(own)])[:4] == [
        "accelerate", "launch", "--config_file", str(own),
    ]  # fmt: skip
    with pytest.raises(DistillError, match="unknown accelerate config `zero9`: use zero2, zero3, fsdp, ddp"):
        accelerate_config_path("zero9")
    with pytest.raises(DistillError, match="unknown accelerate config"):
        accelerate_config_path(str(tmp_path / "missing.yaml"))


def test_shipped_configs_load_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP", "ddp": "MULTI_GPU"}
    for name in SHIPPED:
        loaded = load_config_from_file(str(accelerate_config_path(name)))
        assert loaded.distributed_type.value == expected[name] and loaded.num_processes == 8
    assert yaml.safe_load((ACCELERATE_DIR / "zero3.yaml").read_text())["deepspeed_config"]["zero_stage"] == 3


def test_command_line_relaunches_and_propagates_the_exit_code(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    calls = []

    def fake_run(command, *args, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    argv = [*TAIL, "--accelerate-config", "zero3", "--num-machines", "2", "--machine-rank", "0"]
    result = CliRunner().invoke(train_command, [*argv, "--main-process-ip", "10.0.0.1"])
    assert result.exit_code == 3, result.output
    assert calls == [
        [
            "accelerate", "launch", "--config_file", str(ACCELERATE_DIR / "zero3.yaml"),
            "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "10.0.0.1", "--num_processes", "16",
            "-m", "distill", "train", *TAIL,
        ]
    ]  # fmt: skip
    assert "launching: accelerate launch" in result.output


def test_launched_processes_do_not_relaunch(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_RANK", "0")  # what torchrun / accelerate launch set in every process
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("relaunched inside a launched process"))
    result = CliRunner().invoke(
        train_command, [str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--accelerate-config", "zero3"]
    )
    assert result.exit_code == 1 and "does not exist" in result.output  # it went on to train (and found no data)


def test_unknown_accelerate_config_is_one_line(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    result = CliRunner().invoke(train_command, [*TAIL, "--accelerate-config", "zero9"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: unknown accelerate config `zero9`: use zero2, zero3, fsdp, ddp or the path of an accelerate YAML"
    ]


@pytest.mark.parametrize("path", STUDENTS, ids=[p.stem for p in STUDENTS])
def test_student_recipes(path):
    recipe = load_yaml(path)["train"]
    config = build_config(TrainConfig, recipe, {"data": ["filtered"], "out": "ckpt"}, where=str(path))
    config.validate()
    assert config.epochs == 2 and config.chat_template == "think-preserving"
    comments = path.read_text()
    assert "Hardware:" in comments  # each recipe says what it assumes
    if path.stem == "smollm2-135m":
        assert config.lora and config.accelerate_config is None
        return
    assert config.max_length == 32768 and config.packing and 1e-5 <= config.learning_rate <= 1e-4
    accelerate_config_path(config.accelerate_config)  # a shipped config
    assert config.lora == (path.stem == "llama-3.3-70b-instruct")


def test_the_six_r1_students_have_recipes():
    names = {p.stem for p in STUDENTS}
    assert {
        "qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama-3.1-8b", "qwen2.5-14b", "qwen2.5-32b", "llama-3.3-70b-instruct",
    } <= names  # fmt: skip
