"""Engine overhead (issue 7 a, b, c): each distill engine against the bare loop it wraps, side by side.

    python -m benchmarks.engines [--quick] [--work DIR] [--only vllm,openai,transformers] [--json OUT.json]
        [--gpu-memory-utilization 0.15] [--prompts N --max-tokens M --rounds R]  (overrides, for a busy machine)

`run(quick, work)` returns one item per line of the table, each `{"name", "ours", "baseline", "unit", "ratio",
"target", "met"}` (ratio = ours / baseline; informational rows have target and met None).

**Ours** is `python -m distill generate --engine E --source prompts.jsonl --prompt-template "{problem}"
--temperature 0 --max-tokens M ...` as a user runs it (progress bar on, to a log file), and its figure is
`stats.json`'s `tokens_per_second`: completion tokens over the time from engine ready to the last row written
(engine load excluded; building requests, the engine's own bookkeeping, parsing traces and writing Parquet
included; so is a one-off ~0.3-0.8 s, pyarrow importing pandas at the first `Table.from_pylist`, which weighs
on short runs only). **Baseline** is the bare loop the engine wraps, in its own subprocess
(`python -m benchmarks.engines --baseline SPEC.json`), timed the same way: from model loaded to the last output
in hand.

- vllm: `vllm.LLM(...)` with the same arguments distill passes (dtype float32 on CPU, seed, max_model_len,
  gpu_memory_utilization) and one `llm.chat(conversations, SamplingParams(...))` call over all prompts.
- openai: a minimal aiohttp client (one session, `concurrency` workers, the same request body distill sends)
  against the same vLLM OpenAI server, started once and shared by both sides.
- transformers: `AutoModelForCausalLM.generate` over batches of `batch_size` prompts, left padding, greedy.

**Fairness.** Both sides get the same chat messages (no system prompt; the user turn is the problem, as
`--prompt-template "{problem}"` makes it), distill's default prefill (`sampling_params(GenerateConfig())`, empty
unless --prefill-think/--no-think), the same max_tokens and greedy decoding (temperature 0, top-p 0.95 sent as
distill sends it; greedy ignores it), so both write the same tokens: the token totals of the two sides are
reported as their own rows, and the number of identical outputs is logged. The transformers engine sorts
prompts by length before batching; the prompt file for that part is already in that order, so both sides form
the same batches (otherwise the batches, padding and hence the outputs differ for reasons that are not
overhead). Each side runs in its own subprocess, one after the other, never concurrently; the order alternates
from round to round (baseline first in round 1). Warm-up: the openai part sends every prompt once (8 tokens)
before measuring, which also fills vLLM's prefix cache equally for both clients; the transformers part runs a
tiny baseline first (page cache). The vllm part has no separate warm-up: an engine start costs ~1 min on CPU,
and the first call's lazy costs fall inside the timed window on both sides alike. Full mode repeats 3 rounds
and takes each side's median tokens/s; the throughput-against-concurrency rows are one round each (except the
headline concurrency, which is the overhead row's median).

While the machine is shared, vLLM runs with gpu_memory_utilization 0.15 (RAM on CPU); pass
`--gpu-memory-utilization` for a quiet or GPU machine. No server is left running, even on error or Ctrl-C.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.checks.faults import stop_server
from benchmarks.items import format_table
from benchmarks.items import item as make_item

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
TARGET = ">= 0.95"
SERVED_NAME = "smollm2-135m"  # the name the server serves the embedded model under (distill's label for it)
PARTS = ("vllm", "openai", "transformers")
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Subprocess limits: far above what any side needs, so only a hang trips them.
SIDE_TIMEOUT = 1800


@dataclass(slots=True)
class Sizes:
    prompts: int  # prompts per measured run (one sample each)
    max_tokens: int
    rounds: int
    batch_size: int  # transformers engine
    hf_prompts: int  # transformers is ~5x slower than vLLM on CPU: fewer prompts there
    concurrency: int  # the openai overhead row's concurrency
    sweep: tuple[int, ...]  # throughput against concurrency


QUICK = Sizes(prompts=32, max_tokens=128, rounds=1, batch_size=8, hf_prompts=16, concurrency=16, sweep=(4, 16))
FULL = Sizes(prompts=64, max_tokens=128, rounds=3, batch_size=8, hf_prompts=32, concurrency=16, sweep=(1, 4, 16, 64))


def log(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# table items
# --------------------------------------------------------------------------------------------------------------


def item(name: str, ours: float, baseline: float, unit: str, target: str | None = TARGET) -> dict:
    return make_item(name, ours, baseline, unit, target)


def median_rate(runs: list[dict]) -> float:
    return statistics.median(r["tokens_per_second"] for r in runs)


def compare_items(label: str, ours: list[dict], base: list[dict], target: str | None = TARGET) -> list[dict]:
    """The overhead row (median tokens/s of each side) and the output-token row of one comparison."""
    log(f"{label}: ours {describe(ours)}; baseline {describe(base)}; identical outputs {same_outputs(ours, base)}")
    tokens_ours = statistics.median(r["completion_tokens"] for r in ours)
    tokens_base = statistics.median(r["completion_tokens"] for r in base)
    return [
        item(label, median_rate(ours), median_rate(base), "tok/s", target),
        item(label.replace("engine overhead", "output tokens"), tokens_ours, tokens_base, "tokens", None),
    ]


def describe(runs: list[dict]) -> str:
    return ", ".join(f"{r['completion_tokens']} tok/{r['seconds']:.1f} s={r['tokens_per_second']:.1f}" for r in runs)


def same_outputs(ours: list[dict], base: list[dict]) -> str:
    """How many prompts got the same text from both sides (last run of each)."""
    a, b = ours[-1]["texts"], base[-1]["texts"]
    same = sum(1 for key, text in a.items() if b.get(key) == text)
    return f"{same}/{len(a)}"


# --------------------------------------------------------------------------------------------------------------
# prompts: what both sides send
# --------------------------------------------------------------------------------------------------------------


def make_prompts(count: int, seed: int = SEED) -> list[dict]:
    """Short math (reasoning-gym basic_arithmetic with R1's instruction) and general prompts, about 3:1, seeded.

    Each row is {"id", "problem"}; the problem is the whole user turn.
    """
    import reasoning_gym

    general_path = ROOT / "recipes" / "data" / "general_prompts.jsonl"
    general = [json.loads(line)["prompt"] for line in general_path.read_text(encoding="utf-8").splitlines() if line]
    n_general = min(len(general), count // 4)
    math = reasoning_gym.create_dataset("basic_arithmetic", size=max(count - n_general, 1), seed=seed)
    problems = [f"{entry['question']}\n{R1_INSTRUCTION}" for entry in math][: count - n_general]
    problems += general[:n_general]
    random.Random(seed).shuffle(problems)
    return [{"id": f"p{i:04d}", "problem": problem} for i, problem in enumerate(problems)]


def chat_messages(problem: str) -> list[dict]:
    """The messages distill sends for a problem with --prompt-template "{problem}" and no system prompt."""
    return [{"role": "user", "content": problem}]


def default_prefill() -> str:
    """distill generate's default start of the assistant turn (none, unless --prefill-think or --no-think)."""
    from distill.config import GenerateConfig
    from distill.generate.run import sampling_params

    return sampling_params(GenerateConfig())["prefill"]


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_prompts(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def render_prompt(tokenizer, problem: str, prefill: str) -> str:
    return tokenizer.apply_chat_template(chat_messages(problem), tokenize=False, add_generation_prompt=True) + prefill


def sort_by_prompt_length(rows: list[dict], model_path: str, prefill: str) -> list[dict]:
    """Rows in the order the transformers engine batches them: by rendered prompt length (a stable sort)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = [
        len(tokenizer(render_prompt(tokenizer, r["problem"], prefill), add_special_tokens=False).input_ids)
        for r in rows
    ]
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: lengths[i])]


# --------------------------------------------------------------------------------------------------------------
# subprocesses
# --------------------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    from distill.engines.vllm_engine import use_every_core

    use_every_core(env)  # the bare vLLM loop gets the cores our engine gives itself on a small machine
    return env


def run_process(command: list[str], log_path: Path, timeout: float = SIDE_TIMEOUT) -> None:
    """Run a command in its own process group (vLLM spawns engine-core children); kill the group on any exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout)
        finally:
            stop_server(process)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with {code} (log {log_path}):\n{tail}")


def ours_command(engine: str, prompts: Path, out: Path, max_tokens: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "distill", "generate", "--engine", engine,
        "--source", str(prompts), "--prompt-template", "{problem}",
        "--temperature", "0", "--max-tokens", str(max_tokens), "--seed", str(SEED),
        "--no-cache",  # every round generates: answers from the response cache would time nothing
        "--out", str(out), *extra,
    ]  # fmt: skip


def read_ours(out: Path) -> dict:
    """stats.json's rate and time, and every row's text, from a distill generate output folder."""
    import pyarrow.parquet as pq

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    if stats.get("errors"):
        raise RuntimeError(f"{out}: {stats['errors']} error rows ({stats.get('errors_by_kind')})")
    texts, tokens = {}, {}
    for path in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(path, columns=["prompt_id", "completion", "completion_tokens"]).to_pylist()
        for row in table:
            texts[row["prompt_id"]] = row["completion"]
            tokens[row["prompt_id"]] = row["completion_tokens"]
    return {
        "seconds": stats["seconds_this_run"],
        "completion_tokens": sum(tokens.values()),
        "tokens_per_second": stats["tokens_per_second"],
        "texts": texts,
        "tokens": tokens,
    }


def run_ours(engine: str, prompts: Path, out: Path, max_tokens: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a rerun in the same --work starts afresh (no resume)
    run_process(ours_command(engine, prompts, out, max_tokens, extra), out.with_suffix(".log"))
    return read_ours(out)


def run_baseline(spec: dict, folder: Path) -> dict:
    """Run one bare loop (`spec["kind"]`) in its own process; returns what it measured."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    result_path = folder / "result.json"
    spec_path.write_text(json.dumps({**spec, "result": str(result_path)}), encoding="utf-8")
    run_process([sys.executable, "-m", "benchmarks.engines", "--baseline", str(spec_path)], folder / "run.log")
    return json.loads(result_path.read_text(encoding="utf-8"))


def alternate(rounds: int, ours, baseline) -> tuple[list[dict], list[dict]]:
    """Run both sides `rounds` times, baseline first in odd rounds, ours first in even ones."""
    ours_runs, base_runs = [], []
    for k in range(rounds):
        order = [(baseline, base_runs), (ours, ours_runs)]
        for side, runs in order if k % 2 == 0 else order[::-1]:
            runs.append(side(k))
    return ours_runs, base_runs


def measured(seconds: float, tokens: dict[str, int], texts: dict[str, str]) -> dict:
    total = sum(tokens.values())
    return {
        "seconds": seconds,
        "completion_tokens": total,
        "tokens_per_second": total / seconds if seconds else 0.0,
        "texts": texts,
        "tokens": tokens,
    }


# --------------------------------------------------------------------------------------------------------------
# the bare loops (each runs in its own subprocess through `--baseline SPEC`, or in-process in tests)
# --------------------------------------------------------------------------------------------------------------


def bare_vllm(spec: dict) -> dict:
    """One `llm.chat` call over all prompts, with the engine arguments distill's vllm engine passes."""
    import vllm

    llm = vllm.LLM(model=spec["model"], **spec["engine_kwargs"])
    rows, prefill = read_prompts(spec["prompts"]), spec["prefill"]
    start = time.monotonic()
    conversations = [
        chat_messages(r["problem"]) + ([{"role": "assistant", "content": prefill}] if prefill else []) for r in rows
    ]
    params = vllm.SamplingParams(temperature=spec["temperature"], top_p=spec["top_p"], max_tokens=spec["max_tokens"])
    outputs = llm.chat(
        conversations,
        params,
        use_tqdm=False,
        add_generation_prompt=not prefill,
        continue_final_message=bool(prefill),
    )
    texts = {r["id"]: prefill + o.outputs[0].text for r, o in zip(rows, outputs, strict=True)}
    tokens = {r["id"]: len(o.outputs[0].token_ids) for r, o in zip(rows, outputs, strict=True)}
    seconds = time.monotonic() - start
    return measured(seconds, tokens, texts)


def bare_transformers(spec: dict) -> dict:
    """`model.generate` over batches of `batch_size` prompts in file order, left padding, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype).to(device).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | {tokenizer.eos_token_id}
    rows, prefill, batch_size = read_prompts(spec["prompts"]), spec["prefill"], spec["batch_size"]
    texts, tokens = {}, {}
    start = time.monotonic()
    for at in range(0, len(rows), batch_size):
        batch = rows[at : at + batch_size]
        prompts = [render_prompt(tokenizer, r["problem"], prefill) for r in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=spec["max_tokens"], do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        for r, row in zip(batch, out[:, enc.input_ids.shape[1] :].tolist(), strict=True):
            ids = []
            for tok in row:
                if tok in eos:
                    break
                ids.append(tok)
            texts[r["id"]] = prefill + tokenizer.decode(ids, skip_special_tokens=True)
            tokens[r["id"]] = len(ids)
    return measured(time.monotonic() - start, tokens, texts)


def openai_body(model: str, problem: str, spec: dict) -> dict:
    """A chat completion request as a minimal client writes it (prefill as vLLM's continue_final_message)."""
    body = {
        "model": model,
        "messages": chat_messages(problem),
        "temperature": spec["temperature"],
        "top_p": spec["top_p"],
        "max_tokens": spec["max_tokens"],
        "n": 1,
    }
    if spec["prefill"]:
        body["messages"].append({"role": "assistant", "content": spec["prefill"]})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body


async def openai_client(spec: dict) -> dict:
    """`concurrency` workers over one aiohttp session, each posting the next prompt; no retries, no parsing beyond
    the text and the usage."""
    import aiohttp

    rows = read_prompts(spec["prompts"])
    url = spec["base_url"].rstrip("/") + "/chat/completions"
    texts, tokens = {}, {}
    start = time.monotonic()
    pending = iter(rows)

    async def worker(session) -> None:
        for row in pending:
            async with session.post(url, json=openai_body(spec["model"], row["problem"], spec)) as response:
                response.raise_for_status()
                data = await response.json()
            texts[row["id"]] = spec["prefill"] + (data["choices"][0]["message"].get("content") or "")
            tokens[row["id"]] = data["usage"]["completion_tokens"]

    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(spec["concurrency"], len(rows)))))
    return measured(time.monotonic() - start, tokens, texts)


