"""How well truncation is read from the text: complete traces, and the same traces cut at a random token.

An imported trace rarely keeps its finish_reason, so `distill filter` reads from the text whether it was cut
(distill.generate.parse.truncation_from_text). This cuts complete traces at a uniformly random token (Qwen2.5's
tokenizer, the local teacher's) and reports the share of cut traces the rule catches and the share of complete
traces it wrongly flags, next to the rule it replaced. Target: >= 90% caught, <= 2% wrongly flagged.

Complete traces, all offline (tests/data/README.md names sources and licences):
- math500-r1: MATH-500's worked solutions shaped as R1 traces: the solution is the reasoning, its last paragraph
  the answer (R1's answer restates the final step); most cuts land in the reasoning, where the open `<think>`
  gives them away.
- math500-plain, gsm8k-plain: the same worked solutions (GSM8K without its `<<...>>` calculator notes) as plain
  answers without a think block, as API dumps hold them: every cut lands in the answer, the hard case.
- qwen-plain: answers the local teacher (Qwen2.5-Coder-0.5B-Instruct) wrote to MATH-500 and GSM8K problems that
  stopped on their own (finish_reason "stop"), from tests/data/qwen_answers.jsonl.gz. Its answers that ran into
  the 512-token budget (finish_reason "length") are real cuts: the last line reports the share of them caught.

Each complete trace is one negative and `--cuts` cut copies (positives). Run: `python benchmarks/truncation.py`
(about a minute); `--markdown` prints the table for RESULTS.md.
"""

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

from distill.generate.parse import parse_trace, truncation_from_text

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
CALCULATOR_RE = re.compile(r"<<[^>]*>>")


def _rows(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def complete_traces() -> dict[str, list[str]]:
    math500 = _rows("math500.jsonl.gz")
    gsm8k = _rows("gsm8k_test.jsonl.gz")
    families = {
        "math500-r1": [
            f"<think>\n{r['solution'].strip()}\n</think>\n\n{r['solution'].strip().split(chr(10) * 2)[-1]}"
            for r in math500
        ],
        "math500-plain": [r["solution"].strip() for r in math500],
        "gsm8k-plain": [CALCULATOR_RE.sub("", r["answer"]).strip() for r in gsm8k],
    }
    answers = DATA / "qwen_answers.jsonl.gz"
    if answers.exists():
        families["qwen-plain"] = [r["completion"].strip() for r in _rows(answers.name) if r["finish_reason"] == "stop"]
    return families


def budget_cuts() -> list[str]:
    """The teacher's answers that hit the token budget: cut where a real run cuts them."""
    answers = DATA / "qwen_answers.jsonl.gz"
    return [r["completion"] for r in _rows(answers.name) if r["finish_reason"] == "length"] if answers.exists() else []


def previous_rule(completion: str) -> bool:
    """The rule before issue 25 (kept here to compare): open brace or $$, a trailing comma or operator, a word no
    sentence ends on."""
    dangling = set(
        "a an the and or but of to in on at by for with from is are was were be that which this as if then so "
        "because since therefore thus we let".split()
    )
    trace = parse_trace(completion)
    if not trace.think_closed:
        return True
    answer = trace.answer.rstrip()
    if not answer:
        return bool(trace.reasoning)
    if answer.count("{") > answer.count("}") or answer.count("$$") % 2:
        return True
    if re.search(r"[,:;=+\-*/^(\[{\\]$", answer):
        return True
    last_word = re.search(r"([A-Za-z]+)$", answer)
    return bool(last_word) and last_word.group(1).lower() in dangling


def tokenizer():
    from transformers import AutoTokenizer  # heavy; only this benchmark needs it

    from distill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("qwen2.5-coder-0.5b"))


def measure(cuts: int, seed: int) -> dict:
    tok = tokenizer()
    rnd = random.Random(seed)
    results = {}
    for family, traces in complete_traces().items():
        counts = dict(
            complete=0, flagged=0, cut=0, caught=0, old_caught=0, old_flagged=0, in_answer=0, answer_caught=0
        )
        flagged_examples, missed_examples = [], []
        for text in traces:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) < 2:
                continue
            counts["complete"] += 1
            if truncation_from_text(text):
                counts["flagged"] += 1
                if len(flagged_examples) < 5:
                    flagged_examples.append(text[-80:])
            counts["old_flagged"] += previous_rule(text)
            for _ in range(cuts):
                cut = tok.decode(ids[: rnd.randrange(1, len(ids))])
                caught = truncation_from_text(cut) is not None
                counts["cut"] += 1
                counts["caught"] += caught
                counts["old_caught"] += previous_rule(cut)
                if not caught and len(missed_examples) < 8:
                    missed_examples.append(cut[-60:])
                if parse_trace(cut).think_closed:  # the cut fell in the answer: the open <think> does not help
                    counts["in_answer"] += 1
                    counts["answer_caught"] += caught
        counts["flagged_examples"], counts["missed_examples"] = flagged_examples, missed_examples
        results[family] = counts
    return results


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def table(results: dict, markdown: bool) -> str:
    head = ["traces", "complete", "wrongly flagged", "(before)", "cut", "caught", "(before)", "cut in answer",
            "caught there"]  # fmt: skip
    rows = []
    total = {k: 0 for k in ("complete", "flagged", "old_flagged", "cut", "caught", "old_caught", "in_answer",
                            "answer_caught")}  # fmt: skip
    for family, c in list(results.items()) + [("all", None)]:
        c = c or total
        rows.append([family, c["complete"], share(c["flagged"], c["complete"]), share(c["old_flagged"], c["complete"]),
                     c["cut"], share(c["caught"], c["cut"]), share(c["old_caught"], c["cut"]), c["in_answer"],
                     share(c["answer_caught"], c["in_answer"])])  # fmt: skip
        if family != "all":
            for key in total:
                total[key] += c[key]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    else:
        lines = ["  ".join(f"{x!s:>15}" for x in head)] + ["  ".join(f"{x!s:>15}" for x in row) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=3, help="Cut copies per complete trace.  [default: 3]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--show", action="store_true", help="Print the ends of wrongly flagged and missed traces.")
    args = parser.parse_args()
    start = time.monotonic()
    results = measure(args.cuts, args.seed)
    print(table(results, args.markdown))
    cuts = budget_cuts()
    if cuts:
        caught = sum(truncation_from_text(text) is not None for text in cuts)
        before = sum(previous_rule(text) for text in cuts)
        print(f"answers cut by the token budget (qwen, finish_reason length): {caught} of {len(cuts)} caught "
              f"({share(caught, len(cuts))}; before: {share(before, len(cuts))})")  # fmt: skip
    print(f"({time.monotonic() - start:.0f} s, seed {args.seed}, {args.cuts} cuts per trace)", file=sys.stderr)
    if args.show:
        for family, counts in results.items():
            for example in counts["flagged_examples"]:
                print(f"{family} flagged: ...{example!r}")
            for example in counts["missed_examples"]:
                print(f"{family} missed: ...{example!r}")


if __name__ == "__main__":
    main()
