"""Issue 26's classes outside the sandbox, tried as a user or an attacker would (the sandbox's are attack rows in
attacks.py: THP + vmsplice, tmpfs inodes, socket families, memory across a process tree, loop asserts, colliding
hashes). One Outcome per case, check "round3", case named after the issue's point:

  6   a hard link out of a model folder (publish); a data file linked out of a dataset folder (filter)
  7   an input folder whose Parquet file is a link into --out, with --overwrite: the input's rows must survive
  9   an OpenR1 record of many generations of a large problem (peak memory of the whole filter run); a recipe whose
      aliases repeat a large string (bytes after expansion)
  10  rows that cannot be read (bad JSON, a null id): rejected as malformed_row on both backends, and a run killed
      after a commit resumes past them; ShareGPT turns that are numbers: one line naming the row and the column
  11  a converted model folder with its marker over truncated weights: repaired by converting again
  12  `distill filter --backend ray --verifiers code,math` on this machine's CPUs: it finishes
  13  in-process vLLM: rows reach disk as they finish (a stand-in engine in --quick, SmolLM2 on vLLM in full)

Commands run through the CLI or public functions in child processes with a time-out (a stall is a failed row).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.checks import Outcome
from benchmarks.checks.hardening import TRACEBACK, _env, _last_line, _snapshot, _tiny_model

CHECK = "round3"


def _run(argv: list[str], cwd: Path, timeout: float, memory_mb: int = 8192) -> tuple[int | None, str, float, int]:
    """A child under an address-space limit: (exit status or None on time-out, output, seconds, peak RSS in MB)."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "argv = json.loads(sys.argv[1])\n"
        "done = subprocess.run(argv, capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10\n"
        "print(json.dumps([done.returncode, done.stdout + done.stderr, peak]))\n"
    )

    def limit():  # not for Ray, whose object store maps more address space than it uses
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", wrapper, json.dumps(argv)], cwd=cwd, env=_env(),
                              capture_output=True, text=True, timeout=timeout, preexec_fn=limit)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", time.monotonic() - started, 0
    try:
        code, output, peak = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return done.returncode, done.stdout + done.stderr, time.monotonic() - started, 0
    return code, output, time.monotonic() - started, peak


def _distill(args: list, cwd: Path, timeout: float = 300, memory_mb: int = 8192):
    return _run([sys.executable, "-m", "distill", *map(str, args)], cwd, timeout, memory_mb)


def _said(output: str) -> str:
    """The end of the last line a command printed (an error names its fix last)."""
    line = _last_line(output)
    return line if len(line) <= 90 else "..." + line[-87:]


def _outcome(case: str, problems: list[str], how: str, rows_lost: int = 0) -> Outcome:
    note = how if not problems else f"{how}; NOT CONTAINED: " + "; ".join(problems)
    return Outcome(CHECK, case, tried=1, survived=0 if problems else 1, rows_lost=rows_lost, note=note[:400])


def _one_line_refusal(code, output: str, *fragments: str) -> list[str]:
    problems = []
    if code != 1:
        problems.append(f"exit {code}")
    if TRACEBACK in output:
        problems.append("a traceback")
    last = _last_line(output)
    for fragment in fragments:
        if fragment not in output:
            problems.append(f"no `{fragment}` in: {last}")
    return problems


def _generate_rows(n: int, bad: tuple = ()) -> list[dict]:
    from distill.testing import example_row

    rows = []
    for i in range(n):
        row = example_row(id=f"id{i}", prompt_id=f"p{i}", problem=f"What is {i} + {i}?", gold=str(2 * i),
                          completion=f"<think>\nadd\n</think>\n\n\\boxed{{{2 * i}}}", teacher="t")  # fmt: skip
        if i in bad[:1]:
            row["prompt_messages"] = "not JSON {"
        elif i in bad[1:2]:
            row["prompt_messages"] = json.dumps({"role": "user"})
        elif i in bad[2:3]:
            row["id"] = None
        rows.append(row)
    return rows


def _write_generate(folder: Path, rows: list[dict], loose: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.schema import GENERATE_SCHEMA

    schema = pa.schema([f.with_nullable(True) for f in GENERATE_SCHEMA]) if loose else GENERATE_SCHEMA
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / "train-00000.parquet")
    return folder


# -- 6: links -----------------------------------------------------------------------------------------------------