def bare_openai(spec: dict) -> dict:
    return asyncio.run(openai_client(spec))


BARE = {"vllm": bare_vllm, "transformers": bare_transformers, "openai": bare_openai}


def baseline_main(spec_path: Path) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = BARE[spec["kind"]](spec)
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------------------------
# the three parts
# --------------------------------------------------------------------------------------------------------------


def _spec(kind: str, prompts: Path, max_tokens: int, **more) -> dict:
    return {
        "kind": kind,
        "prompts": str(prompts),
        "prefill": default_prefill(),
        "temperature": 0.0,
        "top_p": 0.95,  # distill sends its default top-p alongside temperature 0; greedy ignores it
        "max_tokens": max_tokens,
        **more,
    }


def bench_vllm(sizes: Sizes, work: Path, gpu_memory_utilization: float) -> list[dict]:
    from distill.config import GenerateConfig
    from distill.engines.vllm_engine import engine_kwargs
    from distill.models import embedded_model_dir

    prompts = write_prompts(work / "prompts.jsonl", make_prompts(sizes.prompts))
    max_model_len = 2048
    flags = ["--gpu-memory-utilization", str(gpu_memory_utilization), "--max-model-len", str(max_model_len)]
    # The bare LLM gets exactly the arguments distill's vllm engine makes of these flags.
    config = GenerateConfig(gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=SEED)
    kwargs = engine_kwargs(config, on_cpu=not _has_cuda())
    spec = _spec("vllm", prompts, sizes.max_tokens, model=str(embedded_model_dir()), engine_kwargs=kwargs)
    ours, base = alternate(
        sizes.rounds,
        lambda k: run_ours("vllm", prompts, work / f"ours-{k}", sizes.max_tokens, flags),
        lambda k: run_baseline(spec, work / f"baseline-{k}"),
    )
    return compare_items("vllm engine overhead", ours, base)


