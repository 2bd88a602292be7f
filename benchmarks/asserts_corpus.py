"""HumanEval and MBPP through the code verifier: how many tests run whole in the sandbox (the interpreter cannot
take them), whether every canonical solution passes, and whether wrong variants are judged as plain Python judges
them. The data files are not in this repository; give their paths:

    python benchmarks/asserts_corpus.py --humaneval HumanEval.jsonl.gz --mbpp mbpp.jsonl [--mutants] [--programs DIR]

HumanEval.jsonl.gz is openai/human-eval's data file; mbpp.jsonl is google-research's mbpp/mbpp.jsonl (974 tasks; later
lines are ignored). `--mutants` adds two wrong variants of each solution (returning None; a perturbed value), each
also run as plain Python, program and tests in one namespace, for the expected verdict. `--programs DIR` writes each
solution with its tests as a standalone program (what `DISTILL_CODE_CORPUS=DIR pytest tests/test_seccomp.py` runs
under the seccomp allowlist).
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.filter.verifiers.code import CodeVerifier, parse_tests  # noqa: E402

MUTATE = """
def _mutate(r):
    if isinstance(r, bool): return not r
    if isinstance(r, int): return r + 1
    if isinstance(r, float): return r * 1.5 + 1
    if isinstance(r, str): return r + "x"
    if isinstance(r, list): return list(reversed(r)) + [0]
    if isinstance(r, tuple): return r + (0,)
    if isinstance(r, dict): return {**r, "zz": 1}
    if isinstance(r, set): return r | {"zz"}
    if r is None: return 0
    return None
"""


WRAPPED_CALL = re.compile(
    r"assert\s+(?:not\s+)?\(?\s*(?:set|sorted|round|abs|math\.isclose|list|tuple|len|int|float|str)?\(?\s*(\w+)\("
)


def load(humaneval: Path, mbpp: Path) -> list[tuple[str, str, dict, str]]:
    """(name, program, tests, the tests as plain Python appended to the program)."""
    tasks = []
    opener = gzip.open if humaneval.suffix == ".gz" else open
    with opener(humaneval, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            entry = r["entry_point"]
            tests = {"asserts": r["test"], "entry_point": entry}
            full = f"{r['test']}\ncheck({entry})\n"
            tasks.append(
                (f"HumanEval/{r['task_id'].split('/')[1]}", r["prompt"] + r["canonical_solution"], tests, full)
            )
    rows = [json.loads(line) for line in mbpp.read_text(encoding="utf-8").splitlines() if line.strip()][:974]
    for r in rows:
        setup = r["test_setup_code"].replace("\r\n", "\n")
        asserts = (setup + "\n" if setup else "") + "\n".join(r["test_list"] + r["challenge_test_list"])
        tasks.append((f"MBPP/{r['task_id']}", r["code"].replace("\r\n", "\n"), {"asserts": asserts}, asserts + "\n"))
    return tasks


def mutants(tasks):
    """Two wrong variants of each solution, wrapping its function under test."""
    for name, program, tests, full in tasks:
        entry = tests.get("entry_point")
        if entry is None:  # MBPP: the function the first assert calls, inside the usual wrappers
            found = WRAPPED_CALL.search(tests["asserts"])
            entry = found.group(1) if found else None
        if not entry:
            continue
        yield f"{name}/none", program + f"\ndef {entry}(*a, **k):\n    return None\n", tests, full
        wrap = MUTATE + f"\n_orig = {entry}\ndef {entry}(*a, **k):\n    return _mutate(_orig(*a, **k))\n"
        yield f"{name}/mutant", program + wrap, tests, full


def plain_python(program: str, full: str) -> bool:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(program + "\n\n" + full)
    try:
        return subprocess.run(["/usr/bin/python3", fh.name], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(fh.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--humaneval", type=Path, required=True)
    parser.add_argument("--mbpp", type=Path, required=True)
    parser.add_argument("--mutants", action="store_true")
    parser.add_argument("--programs", type=Path, help="also write each solution and its tests as one program here")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    tasks = load(args.humaneval, args.mbpp)
    if args.programs:
        args.programs.mkdir(parents=True, exist_ok=True)
        for name, program, _tests, full in tasks:
            (args.programs / (name.replace("/", "_") + ".py")).write_text(program + "\n\n" + full, encoding="utf-8")
    whole = [name for name, _, tests, _ in tasks if parse_tests(tests)[0].program is None]
    verifier = CodeVerifier(workers=args.workers, timeout_per_test=20, timeout_per_sample=60)
    started = time.monotonic()

    def judge(task):
        name, program, tests, full = task
        verdict = verifier.verify({"answer": f"```python\n{program}\n```", "tests": json.dumps(tests)})
        expected = plain_python(program, full) if "/" in name.split("/", 1)[1] else True
        return name, verdict, expected

    items = list(tasks) + (list(mutants(tasks)) if args.mutants else [])
    disagree = []
    with ThreadPoolExecutor(args.workers) as pool:
        for name, verdict, expected in pool.map(judge, items):
            if bool(verdict.passed) != expected:
                disagree.append(f"{name}: verifier {verdict.passed} ({verdict.reason}: {verdict.details}), "
                                f"python {expected}")  # fmt: skip
    verifier.close()
    for suite in ("HumanEval", "MBPP"):
        count = sum(1 for name, *_ in tasks if name.startswith(suite))
        ran_whole = sum(1 for name in whole if name.startswith(suite))
        print(f"{suite}: {count} tasks, {ran_whole} run whole in the sandbox")
    print(f"verdicts unlike plain Python: {len(disagree)} of {len(items)} ({time.monotonic() - started:.0f} s)")
    for line in disagree[:20]:
        print("  " + line)
    return 0 if not whole and not disagree else 1


if __name__ == "__main__":
    sys.exit(main())
