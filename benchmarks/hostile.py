"""Verifier run time on hostile model output (issue 11, point 6): every scan of a model's text must be linear.

    python -m benchmarks.hostile [--size BYTES] [--only math,format,...]

Each verifier is fed answers of `--size` bytes (1 MB by default) made by repeating one unit that defeats a
careless scan: unclosed `\\boxed{`, `\\[`, `\\(`, `\\begin{x}` and code fences (a lazy regex or a scan per opener
goes to the end of the text from each one: quadratic), deep braces, `<think>` tags, backticks, dollars, text in
accented and CJK letters (the language verifier's per-character path), a word loop (the repetition verifier's
n-grams). Each verifier runs in its own subprocess with a time limit, so a quadratic one ends as a missed target
rather than a hung benchmark.

Items (ours / baseline, see benchmarks/items.py):
- `<verifier>: slowest hostile answer of 1 MB` in seconds against the 1 s target (ratio <= 1).
- `<verifier>: all hostile answers, 1 MB vs 256 KB`: the summed time at 1 MB over the summed time at a quarter of
  the size; linear code gives about 4, quadratic about 16 (target <= 8).

The verifiers: math strict (`extraction: boxed`) and lenient, in the calling process (`workers: 0`, as each of the
pool's workers runs it); format, language, repetition, length; and code's extraction (`extract_code`, what the
code verifier scans before anything runs: the sandbox is not started). What math-verify itself costs is bounded
by what the math verifier sends it (a final box of at most MAX_BOXED_CHARS, or the last LENIENT_TAIL_CHARS of the
answer) and by its per-parse timeout, not by the size of the answer.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.items import format_table, item  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
TARGET_SECONDS = 1.0

# name -> the unit repeated to the answer's size.
HOSTILE = {
    "unclosed \\boxed{": "\\boxed{",
    "unclosed \\fbox{": "\\fbox{",
    "closed boxes": "\\boxed{1}",
    "open braces": "{",
    "close braces": "}",
    "unclosed \\[": "\\[",
    "unclosed \\(": "\\(",
    "unclosed \\begin{x}": "\\begin{x}",
    "$$": "$$ ",
    "dollars": "$",
    "backticks": "`",
    "unclosed ```python": "```python\n",
    "fences": "```",
    "<think>": "<think>",
    "</think>": "</think>",
    "snake_case": "a_",
    "names with digits": "a1 ",
    "accented letters": "é ",
    "CJK": "中",
    "a word loop": "the cat sat on ",
    "#### markers": "####",
    "nested \\frac": "\\frac{1}{",
}

VERIFIERS = ("math", "math-lenient", "format", "language", "repetition", "length", "code-extract")


def hostile_text(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def checkers() -> dict:
    """verifier name -> a function of the answer text (what a verifier does with one row)."""
    from distill.filter.verifiers.code import extract_code
    from distill.filter.verifiers.registry import build_verifier
    from distill.testing import example_row

    def verify(name: str, options: dict):
        verifier = build_verifier(name, options)
        return lambda text: verifier.verify(example_row(reasoning="Let me think.", answer=text))

    return {
        "math": verify("math", {"workers": 0}),
        "math-lenient": verify("math", {"workers": 0, "extraction": "lenient"}),
        "format": verify("format", {}),
        "language": verify("language", {}),
        "repetition": verify("repetition", {}),
        "length": verify("length", {}),
        "code-extract": extract_code,
    }


def time_verifier(name: str, size: int, units: dict[str, str] = HOSTILE) -> dict[str, float]:
    """Seconds each hostile answer takes (CPU time of this process: other load on the machine does not count)."""
    check = checkers()[name]
    check("warm up: imports and caches")
    times = {}
    for label, unit in units.items():
        text = hostile_text(unit, size)
        started = time.process_time()
        check(text)
        times[label] = time.process_time() - started
    return times


def _child(name: str, size: int, timeout: float) -> dict[str, float] | None:
    """time_verifier in a subprocess; None when it ran past `timeout` (a superlinear scan)."""
    command = [sys.executable, "-m", "benchmarks.hostile", "--child", name, "--size", str(size)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _label(size: int) -> str:
    return f"{size / MB:g} MB" if size >= MB else f"{size / 1000:g} KB"


def run(quick: bool, work: Path | None = None, only: list[str] | None = None, size: int = MB) -> list[dict]:
    """One item per verifier for the slowest 1 MB answer, one for how the time grows from 256 KB to 1 MB."""
    timeout = 120 if quick else 600
    items = []
    for name in only or VERIFIERS:
        big = _child(name, size, timeout)
        if big is None:
            items.append(item(f"{name}: slowest hostile answer of {_label(size)} (timed out)", timeout,
                              TARGET_SECONDS, "s", "<= 1"))  # fmt: skip
            continue
        worst = max(big, key=big.get)
        items.append(item(f"{name}: slowest hostile answer of {_label(size)} ({worst})", big[worst],
                          TARGET_SECONDS, "s", "<= 1"))  # fmt: skip
        small = _child(name, size // 4, timeout) or {}
        if small:
            # Sums under 10 ms are timer noise (the length verifier counts words in microseconds): floored there.
            items.append(item(f"{name}: all hostile answers, {_label(size)} vs {_label(size // 4)}",
                              max(sum(big.values()), 0.04), max(sum(small.values()), 0.01), "s", "<= 8"))  # fmt: skip
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=MB, help="bytes of each hostile answer (default 1 MB)")
    parser.add_argument("--only", help=f"comma-separated verifiers: {', '.join(VERIFIERS)}")
    parser.add_argument("--quick", action="store_true", help="shorter time limit per verifier")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one verifier's timings as JSON, for run()
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(time_verifier(args.child, args.size)))
        return 0
    only = [v.strip() for v in args.only.split(",")] if args.only else None
    if unknown := [v for v in only or () if v not in VERIFIERS]:
        parser.error(f"unknown verifier {unknown[0]}: choose from {', '.join(VERIFIERS)}")
    print(format_table(run(args.quick, only=only, size=args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