def bench_openai(sizes: Sizes, work: Path, gpu_memory_utilization: float) -> list[dict]:
    from benchmarks.checks.faults import free_port, start_vllm_server

    sweep_prompts = {c: max(8, 2 * c) for c in sizes.sweep if c != sizes.concurrency}
    biggest = max([sizes.prompts, *sweep_prompts.values()])
    rows = make_prompts(biggest)
    main_prompts = write_prompts(work / "prompts.jsonl", rows[: sizes.prompts])
    process = None
    try:
        log("starting the vLLM OpenAI server")
        process, base_url = start_vllm_server(
            free_port(), work / "server.log", gpu_memory_utilization=gpu_memory_utilization
        )
        model = SERVED_NAME

        def compare(c: int, prompts: Path, rounds: int, tag: str) -> tuple[list[dict], list[dict]]:
            flags = ["--base-url", base_url, "--model", model, "--max-concurrency", str(c)]
            spec = _spec("openai", prompts, sizes.max_tokens, base_url=base_url, model=model, concurrency=c)
            return alternate(
                rounds,
                lambda k: run_ours("openai", prompts, work / f"ours-{tag}-{k}", sizes.max_tokens, flags),
                lambda k: run_baseline(spec, work / f"baseline-{tag}-{k}"),
            )

        # Warm-up: every prompt once, 8 tokens each, so both clients meet a warm server and the same prefix cache.
        every = write_prompts(work / "prompts-all.jsonl", rows)
        run_baseline(_spec("openai", every, 8, base_url=base_url, model=model, concurrency=16), work / "warmup")

        ours, base = compare(sizes.concurrency, main_prompts, sizes.rounds, f"c{sizes.concurrency}")
        items = compare_items(f"openai engine overhead (concurrency {sizes.concurrency})", ours, base)
        rates = {sizes.concurrency: (median_rate(ours), median_rate(base))}
        for c, count in sweep_prompts.items():
            prompts = write_prompts(work / f"prompts-c{c}.jsonl", rows[:count])
            ours, base = compare(c, prompts, 1, f"c{c}")
            log(f"openai concurrency {c}: ours {describe(ours)}; baseline {describe(base)}")
            rates[c] = (median_rate(ours), median_rate(base))
        for c in sorted(rates):
            items.append(item(f"openai throughput (concurrency {c})", *rates[c], "tok/s", None))
        return items
    finally:
        stop_server(process)