def _links(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    case = work / "6-hard-link"
    shutil.rmtree(case, ignore_errors=True)
    model = case / "model"
    shutil.copytree(_tiny_model(work), model)
    key = case / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nMARKER-KEY\n-----END OPENSSH PRIVATE KEY-----\n")
    (model / "tokenizer.json").unlink()
    os.link(key, model / "tokenizer.json")
    stage = case / "stage"
    code, output, seconds, _ = _distill(["publish", "model", model, "me/student", "--dry-run", "--stage-dir", stage],
                                        case, timeout=120)  # fmt: skip
    problems = _one_line_refusal(code, output, "hard links outside it")
    if stage.exists() and any("MARKER-KEY" in p.read_text(errors="replace") for p in stage.rglob("*") if p.is_file()):
        problems.append("the key was staged for upload")
    outcomes.append(_outcome("6 publish: a hard link out of the model", problems, f"{_said(output)}"))

    case = work / "6-dataset-link"
    shutil.rmtree(case, ignore_errors=True)
    repo = case / "repo"
    (repo / "data").mkdir(parents=True)
    secret = case / "home" / ".cache" / "credentials.jsonl"
    secret.parent.mkdir(parents=True)
    turns = [{"role": "user", "content": "MARKER-SECRET"}, {"role": "assistant", "content": "\\boxed{1}"}]
    secret.write_text(json.dumps({"messages": turns}) + "\n")
    (repo / "data" / "train.jsonl").symlink_to(secret)
    out = case / "out"
    code, output, seconds, _ = _distill(["filter", repo, "--out", out, "--verifiers", "format", "-q"], case)
    problems = _one_line_refusal(code, output, "is a link to")
    if out.exists() and any("MARKER-SECRET" in str(p.read_bytes()) for p in out.rglob("*") if p.is_file()):
        problems.append("the linked file's contents reached the output")
    outcomes.append(_outcome("6 filter: a data file linked out of its folder", problems, _said(output)))
    return outcomes


# -- 7: an input file linked into the output ----------------------------------------------------------------------


def _input_file_links(work: Path, quick: bool) -> list[Outcome]:
    import pyarrow.parquet as pq

    case = work / "7-input-link"
    shutil.rmtree(case, ignore_errors=True)
    out = case / "out"
    (out / "data").mkdir(parents=True)
    real = out / "data" / "train-00000.parquet"
    gen = _write_generate(case / "gen", _generate_rows(5))
    (gen / "data" / "train-00000.parquet").rename(real)
    (gen / "data" / "train-00000.parquet").symlink_to(real)
    (out / "stats.json").write_text("{}")
    before = _snapshot(out)
    code, output, seconds, _ = _distill(["filter", gen, "--out", out, "--verifiers", "format", "--overwrite", "-q"],
                                        case)  # fmt: skip
    problems = _one_line_refusal(code, output, "link")
    kept = pq.read_table(real).num_rows if real.exists() else 0
    if _snapshot(out) != before:
        problems.append("the output folder (holding the input's file) changed")
    note = f"{_said(output)}; input rows left {kept} of 5"
    return [_outcome("7 --overwrite, input file linked into --out", problems, note, rows_lost=5 - kept)]


# -- 9: amplification ---------------------------------------------------------------------------------------------


def _amplification(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    case = work / "9-openr1"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    problem_kb, generations = (100, 4000) if quick else (200, 12_000)
    record = {"problem": "x" * (problem_kb * 1000), "generations": ["<think>a</think>\\boxed{1}"] * generations,
              "answer": "1"}  # fmt: skip
    source = case / "openr1.jsonl"
    source.write_text(json.dumps(record) + "\n")
    limit_mb = 1500
    code, output, seconds, peak = _distill(
        ["filter", source, "--out", case / "out", "--input-format", "openr1", "--verifiers", "format", "-q"],
        case, timeout=900, memory_mb=16384,
    )  # fmt: skip
    problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
    if code == 0:
        stats = json.loads((case / "out" / "stats.json").read_text())
        if stats["total"] != generations:
            problems.append(f"{stats['total']} rows of {generations}")
    if peak > limit_mb:
        problems.append(f"peak {peak} MB > {limit_mb} MB")
    how = f"{source.stat().st_size >> 10} KB file, {generations:,} generations of {problem_kb} KB: peak {peak} MB"
    outcomes.append(_outcome(f"9 OpenR1: {generations:,} generations", problems, f"{how}, {seconds:.0f} s"))

    case = work / "9-recipe"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    recipe = case / "bomb.yaml"
    recipe.write_text(
        "generate:\n  out: gen\n  source: reasoning-gym:basic_arithmetic\n  num_prompts: 1\n  max_tokens: 8\n"
        f"  system_prompt: &big {'y' * 100_000}\n"
        f"  stop: [{', '.join(['*big'] * 1000)}]\n"
    )
    code, output, seconds, peak = _distill(["run", recipe], case, timeout=120, memory_mb=4096)
    problems = _one_line_refusal(code, output, "through its aliases")
    if seconds > 30:
        problems.append(f"took {seconds:.0f} s")
    note = f"{recipe.stat().st_size >> 10} KB recipe: {_said(output)}, peak {peak} MB, {seconds:.1f} s"
    outcomes.append(_outcome("9 recipe: aliases of a 100 KB string", problems, note))
    return outcomes


# -- 10: rows that cannot be read ---------------------------------------------------------------------------------

KILLED_AFTER_COMMIT = """
import os, sys
from click.testing import CliRunner
from distill.cli import main
from distill.filter import run as filter_run
saved = filter_run._save_progress
def dying(out, progress):
    saved(out, progress)
    if progress["rows_done"] >= 64:
        os._exit(9)  # as SIGKILL: nothing after it runs
filter_run._save_progress = dying
CliRunner().invoke(main, sys.argv[1:], catch_exceptions=False)
"""


def _bad_rows(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    case = work / "10-malformed"
    shutil.rmtree(case, ignore_errors=True)
    total, bad = 140, (5, 130, 131)
    gen = _write_generate(case / "gen", _generate_rows(total, bad), loose=True)
    base = ["filter", gen, "--verifiers", "format", "-q"]
    for name, extra in (("local", []), ("ray", ["--backend", "ray"])):
        out = case / name
        code, output, seconds, _ = _distill([*base, "--out", out, *extra], case, timeout=900, memory_mb=0)
        outcomes.append(_check_malformed(f"10 malformed rows, {name} backend", code, output, out, total, seconds))
    out = case / "resumed"
    argv = [*base, "--out", out, "--rows-per-file", "32", "--batch-size", "32"]
    first, _, _, _ = _run([sys.executable, "-c", KILLED_AFTER_COMMIT, *map(str, argv)], case, timeout=300)
    code, output, seconds, _ = _distill([*argv, "--resume"], case, timeout=300)
    row = _check_malformed("10 malformed rows, killed then --resume", code, output, out, total, seconds)
    row.note = f"first run exit {first}; " + row.note
    outcomes.append(row)

    source = case / "sharegpt.jsonl"
    source.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}) + "\n"
                      + json.dumps({"conversations": [42, "answer"]}) + "\n")  # fmt: skip
    code, output, seconds, _ = _distill(["filter", source, "--out", case / "sg", "--verifiers", "format"], case)
    problems = _one_line_refusal(code, output, f"{source}:1", "`conversations`")
    outcomes.append(_outcome("10 ShareGPT turns that are numbers", problems, _said(output)))
    return outcomes


