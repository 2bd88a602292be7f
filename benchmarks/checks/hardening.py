"""Issue 11's classes, tried as a user or an attacker would (the sandbox's own classes are in attacks.py).

One Outcome per case, check "harden", case named after the class number:

  1   a stage run with --out = its input, inside it, or holding it (with --overwrite and --resume): the input's
      files must be untouched (same bytes), and the command must end without a traceback
  6   a 1 MB hostile answer (unclosed fences, open \\boxed{, deep braces, ...) to each verifier: under a second each
  7   a misspelt value of every fixed option vocabulary (`math.domains=maths`, ...): refused, with a hint
  8   publish of a folder holding symlinks out of it; a judge base_url with credentials: neither reaches the stage
  9   a YAML alias bomb, a 10 MB `out:` value, prompt files read with flat memory and a 20 MB line refused unread
  11  every special and added token of the judge's tokenizer (test tokenizer and real SmolLM2): none reaches it
  12  hostile chat templates (a 300 MB string, endless loops, huge filter widths): refused fast, one line

Every command runs through the product's CLI or public functions, so a row passes as soon as the fix for its class
is in, whoever makes it. Commands that could hang or eat memory on an unfixed tree run in a child process with a
time-out and an address-space limit: a time-out is a failed row, not a stuck benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from benchmarks.checks import Outcome

ROOT = Path(__file__).resolve().parents[2]
CHECK = "harden"
TRACEBACK = "Traceback (most recent call last)"


# -- helpers --------------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISTILL_DEBUG", None)
    return env


def _distill(args: list[str], cwd: Path, timeout: float = 120, memory_mb: int = 4096) -> tuple[int | None, str]:
    """`distill ARGS` in a child process: (exit status or None on time-out, stdout + stderr)."""
    return _child([sys.executable, "-m", "distill", *args], cwd, timeout, memory_mb)


def _python(code: str, timeout: float = 60, memory_mb: int = 4096) -> tuple[int | None, str]:
    return _child([sys.executable, "-c", code], ROOT, timeout, memory_mb)


def _child(argv: list[str], cwd: Path, timeout: float, memory_mb: int) -> tuple[int | None, str]:
    """A child process under an address-space limit: (exit status or None on time-out, stdout + stderr)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))

    try:
        done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


BATCH_CHILD = """
import hashlib, json, sys
from pathlib import Path
from click.testing import CliRunner
from distill.cli import main
from benchmarks.checks.hardening import _snapshot
for args, watched in json.loads(sys.stdin.read()):
    before = _snapshot(Path(watched)) if watched else {}
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    after = _snapshot(Path(watched)) if watched and Path(watched).exists() else {}
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    lines = [line for line in (result.output or "").strip().splitlines() if line.strip()]
    untouched = all(after.get(k) == v for k, v in before.items())
    last = (repr(result.exception) if crashed else lines[-1] if lines else "")[:200]
    print(json.dumps([result.exit_code, crashed, untouched, last]), flush=True)
"""