def bench_transformers(sizes: Sizes, work: Path) -> list[dict]:
    from distill.models import embedded_model_dir

    model = str(embedded_model_dir())
    prefill = default_prefill()
    # In the engine's own batching order, so both sides form the same batches (see the module docstring).
    rows = sort_by_prompt_length(make_prompts(sizes.hf_prompts), model, prefill)
    prompts = write_prompts(work / "prompts.jsonl", rows)
    spec = _spec("transformers", prompts, sizes.max_tokens, model=model, batch_size=sizes.batch_size)
    warm = write_prompts(work / "prompts-warmup.jsonl", rows[:2])
    run_baseline({**spec, "prompts": str(warm), "max_tokens": 4}, work / "warmup")
    flags = ["--batch-size", str(sizes.batch_size)]
    ours, base = alternate(
        sizes.rounds,
        lambda k: run_ours("transformers", prompts, work / f"ours-{k}", sizes.max_tokens, flags),
        lambda k: run_baseline(spec, work / f"baseline-{k}"),
    )
    return compare_items("transformers engine overhead", ours, base)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run(
    quick: bool,
    work: Path,
    only: list[str] | None = None,
    gpu_memory_utilization: float = 0.15,
    sizes: Sizes | None = None,
) -> list[dict]:
    """The table's items; `sizes` overrides the quick or full sizes (for a try on a busy machine)."""
    sizes = sizes or (QUICK if quick else FULL)
    items = []
    for name in PARTS:
        if only and name not in only:
            continue
        started = time.perf_counter()
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "vllm":
            items.extend(bench_vllm(sizes, folder, gpu_memory_utilization))
        elif name == "openai":
            items.extend(bench_openai(sizes, folder, gpu_memory_utilization))
        else:
            items.extend(bench_transformers(sizes, folder))
        log(f"{name}: {time.perf_counter() - started:.0f} s")
    return items


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: about 5 minutes on a quiet 2-core machine")
    parser.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    parser.add_argument("--only", help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write the items to this file")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.15, help="vLLM's memory fraction (RAM on CPU); 0.15"
    )
    parser.add_argument("--prompts", type=int, help="override the number of prompts (transformers: half of it)")
    parser.add_argument("--max-tokens", type=int, help="override max_tokens")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)  # internal: run one bare loop
    args = parser.parse_args(argv)
    if args.baseline:
        return baseline_main(args.baseline)
    sizes = QUICK if args.quick else FULL
    if args.prompts:
        sizes = dataclasses.replace(sizes, prompts=args.prompts, hf_prompts=max(1, args.prompts // 2))
    if args.max_tokens:
        sizes = dataclasses.replace(sizes, max_tokens=args.max_tokens)
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the server and the sides' process groups.
    signal.signal(signal.SIGTERM, _interrupt)
    only = args.only.split(",") if args.only else None
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        items = run(args.quick, args.work, only, args.gpu_memory_utilization, sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="distill-engines-") as tmp:
            items = run(args.quick, Path(tmp), only, args.gpu_memory_utilization, sizes)
    print(format_table(items))
    if args.json:
        args.json.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return 0 if all(i["met"] is not False for i in items) else 1


if __name__ == "__main__":
    sys.exit(main())
