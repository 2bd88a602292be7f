"""Reliability and security, measured: `python benchmarks/reliability.py [--quick] [--only crash,attacks]`.

Runs every check of benchmarks/checks/ on this machine and prints one table: crashes survived, faults injected
and recovered, inputs fuzzed, attacks contained, secrets leaked. The last line is `rows lost: N`; anything but
0 is a bug. The exit status is 1 when a check failed, so the script can gate a release.

  crash     SIGKILL at random moments into generate, filter and run, then --resume (checks/crash.py)
  faults    a proxy injecting 500, 429, timeouts, drops and truncated bodies before a real vLLM server
  fuzz      hypothesis against the prompt readers and the recipe loader: never a traceback
  attacks   hostile programs against the code verifier's sandbox
  judge     prompt injection against the LLM judge: by construction, and the small judge's sway rate
  secrets   every command with HF_TOKEN and OPENAI_API_KEY set to markers: the markers appear nowhere
  hardening issue 11's classes: stages against their inputs, hostile answers, misspelt options, publish links and
            URL credentials, bounded inputs, the judge's tokens, hostile chat templates (checks/hardening.py)
  round3    issue 26's classes outside the sandbox: links, an input linked into --out, amplification, rows that
            cannot be read (both backends, resume), a torn model cache, Ray on small machines, vLLM rows reaching
            disk as they finish (checks/round3.py; the sandbox's are rows of `attacks`)

--quick is the CI-sized version (minutes); the full run takes longer (real SmolLM2 teacher, more kills).
"""

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `distill` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.checks import Outcome  # noqa: E402

CHECKS = ["fuzz", "attacks", "judge_injection", "secrets", "hardening", "round3", "crash", "faults"]
SUMMARY = {
    "crash": "crashes survived",
    "faults": "faults injected and recovered",
    "fuzz": "inputs fuzzed without a traceback",
    "attacks": "attacks contained",
    "judge": "judge injections resisted",
    "secrets": "commands run without leaking a secret",
    "harden": "issue 11 cases contained",
    "round3": "issue 26 cases contained",
}


def run_checks(names: list[str], work: Path, quick: bool) -> tuple[list[Outcome], dict[str, float]]:
    outcomes: list[Outcome] = []
    seconds: dict[str, float] = {}
    for name in names:
        started = time.monotonic()
        print(f"[{name}] running...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.checks.{name}")
            outcomes.extend(module.run(work / name, quick))
        except Exception as exc:  # a check that breaks is a failed line of the table, not a crash of the script
            traceback.print_exc(file=sys.stderr)
            outcomes.append(Outcome(name.split("_")[0], "the check itself", 1, 0, note=f"{type(exc).__name__}: {exc}"))
        seconds[name] = round(time.monotonic() - started, 1)
        print(f"[{name}] {seconds[name]} s", file=sys.stderr, flush=True)
    return outcomes, seconds


def format_table(outcomes: list[Outcome]) -> str:
    lines = [f"{'check':<8} {'case':<46} {'tried':>6} {'ok':>6} {'lost':>5}  note", "-" * 100]
    for o in outcomes:
        mark = "" if o.ok else "  <-- FAILED"
        lines.append(f"{o.check:<8} {o.case[:46]:<46} {o.tried:>6} {o.survived:>6} {o.rows_lost:>5}  {o.note}{mark}")
    lines.append("-" * 100)
    for check, label in SUMMARY.items():
        mine = [o for o in outcomes if o.check == check]
        if mine:
            lines.append(f"{label}: {sum(o.survived for o in mine)} of {sum(o.tried for o in mine)}")
    leaks = sum(o.tried - o.survived for o in outcomes if o.check == "secrets")
    if any(o.check == "secrets" for o in outcomes):
        lines.append(f"secrets leaked: {leaks}")
    failed = [o for o in outcomes if not o.ok]
    lines.append(f"checks failed: {len(failed)} of {len(outcomes)}")
    lines.append(f"rows lost: {sum(o.rows_lost for o in outcomes)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: fewer kills, examples and samples")
    parser.add_argument("--only", help=f"comma-separated checks, of: {', '.join(CHECKS)}")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="also write the outcomes here as JSON")
    args = parser.parse_args(argv)
    names = CHECKS if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown check {unknown[0]}: choose from {', '.join(CHECKS)}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distill-reliability-") as tmp:
        work = args.work or Path(tmp)
        outcomes, seconds = run_checks(names, work, args.quick)
    table = format_table(outcomes)
    print(f"distill reliability ({'quick' if args.quick else 'full'}), {time.monotonic() - started:.0f} s")
    print(table)
    if args.json:
        payload = {
            "quick": args.quick,
            "seconds": seconds,
            "outcomes": [{**{k: getattr(o, k) for k in o.__slots__}, "ok": o.ok} for o in outcomes],
            "rows_lost": sum(o.rows_lost for o in outcomes),
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
