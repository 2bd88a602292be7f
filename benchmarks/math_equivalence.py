"""The math verifier on third-party answer equivalence: math-verify's own test cases, and MATH-500's answers
against their worked solutions (the README's `--map gold=solution` layout). Offline, from tests/data.

Run: `python benchmarks/math_equivalence.py` (about 20 s); `--show` prints the disagreements.
"""

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from distill.filter.verifiers.math import check_math

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
TIMEOUT = 30  # generous: a timeout on a loaded machine is not a verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    start = time.monotonic()
    cases = [json.loads(line) for line in (DATA / "math_verify_cases.jsonl").read_text(encoding="utf-8").splitlines()]
    shown = []
    for extraction in ("lenient", "boxed"):
        agree = 0
        for case in cases:
            verdict = check_math(case["gold"], case["pred"], extraction, TIMEOUT)
            ok = (verdict.passed is True) == case["expected"]
            agree += ok
            if not ok and extraction == "lenient":
                shown.append(
                    f"case {case['case']} ({case['test']}): expected {case['expected']}, got {verdict.reason}"
                )
        print(f"math-verify's test cases, {extraction:<7} extraction: {agree} of {len(cases)} agree")
    with gzip.open(DATA / "math500.jsonl.gz", "rt", encoding="utf-8") as fh:
        math500 = [json.loads(line) for line in fh]
    passed = 0
    for row in math500:
        verdict = check_math(row["solution"], f"The answer is \\boxed{{{row['answer']}}}.", "boxed", TIMEOUT)
        passed += verdict.passed is True
        if not verdict.passed:
            shown.append(f"MATH-500 {row['unique_id']}: {verdict.reason} {verdict.details}")
    print(f"MATH-500 answers against their worked solutions (gold=solution): {passed} of {len(math500)} pass")
    print(f"({time.monotonic() - start:.0f} s)", file=sys.stderr)
    if args.show:
        print("\n".join(shown))


if __name__ == "__main__":
    main()