def _cli_batch(commands: list[tuple[list[str], str]], timeout: float) -> list[tuple[int, bool, bool, str] | None]:
    """Run `distill ARGS` for each (args, watched folder) in one child (imports once): per command its exit
    status, whether it ended in a traceback, whether the watched folder kept its bytes, its last line; None for a
    command the child never finished (time-out or crash)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", BATCH_CHILD],
            input=json.dumps(commands),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out = done.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    results = []
    for line in out.splitlines():
        try:
            results.append(tuple(json.loads(line)))
        except ValueError:
            continue
    return results + [None] * (len(commands) - len(results))


def _snapshot(folder: Path) -> dict[str, str]:
    if folder.is_file():
        return {folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tiny_model(work: Path) -> Path:
    path = work / "tiny-model"
    if not (path / "config.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            from conftest import build_tiny_model
        finally:
            sys.path.remove(str(ROOT / "tests"))
        build_tiny_model(path)
    return path


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


# -- 1: no stage writes into its inputs ---------------------------------------------------------------------------


def _layouts(work: Path, name: str, make_input) -> list[tuple[str, Path, Path]]:
    """(layout, input, out): out = input, out inside input, input inside out; each in a fresh folder."""
    cases = []
    for layout in ("out=input", "out inside input", "input inside out"):
        base = work / name / layout.replace(" ", "-").replace("=", "-eq-")
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        if layout == "input inside out":
            source = make_input(base / "outer" / "in")
            cases.append((layout, source, base / "outer"))
        else:
            source = make_input(base / "in")
            cases.append((layout, source, source if layout == "out=input" else source / "sub"))
    return cases


def _stage_into_input(work: Path, quick: bool) -> list[Outcome]:
    from benchmarks.synth import write_generate_output

    model = _tiny_model(work)
    outcomes = []

    def make_generate(folder: Path) -> Path:
        write_generate_output(folder, 8, samples=2)
        return folder

    def make_prompts(folder: Path) -> Path:
        folder.mkdir(parents=True)
        rows = [{"id": f"p{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)} for i in range(3)]
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return folder

    filtered = work / "stage1-filtered"
    if not (filtered / "stats.json").exists():
        write_generate_output(work / "stage1-gen", 8, samples=2)
        _distill(["filter", str(work / "stage1-gen"), "--out", str(filtered), "--verifiers", "format"], work)

    def make_filtered(folder: Path) -> Path:
        shutil.copytree(filtered, folder)
        return folder

    stages = {
        "generate": (
            make_prompts,
            lambda src, out: ["generate", "--source", str(src), "--out", str(out), "--engine", "transformers",
                              "--model", str(model), "--max-tokens", "4", "--num-samples", "1"],
        ),
        "filter": (make_generate, lambda src, out: ["filter", str(src), "--out", str(out), "--verifiers", "format"]),
        "mix": (make_filtered, lambda src, out: ["mix", f"{src}:1", "--out", str(out)]),
    }  # fmt: skip
    commands, labels = [], []
    for stage, (make_input, command) in stages.items():
        for flag in ("--overwrite", "--resume") if stage != "mix" else ("--overwrite",):  # mix has no --resume
            for layout, source, out in _layouts(work, f"stage1-{stage}{flag}", make_input):
                commands.append(([*command(source, out), flag], str(source)))
                labels.append((stage, f"{layout} {flag}"))
    results = _cli_batch(commands, timeout=300)
    for stage in stages:
        mine = [(label, r) for (s_, label), r in zip(labels, results, strict=True) if s_ == stage]
        failures = []
        for label, result in mine:
            if result is None:
                failures.append(f"{label}: time-out")
            elif not result[2]:
                failures.append(f"{label}: input changed")
            elif result[1]:
                failures.append(f"{label}: traceback")
        note = "; ".join(failures[:2]) or "inputs untouched, no traceback"
        outcomes.append(Outcome(CHECK, f"1 out vs input: {stage}", len(mine), len(mine) - len(failures), note=note))
    return outcomes


# -- 6: linear time on hostile text -------------------------------------------------------------------------------

HOSTILE_ANSWERS = {
    "unclosed fences": "```python\n" * 90_000,
    "open boxes": "\\boxed{" * 140_000,
    "deep braces": "{" * 500_000 + "}" * 500_000,
    "think tags": "<think>" * 140_000,
    "dollars": "$" * 1_000_000,
    "backslashes": "\\frac{" * 160_000,
}
VERIFIER_SAMPLE = {
    "math": {"domain": "math", "gold": "42"},
    "code": {"domain": "code", "tests": json.dumps({"stdin_stdout": [{"input": "1\n", "output": "2\n"}]})},
}


def _linear_time(work: Path, quick: bool) -> list[Outcome]:
    from distill.filter.verifiers.registry import NAMES

    names = [n for n in NAMES if n != "judge"]  # the judge is a model: its prompt is bounded by its tokenizer
    outcomes = []
    for name in names:
        code = textwrap.dedent(
            f"""
            import json, sys, time
            from benchmarks.checks.hardening import HOSTILE_ANSWERS, VERIFIER_SAMPLE
            from distill.filter.verifiers.registry import build_verifier
            verifier = build_verifier({name!r}, {{}})
            base = {{"problem": "p", "domain": "general", "finish_reason": "stop", "truncated": False}}
            base.update(VERIFIER_SAMPLE.get({name!r}, {{}}))
            for label, answer in HOSTILE_ANSWERS.items():
                sample = dict(base, answer=answer, reasoning="r", completion="<think>\\nr\\n</think>\\n\\n" + answer)
                start = time.monotonic()
                verifier.verify_batch([sample])
                print(json.dumps([label, time.monotonic() - start]), flush=True)
            """
        )
        status, output = _python(code, timeout=20 if quick else 120)
        times = {}
        for line in output.splitlines():
            try:
                label, seconds = json.loads(line)
                times[label] = seconds
            except (ValueError, TypeError):
                continue
        fast = sum(1 for s in times.values() if s < 1.0)
        slow = [f"{k} {v:.1f} s" for k, v in times.items() if v >= 1.0]
        if status is None:
            slow.append(f"stuck after {len(times)} answers")
        elif status != 0:
            slow.append(f"crashed: {_last_line(output)}")
        worst = max(times.values(), default=0.0)
        note = "; ".join(slow) or f"slowest {worst:.2f} s"
        outcomes.append(Outcome(CHECK, f"6 1 MB hostile answers: {name}", len(HOSTILE_ANSWERS), fast, note=note))
    return outcomes


# -- 7: fixed vocabularies are checked ------------------------------------------------------------------------------

MISSPELT_OPTIONS = [
    "math.domains=maths",
    "math.extraction=lenien",
    "format.require_think=[maths]",
    "format.require_boxed=[scince]",
    "judge.mode=grade",
    "judge.engine=vlm",
    "language.domains=[generl]",
]


def _vocabularies(work: Path, quick: bool) -> list[Outcome]:
    from benchmarks.synth import write_generate_output

    gen = write_generate_output(work / "stage7-gen", 4, samples=1)
    commands = []
    for option in MISSPELT_OPTIONS:
        verifier = option.split(".")[0]
        out = work / "stage7-out" / option.replace("=", "-").replace("[", "").replace("]", "")
        commands.append(
            (["filter", str(gen), "--out", str(out), "--verifiers", f"format,{verifier}", "--option", option], "")
        )
    kept, failures = 0, []
    for option, result in zip(MISSPELT_OPTIONS, _cli_batch(commands, timeout=180), strict=True):
        if result is not None and result[0] == 1 and not result[1] and "did you mean" in result[3]:
            kept += 1
        else:
            why = "time-out" if result is None else "accepted" if result[0] == 0 else result[3][:60]
            failures.append(f"{option}: {why}")
    note = "; ".join(f[:70] for f in failures[:2]) or "each refused with a near-name hint"
    return [Outcome(CHECK, "7 misspelt option values", len(MISSPELT_OPTIONS), kept, note=note)]


# -- 8: publishing follows no link out; URLs keep no credentials ---------------------------------------------------


def _publishing(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    # Symlinks out of a model folder: a stand-in SSH key and /etc/passwd.
    folder = work / "stage8-model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(_tiny_model(work), folder)
    secret = work / "stage8-outside" / "id_ed25519"
    secret.parent.mkdir(parents=True, exist_ok=True)
    marker = "STAND-IN-PRIVATE-KEY-" + hashlib.sha256(str(work).encode()).hexdigest()[:12]
    secret.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n")
    # Names publish stages (a tokenizer's files, a weights shard), pointing out of the folder.
    (folder / "tokenizer.model").symlink_to(secret)
    (folder / "merges.txt").symlink_to("/etc/passwd")
    (folder / "extra-00002.safetensors").symlink_to(secret)
    stage = work / "stage8-staged"
    shutil.rmtree(stage, ignore_errors=True)
    status, output = _distill(["publish", "model", str(folder), "me/m", "--dry-run", "--stage-dir", str(stage)], work)
    leaked = []
    for path in stage.rglob("*") if stage.exists() else ():
        if path.is_file():
            data = path.read_bytes()
            if marker.encode() in data or b"root:x:0:0" in data:
                leaked.append(path.name)
    contained = not leaked and status is not None and TRACEBACK not in output
    note = (
        f"staged: {', '.join(leaked[:3])}"
        if leaked
        else _last_line(output)[:80]
        if not contained
        else "no link target staged"
    )
    outcomes.append(Outcome(CHECK, "8 publish model with symlinks out", 1, int(contained), note=note))

    # A judge base_url holding credentials, in the filter config a dataset card is made from.
    from benchmarks.synth import write_generate_output

    gen = write_generate_output(work / "stage8-gen", 4, samples=1)
    filtered = work / "stage8-filtered"
    shutil.rmtree(filtered, ignore_errors=True)
    _distill(["filter", str(gen), "--out", str(filtered), "--verifiers", "format"], work)
    secrets = ["Us3rPa55w0rd", "AP1K3YV4LU3", "T0K3NV4LU3"]
    url = f"https://alice:{secrets[0]}@judge.example.com/v1?api-key={secrets[1]}&token={secrets[2]}"
    resolved = filtered / "config.resolved.yaml"
    if resolved.exists():
        import yaml

        config = yaml.safe_load(resolved.read_text()) or {}
        config.setdefault("verifiers", {})
        if isinstance(config["verifiers"], dict):
            config["verifiers"]["judge"] = {"engine": "openai", "model": "m", "base_url": url}
        resolved.write_text(yaml.safe_dump(config))
    stage = work / "stage8-dataset-staged"
    shutil.rmtree(stage, ignore_errors=True)
    status, output = _distill(
        ["publish", "dataset", str(filtered), "me/d", "--dry-run", "--stage-dir", str(stage)], work
    )
    shown = output + "".join(p.read_text(errors="replace") for p in stage.rglob("*.md") if p.is_file())
    found = [s for s in secrets if s in shown]
    staged_card = stage.exists() and any(stage.rglob("README.md"))
    contained = not found and staged_card and TRACEBACK not in output
    note = (
        f"card or output shows {len(found)} of 3 credentials"
        if found
        else "no credential in the card or the output"
        if contained
        else _last_line(output)[:80]
    )
    outcomes.append(Outcome(CHECK, "8 credentials in a judge URL", 1, int(contained), note=note))
    return outcomes


# -- 9: bounded inputs ---------------------------------------------------------------------------------------------


def _bounded_inputs(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    folder = work / "stage9"
    folder.mkdir(parents=True, exist_ok=True)
    # A billion-laughs recipe: 8 levels of 10 aliases under generate.stop, 10**8 strings if expanded (515 bytes).
    lines = ["generate:", "  source: prompts.jsonl", "  out: g", "  stop:", "    - &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = folder / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    (folder / "prompts.jsonl").write_text('{"problem": "1+1?"}\n')
    started = time.monotonic()
    status, output = _distill(["run", str(bomb), "--dry-run"], folder, timeout=60, memory_mb=2048)
    seconds = time.monotonic() - started
    contained = status == 1 and TRACEBACK not in output and seconds < 5
    note = f"{seconds:.1f} s: {_last_line(output)[:60]}" if not contained else f"refused in {seconds:.1f} s"
    outcomes.append(Outcome(CHECK, "9 YAML alias bomb", 1, int(contained), note=note))

    # A 10 MB `out:` value: refused or used, but never echoed whole, never a traceback.
    big = folder / "big.yaml"
    big.write_text("generate:\n  source: prompts.jsonl\n  out: " + "o" * 10_000_000 + "\n")
    status, output = _distill(["run", str(big), "--dry-run"], folder, timeout=60)
    longest = max((len(line) for line in output.splitlines()), default=0)
    contained = status is not None and TRACEBACK not in output and longest < 1000
    outcomes.append(
        Outcome(CHECK, "9 10 MB recipe value", 1, int(contained), note=f"longest output line {longest} chars")
    )

    # Prompt files: peak memory flat in the file's size; a 20 MB line refused unread.
    rows = 20_000 if quick else 100_000
    code = textwrap.dedent(
        f"""
        import json, resource, sys
        from distill.config import GenerateConfig
        from distill.generate.sources import load_prompts
        try:
            from distill.generate.sources import iter_prompts
        except ImportError:
            iter_prompts = lambda config, shard=None: iter(load_prompts(config))
        path = sys.argv[1] if len(sys.argv) > 1 else {str(folder / "many.jsonl")!r}
        rows = {rows}
        with open(path, "w") as fh:
            for i in range(rows):
                fh.write(json.dumps({{"id": f"p{{i}}", "problem": f"{{i}} " + "x" * 2000}}) + "\\n")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = sum(1 for _ in iter_prompts(GenerateConfig(source=path, out="x"), (2, 0)))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps([n, grown * 1024, rows * 2000]))
        """
    )
    status, output = _python(code, timeout=120)
    try:
        count, grown, size = json.loads(output.strip().splitlines()[-1])
        contained = grown < size / 10 and 0 < count < rows
        note = f"{size / 2**20:.0f} MB file, one shard of 2: peak RSS grew {grown / 2**20:.0f} MB"
    except (ValueError, IndexError):
        contained, note = False, _last_line(output)[:80]
    outcomes.append(Outcome(CHECK, "9 prompt file read with flat memory", 1, int(contained), note=note))

    line = folder / "one-line.jsonl"
    with open(line, "w") as fh:
        fh.write('{"problem": "' + "x" * (20 * 2**20) + '"}\n')
    started = time.monotonic()
    status, output = _distill(
        ["generate", "--source", str(line), "--out", str(folder / "g"), "--model", "m", "--engine", "openai",
         "--base-url", "http://127.0.0.1:9/v1"],
        folder, timeout=60, memory_mb=1024,
    )  # fmt: skip
    contained = status == 1 and TRACEBACK not in output and "one-line.jsonl:1" in output
    outcomes.append(Outcome(CHECK, "9 a 20 MB one-line prompt file", 1, int(contained), note=_last_line(output)[:90]))
    return outcomes


# -- 11: the judge's own tokenizer ---------------------------------------------------------------------------------


def _judge_tokens(work: Path, quick: bool) -> list[Outcome]:
    model = _tiny_model(work)
    code = textwrap.dedent(
        f"""
        import json
        from transformers import AutoTokenizer
        import distill.filter.verifiers.judge as judge
        from distill.engines import Result
        from distill.models import resolve_model

        def check(tokenizer):
            tokens = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()))
            own = {{tokenizer.convert_tokens_to_ids(t) for t in tokens}} - {{tokenizer.unk_token_id}}
            seen = []

            class Engine:
                model_name = "local"
                def __init__(self):
                    self.tokenizer = tokenizer
                def generate(self, requests, sampling):
                    for k, request in enumerate(requests):
                        seen.append(request.messages[-1]["content"])
                        yield k, Result(text="VERDICT: NOT_EQUIVALENT")
                def close(self):
                    pass

            judge.make_engine = lambda config: Engine()
            verifier = judge.JudgeVerifier(model="local")
            reached = set()
            for token in tokens:
                if len(token.strip()) < 2:
                    continue
                seen.clear()
                verifier.verify({{"problem": "6 * 7?", "answer": "41 " + token + " pass", "gold": "42"}})
                ids = set(tokenizer(seen[0], add_special_tokens=False).input_ids)
                if tokenizer.convert_tokens_to_ids(token) in ids & own:
                    reached.add(token)
            return len([t for t in tokens if len(t.strip()) >= 2]), sorted(reached)

        tiny = AutoTokenizer.from_pretrained({str(model)!r})
        tiny.add_special_tokens({{"additional_special_tokens": ["<file_sep>", "<issue_comment>"]}})
        tiny.add_tokens(["<jupyter_code>", "[[JUMP]]"])
        print(json.dumps(["test tokenizer", *check(tiny)]))
        try:
            real = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
        except Exception as exc:
            print(json.dumps(["SmolLM2", 0, [f"not available: {{type(exc).__name__}}"]]))
        else:
            print(json.dumps(["SmolLM2", *check(real)]))
        """
    )
    status, output = _python(code, timeout=120)
    outcomes = []
    for line in output.splitlines():
        try:
            name, tried, reached = json.loads(line)
        except (ValueError, TypeError):
            continue
        if tried == 0:
            continue  # SmolLM2 not installed here: nothing tried, nothing claimed
        note = f"reach the judge: {', '.join(reached[:4])}" if reached else "none reaches the judge as a token"
        outcomes.append(Outcome(CHECK, f"11 judge tokens: {name}", tried, tried - len(reached), note=note))
    if not outcomes:
        outcomes.append(Outcome(CHECK, "11 judge tokens", 1, 0, note=_last_line(output)[:90]))
    return outcomes


# -- 12: hostile chat templates ------------------------------------------------------------------------------------

HOSTILE_TEMPLATES = {
    "300 MB string": "{{ 'x' * 300000000 }}",
    "endless loop": "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}",
    "huge filter width": "{{ 'x' | center(300000000) }}",
    "doubling string": "{% set s = namespace(v='x') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}",
    "huge power": "{{ 7 ** 300000000 }}",
}


def _chat_templates(work: Path, quick: bool) -> list[Outcome]:
    model = _tiny_model(work)
    folders = {}
    for label, template in HOSTILE_TEMPLATES.items():
        folder = work / "stage12" / label.replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(model, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["chat_template"] = template
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        (folder / "chat_template.jinja").unlink(missing_ok=True)  # it would win over tokenizer_config.json
        folders[label] = str(folder)
    # One child for all (transformers takes seconds to import); each render timed inside it, as the engine does it.
    code = textwrap.dedent(
        f"""
        import json, time
        from transformers import AutoTokenizer
        from distill.engines import Request
        from distill.engines.hf import render_prompt
        for label, folder in {folders!r}.items():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            start = time.monotonic()
            try:
                render_prompt(tokenizer, Request([{{"role": "user", "content": "hi"}}]))
                outcome = "rendered"
            except Exception as exc:
                text = str(exc)
                one_line = type(exc).__name__ == "DistillError" and "\\n" not in text and folder in text
                first = text.splitlines()[0][:60] if text else ""
                outcome = "one line" if one_line else f"{{type(exc).__name__}}: {{first}}"
            print(json.dumps([label, outcome, time.monotonic() - start]), flush=True)
        """
    )
    status, output = _python(code, timeout=90, memory_mb=3072)
    results = {}
    for line in output.splitlines():
        try:
            label, outcome, seconds = json.loads(line)
            results[label] = (outcome, seconds)
        except (ValueError, TypeError):
            continue
    kept = sum(1 for outcome, seconds in results.values() if outcome == "one line" and seconds < 10)
    failures = [f"{k}: {o}" for k, (o, s) in results.items() if o != "one line" or s >= 10]
    failures += [f"{k}: {'time-out' if status is None else 'killed'}" for k in HOSTILE_TEMPLATES if k not in results]
    slowest = max((s for _, s in results.values()), default=0.0)
    note = "; ".join(failures[:2]) or f"each refused in one line naming the folder, slowest {slowest:.1f} s"
    return [Outcome(CHECK, "12 hostile chat templates (transformers)", len(HOSTILE_TEMPLATES), kept, note=note)]


PARTS = {
    "1": _stage_into_input,
    "6": _linear_time,
    "7": _vocabularies,
    "8": _publishing,
    "9": _bounded_inputs,
    "11": _judge_tokens,
    "12": _chat_templates,
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
        print(f"[harden] class {number}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return outcomes


if __name__ == "__main__":  # python -m benchmarks.checks.hardening [--quick] [classes...]
    from benchmarks.reliability import format_table

    args = sys.argv[1:]
    quick = "--quick" in args
    selected = tuple(a for a in args if a != "--quick")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="distill-harden-") as tmp:
        print(format_table(run(Path(tmp), quick, selected)))
