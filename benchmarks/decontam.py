"""Decontamination on real benchmark text: verbatim copies, lightly reworded short problems, clean problems.

Against MATH-500 and GSM8K test (tests/data, offline; AIME 2024/2025 too when files are given with --benchmark),
with the default settings of `distill filter --decontaminate` (word 8-grams confirmed by overlap 0.5, plus the
short-text rules):
- every benchmark against itself: share of its problems flagged (target 100%);
- lightly reworded copies of MATH-500's short problems (2-20 words), made by `reword` below (deterministic:
  a synonym for the leading verb or a stock phrase, or one number changed) and stored in
  tests/data/math500_short_rewordings.jsonl (`--write-rewordings` makes them again): share caught (target >= 90%);
- clean competition problems: 1,000 MATH test problems that are not in MATH-500 (tests/data/math_test_clean.jsonl.gz)
  and the GSM8K test problems, against MATH-500: share wrongly flagged (target <= 2%).

Run: `python benchmarks/decontam.py` (about 10 s); `--show` prints what was missed and what was wrongly flagged.
"""

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

from distill.filter.dataset.decontam import Decontaminator, benchmark_name, plain_words, read_benchmark_rows

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
REWORDINGS = DATA / "math500_short_rewordings.jsonl"

# Light rewordings a contaminated training set shows: another verb, another stock phrase, the same meaning.
SYNONYMS = [
    ("What is the value of", "Find the value of"),
    ("Find the value of", "Determine the value of"),
    ("What is the smallest", "Find the least"),
    ("What is the largest", "Find the greatest"),
    ("What is the sum of", "Find the sum of"),
    ("How many", "What is the number of"),
    ("What is", "Find"),
    ("Compute", "Calculate"),
    ("Calculate", "Compute"),
    ("Evaluate", "Compute"),
    ("Find", "Determine"),
    ("Determine", "Find"),
    ("Simplify", "Simplify the expression"),
    ("Solve for", "Find"),
    ("smallest", "least"),
    ("largest", "greatest"),
]
NUMBER_RE = re.compile(r"(?<![\\\w.])\d+(?![\w.])")


def _rows(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def reword(text: str, kind: str, rnd: random.Random) -> str | None:
    """A light rewording (`synonym`) or the same problem with one number changed (`number`); None if none applies."""
    if kind == "synonym":
        for old, new in SYNONYMS:
            if old in text:
                return text.replace(old, new, 1)
        return f"Question: {text}"  # no stock verb: the problem under a header, as many training sets write it
    numbers = list(NUMBER_RE.finditer(text))
    if not numbers:
        return None
    match = rnd.choice(numbers)
    value = int(match.group())
    return text[: match.start()] + str(value + rnd.randint(1, 9)) + text[match.end() :]


def make_rewordings() -> list[dict]:
    out = []
    for row in _rows("math500.jsonl.gz"):
        if not 2 <= len(plain_words(row["problem"])) <= 20:
            continue
        rnd = random.Random(row["unique_id"])  # the same rewording on every machine and run
        for kind in ("synonym", "number"):
            text = reword(row["problem"], kind, rnd)
            if text is not None and text != row["problem"]:
                out.append({"unique_id": row["unique_id"], "kind": kind, "original": row["problem"], "reworded": text})
    return out


def measure(extra: list[str]) -> dict:
    math500 = [r["problem"] for r in _rows("math500.jsonl.gz")]
    gsm8k = [r["question"] for r in _rows("gsm8k_test.jsonl.gz")]
    benchmarks = {"math500": math500, "gsm8k": gsm8k}
    for path in extra:
        rows = read_benchmark_rows(path)
        column = next(c for c in ("problem", "question", "prompt") if c in rows[0])
        benchmarks[benchmark_name(path)] = [r[column] for r in rows]
    decontam = Decontaminator(benchmarks)
    results: dict = {"verbatim": {}, "reworded": {}, "clean": {}, "missed": [], "flagged": []}
    for name, texts in benchmarks.items():
        caught = [name in decontam.match(t) for t in texts]
        results["verbatim"][name] = (sum(caught), len(texts))
        results["missed"] += [f"{name} verbatim: {t[:100]!r}" for t, c in zip(texts, caught, strict=True) if not c]
    rewordings = [json.loads(line) for line in REWORDINGS.read_text(encoding="utf-8").splitlines()]
    for kind in ("synonym", "number"):
        rows = [r for r in rewordings if r["kind"] == kind]
        caught = [bool(decontam.match(r["reworded"])) for r in rows]
        results["reworded"][kind] = (sum(caught), len(rows))
        results["missed"] += [f"{kind}: {r['reworded'][:100]!r}" for r, c in zip(rows, caught, strict=True) if not c]
    only_math500 = Decontaminator({"math500": math500})
    clean = [("MATH test, not in MATH-500", [r["problem"] for r in _rows("math_test_clean.jsonl.gz")]),
             ("GSM8K test", gsm8k)]  # fmt: skip
    clean += [(name, texts) for name, texts in benchmarks.items() if name not in ("math500", "gsm8k")]
    for name, texts in clean:
        flagged = [t for t in texts if only_math500.match_details(t)]
        results["clean"][name] = (len(flagged), len(texts))
        results["flagged"] += [f"{name}: {t[:100]!r}" for t in flagged]
    return results


def report(results: dict, markdown: bool) -> str:
    rows = [("verbatim copies caught", name, *counts) for name, counts in results["verbatim"].items()]
    rows += [(f"short problems reworded ({kind}) caught", "math500", *counts)
             for kind, counts in results["reworded"].items()]  # fmt: skip
    rows += [("clean problems wrongly flagged", f"{name} vs math500", *counts)
             for name, counts in results["clean"].items()]  # fmt: skip
    lines = []
    if markdown:
        lines += ["| measure | set | count | of | share |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {m} | {s} | {a} | {b} | {a / b:.1%} |" for m, s, a, b in rows]
    else:
        lines += [f"{m:<44} {s:<38} {a:>5} / {b:<5} {a / b:>7.1%}" for m, s, a, b in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", action="append", default=[], help="Another benchmark file, e.g. aime24.jsonl.")
    parser.add_argument("--write-rewordings", action="store_true", help=f"Make {REWORDINGS.name} again.")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    if args.write_rewordings:
        rows = make_rewordings()
        REWORDINGS.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{len(rows)} rewordings -> {REWORDINGS}", file=sys.stderr)
    start = time.monotonic()
    results = measure(args.benchmark)
    print(report(results, args.markdown))
    print(f"({time.monotonic() - start:.0f} s)", file=sys.stderr)
    if args.show:
        for line in results["missed"] + results["flagged"]:
            print(line)


if __name__ == "__main__":
    main()