def _check_malformed(case: str, code, output: str, out: Path, total: int, seconds: float) -> Outcome:
    import pyarrow.parquet as pq

    problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
    written = 0
    for folder in ("data", "rejected"):
        for path in sorted((out / folder).glob("*.parquet")):
            written += pq.ParquetFile(path).metadata.num_rows
    malformed = None
    if (out / "stats.json").exists():
        malformed = json.loads((out / "stats.json").read_text()).get("dropped_malformed_row")
        if malformed != 3:
            problems.append(f"dropped_malformed_row {malformed}, expected 3")
    note = f"{written} of {total} rows written, malformed_row {malformed}, {seconds:.0f} s"
    return _outcome(case, problems, note, rows_lost=total - written)


# -- 11: a torn model cache ---------------------------------------------------------------------------------------

TORN_CHILD = """
import sys
from distill import models
from transformers import AutoConfig
target = models.embedded_model_dir()
print("damage after", models.damage(target), AutoConfig.from_pretrained(str(target)).model_type)
"""


def _torn_cache(work: Path, quick: bool) -> list[Outcome]:
    case = work / "11-torn"
    shutil.rmtree(case, ignore_errors=True)
    target = case / "cache" / "models" / "SmolLM2-135M-Instruct"
    shared = Path.home() / ".cache" / "distill" / "models" / "SmolLM2-135M-Instruct"
    env = {**_env(), "DISTILL_CACHE": str(case / "cache")}
    if shared.is_dir():  # a converted folder to tear, without converting it first
        shutil.copytree(shared, target)
    else:
        subprocess.run([sys.executable, "-c", TORN_CHILD], env=env, capture_output=True, timeout=900)
    weights = target / "model.safetensors"
    with open(weights, "r+b") as fh:  # the marker stays; the weights end half-way, as after a power cut
        fh.truncate(weights.stat().st_size // 2)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", TORN_CHILD], env=env, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = None, "timed out"
    problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
    if "damage after None" not in output:
        problems.append("the folder was not repaired")
    if TRACEBACK in output:
        problems.append("a traceback")
    note = "reported and converted again" if "is damaged" in output else _said(output)
    return [_outcome("11 marker over truncated weights", problems, f"{note}, {time.monotonic() - started:.0f} s")]


# -- 12: Ray on this machine --------------------------------------------------------------------------------------


def _ray_fits(work: Path, quick: bool) -> list[Outcome]:
    from distill.testing import example_row

    case = work / "12-ray"
    shutil.rmtree(case, ignore_errors=True)
    rows = _generate_rows(6)
    tests = json.dumps({"asserts": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"})
    for i, body in enumerate(["return a + b", "return a - b"]):
        completion = f"<think>\nsum\n</think>\n\n```python\ndef add(a, b):\n    {body}\n```"
        rows.append(example_row(id=f"c{i}", prompt_id=f"c{i}", domain="code", problem="Add two numbers.",
                                completion=completion, tests=tests, teacher="t"))  # fmt: skip
    gen = _write_generate(case / "gen", rows)
    out = case / "out"
    timeout = 300 if quick else 900
    code, output, seconds, _ = _distill(["filter", gen, "--out", out, "--backend", "ray", "--verifiers", "code,math",
                                         "-q"], case, timeout=timeout, memory_mb=0)  # fmt: skip
    problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
    if code == 0:
        stats = json.loads((out / "stats.json").read_text())
        if (stats["total"], stats["kept"]) != (8, 7):
            problems.append(f"kept {stats['kept']} of {stats['total']}, expected 7 of 8")
    cpus = len(os.sched_getaffinity(0))
    return [_outcome("12 ray code,math on this machine", problems, f"{cpus} CPUs, finished in {seconds:.0f} s")]


# -- 13: in-process vLLM rows reach disk as they finish ------------------------------------------------------------

STREAM_CHILD = """
import json, sys, threading, time
from pathlib import Path
from types import SimpleNamespace
from distill.config import GenerateConfig
from distill.engines import vllm_engine
from distill.generate.run import run_generate

N, PER = int(sys.argv[2]), float(sys.argv[3])  # requests, seconds each (one finishes per step)

class StandIn:
    # vLLM 0.32's API, one request finishing per step: enqueue_chat + llm_engine.step, and chat (all at its end).
    def __init__(self):
        self.queue, self.counter = [], 0
        self.llm_engine = SimpleNamespace(step=self.step, has_unfinished_requests=lambda: bool(self.queue),
                                          abort_request=lambda ids: None)
    def enqueue_chat(self, conversations, params, **kw):
        ids = []
        for c in conversations:
            self.counter += 1
            self.queue.append(str(self.counter))
            ids.append(f"{self.counter}-abcdef12")
        return ids
    def step(self):
        time.sleep(PER)
        rid = self.queue.pop(0)
        out = SimpleNamespace(text="<think>\\nx\\n</think>\\n\\n\\\\boxed{1}", finish_reason="stop", token_ids=[1],
                              logprobs=None)
        return [SimpleNamespace(request_id=rid, finished=True, outputs=[out], prompt_token_ids=[1])]
    def chat(self, conversations, params, **kw):
        ids = self.enqueue_chat(conversations, params)
        results = []
        while self.queue:
            results += self.step()
        return results

def from_config(cls, config):
    engine = cls.__new__(cls)
    engine.llm, engine.model_name, engine.max_model_len = StandIn(), "stand-in", 4096
    engine._prompt_tokens = lambda request: 10
    return engine

vllm_engine.VllmEngine.from_config = classmethod(from_config)
vllm_engine.sampling_params = lambda sampling, max_tokens: SimpleNamespace(max_tokens=max_tokens, logprobs=None)
out = Path(sys.argv[1])
seen = []
def watch():
    start = time.monotonic()
    while not (out / "stats.json").exists():
        files = list((out / "data").glob("*.parquet")) if (out / "data").exists() else []
        if files and not seen:
            seen.append(time.monotonic() - start)
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
start = time.monotonic()
run_generate(GenerateConfig(source="reasoning-gym:basic_arithmetic", num_prompts=N, num_samples=1, engine="vllm",
                            out=str(out), flush_seconds=1.0, quiet=True))
print(json.dumps({"first": seen[0] if seen else None, "total": time.monotonic() - start}))
"""

REAL_STREAM = """
import json, sys, threading, time
from pathlib import Path
from distill.config import GenerateConfig
from distill.generate.run import run_generate
out = Path(sys.argv[1])
seen = []
def watch():
    while not (out / "stats.json").exists():
        if not seen and (out / "data").exists() and list((out / "data").glob("*.parquet")):
            seen.append(time.monotonic())
        time.sleep(0.2)
threading.Thread(target=watch, daemon=True).start()
config = GenerateConfig(source="reasoning-gym:basic_arithmetic", num_prompts=48, num_samples=2, engine="vllm",
                        out=str(out), flush_seconds=5.0, max_tokens=256, max_model_len=2048, quiet=True)
run_generate(config)
end = time.monotonic()
rows = json.loads((out / "stats.json").read_text())
print(json.dumps({"first_before_end": end - seen[0] if seen else None, "rows": rows}))
"""


def _json_line(output: str) -> dict:
    """The child's result: its last line that is a JSON object (vLLM logs its shutdown on stderr after it)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def _vllm_streams(work: Path, quick: bool) -> list[Outcome]:
    case = work / "13-vllm"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    out = case / "out"
    if quick:
        n, per = 24, 0.25
        code, output, seconds, _ = _run([sys.executable, "-c", STREAM_CHILD, str(out), str(n), str(per)], case, 300)
        problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
        timing = _json_line(output) if code == 0 else {}
        first, total = timing.get("first"), timing.get("total", 0)
        if code == 0 and (first is None or first > total / 2):
            problems.append(f"the first rows reached disk at {first} s of {total:.1f} s")
        shown = "never" if first is None else f"{first:.1f} s"
        note = f"stand-in engine, {n} requests {per} s apart, --flush-seconds 1: first rows on disk at {shown}"
        return [_outcome("13 vLLM rows reach disk as they finish", problems, f"{note} of {total:.1f} s")]
    code, output, seconds, _ = _run([sys.executable, "-c", REAL_STREAM, str(out)], case, 1800, memory_mb=65536)
    problems = [] if code == 0 else [f"exit {code}: {_last_line(output)}"]
    timing = _json_line(output) if code == 0 else {}
    ahead = timing.get("first_before_end")
    if code == 0 and (ahead is None or ahead < 10):
        problems.append(f"the first rows reached disk {ahead} s before the end")
    shown = "never" if ahead is None else f"{ahead:.0f} s"
    note = f"SmolLM2 on vLLM, 96 samples, --flush-seconds 5: first rows on disk {shown} before the end"
    return [_outcome("13 vLLM rows reach disk as they finish", problems, f"{note}, {seconds:.0f} s")]


PARTS = {
    "6": _links,
    "7": _input_file_links,
    "9": _amplification,
    "10": _bad_rows,
    "11": _torn_cache,
    "12": _ray_fits,
    "13": _vllm_streams,
}


def run(work: Path, quick: bool, only: tuple[str, ...] = ()) -> list[Outcome]:
    work.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for number, part in PARTS.items():
        if only and number not in only:
            continue
        started = time.monotonic()
        try:
            outcomes.extend(part(work, quick))
        except Exception as exc:  # a part that breaks is a failed line, not a lost table
            outcomes.append(Outcome(CHECK, f"{number} the check itself", 1, 0, note=f"{type(exc).__name__}: {exc}"))
        print(f"[round3] point {number}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return outcomes


if __name__ == "__main__":  # python -m benchmarks.checks.round3 [--quick] [points...]
    from benchmarks.reliability import format_table

    args = sys.argv[1:]
    selected = tuple(a for a in args if a != "--quick")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="distill-round3-") as tmp:
        print(format_table(run(Path(tmp), "--quick" in args, selected)))
