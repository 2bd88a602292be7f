"""Many GPUs: `distill train --accelerate-config zero3 ...` relaunches itself through `accelerate launch`.

The command is built here, without GPUs, so tests can check it exactly. Each launched process runs
`python -m distill train` with the original arguments minus the launcher's own, and sees LOCAL_RANK in its
environment, which is how it knows not to relaunch (a recipe YAML may name the accelerate config too).
"""

import os
from pathlib import Path

import yaml

from distill.config import TrainConfig
from distill.errors import DistillError

# The configs that ship with the project, as open-r1 ships them (recipes/accelerate_configs there). They live in
# the source checkout: recipes/ sits next to the package.
ACCELERATE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"
SHIPPED = ("zero2", "zero3", "fsdp", "ddp")

# Options that belong to the launcher: (distill flag, accelerate flag, TrainConfig field).
LAUNCHER_OPTIONS = [
    ("--accelerate-config", None, "accelerate_config"),
    ("--num-machines", "--num_machines", "num_machines"),
    ("--machine-rank", "--machine_rank", "machine_rank"),
    ("--main-process-ip", "--main_process_ip", "main_process_ip"),
    ("--main-process-port", "--main_process_port", "main_process_port"),
    ("--num-processes", "--num_processes", "num_processes"),
]


def inside_launch() -> bool:
    """True in a process that torchrun / accelerate launch started (they set LOCAL_RANK for every process)."""
    return "LOCAL_RANK" in os.environ


def accelerate_config_path(name: str) -> Path:
    """A shipped config's name (zero2, zero3, fsdp, ddp) or the path of an accelerate YAML."""
    if name in SHIPPED:
        path = ACCELERATE_DIR / f"{name}.yaml"
        if not path.is_file():
            raise DistillError(
                f"the shipped accelerate config {name} is missing ({path}): the configs live in recipes/accelerate "
                "of the source checkout; pass the path of an accelerate YAML instead"
            )
        return path
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    raise DistillError(
        f"unknown accelerate config `{name}`: use {', '.join(SHIPPED)} or the path of an accelerate YAML"
    )


def launch_command(config: TrainConfig, argv: list[str]) -> list[str]:
    """`accelerate launch --config_file ... [launcher options] -m distill train <argv minus launcher options>`."""
    if not config.accelerate_config:
        raise DistillError("no accelerate config: pass --accelerate-config zero3|zero2|fsdp|ddp|PATH")
    path = accelerate_config_path(config.accelerate_config)
    num_processes = config.num_processes
    if config.num_machines and config.num_machines > 1:
        if not config.main_process_ip:
            raise DistillError(
                f"--num-machines {config.num_machines} needs --main-process-ip (the address of machine 0)"
            )
        if config.machine_rank is None:
            raise DistillError(f"--num-machines {config.num_machines} needs --machine-rank (0 on the main machine)")
        if num_processes is None:
            # accelerate counts processes over all machines; the shipped configs describe one 8-GPU machine.
            num_processes = _processes_per_machine(path) * config.num_machines
    values = {
        "num_machines": config.num_machines,
        "machine_rank": config.machine_rank,
        "main_process_ip": config.main_process_ip,
        "main_process_port": config.main_process_port,
        "num_processes": num_processes,
    }
    command = ["accelerate", "launch", "--config_file", str(path)]
    for _, accelerate_flag, name in LAUNCHER_OPTIONS:
        if accelerate_flag and values[name] is not None:
            command += [accelerate_flag, str(values[name])]
    return command + ["-m", "distill", "train", *strip_launcher_options(argv)]


def strip_launcher_options(argv: list[str]) -> list[str]:
    """Drop `--accelerate-config X`, `--num-machines=2` and the like; keep everything else in order."""
    flags = {flag for flag, _, _ in LAUNCHER_OPTIONS}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg  # the value is the next argument
            continue
        kept.append(arg)
    return kept


def _processes_per_machine(path: Path) -> int:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DistillError(f"cannot read accelerate config {path}: {exc}") from None
    total, machines = data.get("num_processes"), data.get("num_machines") or 1
    if not total:
        raise DistillError(f"{path} does not say num_processes: pass --num-processes (the total over all machines)")
    return max(1, int(total) // int(machines))
