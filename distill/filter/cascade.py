"""What both filter backends share: the output layout, the cascade of verifiers over a batch, the counts.

The local backend (run.py) and the Ray backend (ray_backend.py) each import this module and never each other: a
row is screened (generate errors, contamination, duplicate prompts), then each verifier runs on the rows still
alive that it applies to (cheap rules first, the judge last and only where no rule decided), and `Tally` counts
what was kept and why the rest was dropped, from the written rows, so a resumed run counts the same way.
"""

import heapq
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from distill.config import FilterConfig
from distill.errors import DistillError
from distill.filter.verifiers.base import Verdict, parse_domains
from distill.filter.verifiers.registry import CORRECTNESS, verifier_class
from distill.io import clear_folder, write_text_atomic
from distill.secrets import scrub_config

KEPT_PREFIX = "train-00000-of-00001"
REJECTED_PREFIX = "rejected-00000-of-00001"
PROGRESS = "progress.json"
SHARDS = ".shards"  # --backend ray: its run record and one commit marker per input shard
INPUTS = ".inputs"  # imported traces normalized to the generate layout (removed when the run completes)
PASS_RATES = "pass_rates.jsonl"
OUTPUT_ENTRIES = {
    "data", "rejected", ".staging", "stats.json", "config.resolved.yaml", "report.html", PROGRESS, INPUTS, PASS_RATES,
    SHARDS,
}  # fmt: skip
# The settings that decide which row lands where: a run may only be resumed with the same ones.
RESULT_SETTINGS = (
    "verifiers", "keep_unverified", "select", "max_per_prompt", "dedupe", "dedupe_threshold", "decontaminate",
    "decontam_ngram", "decontam_overlap", "input_format", "map", "pass_rate", "consensus", "min_agreement",
)  # fmt: skip


def to_messages(row: dict) -> list[dict] | None:
    """TRL's conversational format: the prompt's turns, then `<think>\\n…\\n</think>\\n\\n<answer>`."""
    if row["error"] is not None or row["answer"] is None:
        return None
    messages = prompt_turns(row)
    if messages is None:  # a malformed row, rejected as such
        return None
    reasoning = (row["reasoning"] or "").strip()
    # R1 kept trivial general queries without chain of thought: no reasoning, no think block.
    content = f"<think>\n{reasoning}\n</think>\n\n{row['answer']}" if reasoning else row["answer"]
    return messages + [{"role": "assistant", "content": content}]


# Fields a row cannot be written without: a null in one (a file from another tool, with the generate schema's types
# but nullable fields) becomes an empty value, and the row is read as malformed when it is one it needs.
REQUIRED_TEXT = ("id", "prompt_id", "domain", "source", "problem", "prompt_messages", "teacher", "sampling")


def prompt_turns(row: dict) -> list[dict] | None:
    """The row's prompt as a list of {role, content} turns; None when `prompt_messages` is not one."""
    try:
        turns = json.loads(row.get("prompt_messages") or "")
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in turns
    ):
        return None
    return turns


def malformed(row: dict) -> bool:
    """A row that cannot be read as a sample: no id, or a prompt that is not a list of turns. It is rejected with
    `malformed_row` (one bad row never stops a run, and a resumed run passes it too)."""
    return not row.get("id") or not row.get("prompt_id") or prompt_turns(row) is None


def fill_required(row: dict) -> None:
    """Nulls in the fields the output schema requires, as empty values, so a malformed row can be written."""
    for name in REQUIRED_TEXT:
        if row.get(name) is None:
            row[name] = ""
    if row.get("sample_index") is None:
        row["sample_index"] = 0


def _verdict_dict(verdict: Verdict | None) -> dict | None:
    if verdict is None:
        return None
    return {"passed": verdict.passed, "reason": verdict.reason, "score": verdict.score, "details": verdict.details}


class Tally:
    """Counts for stats.json: totals, drops by reason, per-verifier and per-domain pass rates.

    Everything is counted from the rows as they are written (their verdict columns and `filter_reason`), so a
    resumed run can count the rows of the files it keeps the same way and arrive at the same stats.
    """

    def __init__(self, names: list[str], decontam=None):
        self.names = names
        self.decontam = decontam
        self.total = self.kept = 0
        self.dropped: Counter = Counter()
        self.verifier = {name: Counter() for name in names}
        self.domain_total: Counter = Counter()
        self.domain_kept: Counter = Counter()
        self.gold_source: Counter = Counter()  # rows by where their gold came from: given, majority, none
        self.contamination: Counter = Counter()
        self.contaminated_examples: dict[str, list] = defaultdict(list)
        self.prompts: set[str] = set()
        self.prompts_kept: set[str] = set()
        # Per prompt: [samples, samples that passed every check] and per verifier [checked, passed].
        self.per_prompt: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.per_prompt_verifier = {name: defaultdict(lambda: [0, 0]) for name in names}

    def count(self, row: dict, reason: str | None) -> None:
        """One input row, verified: `reason` is why it was dropped, None when it passed."""
        self.total += 1
        self.domain_total[row["domain"]] += 1
        self.gold_source[row.get("gold_source") or "none"] += 1
        self.prompts.add(row["prompt_id"])
        samples = self.per_prompt[row["prompt_id"]]
        samples[0] += 1
        # Passed verification: kept, or dropped only later by selection or the pass-rate window.
        samples[1] += reason is None or reason == "not_selected" or reason.startswith("pass_rate_")
        for name in self.names:
            verdict = row.get(f"verdict_{name}")
            if verdict is None:
                continue
            counts = self.verifier[name]
            counts["checked"] += 1
            mine = self.per_prompt_verifier[name][row["prompt_id"]]
            mine[0] += verdict["passed"] is not None
            mine[1] += bool(verdict["passed"])
            counts["unverified" if verdict["passed"] is None else "passed" if verdict["passed"] else "failed"] += 1
        if reason is None:
            return
        self.dropped[reason] += 1
        if reason == "contaminated":
            for benchmark, gram in self.decontam.match_details(row["problem"]).items():
                self.contamination[benchmark] += 1
                if len(self.contaminated_examples[benchmark]) < 20:  # which rows matched, for the report
                    self.contaminated_examples[benchmark].append({"prompt_id": row["prompt_id"], "ngram": gram})

    def count_kept(self, row: dict) -> None:
        self.kept += 1
        self.domain_kept[row["domain"]] += 1
        self.prompts_kept.add(row["prompt_id"])

    def prompt_pass_rates(self) -> dict[str, float]:
        """Each prompt's share of samples that passed every check (what --pass-rate selects on)."""
        return {pid: passed / n for pid, (n, passed) in self.per_prompt.items() if n}

    def pass_rate_histogram(self) -> dict:
        """Prompts per pass-rate bucket (0, (0,0.2], ..., (0.8,1) and 1), overall and per verifier."""

        def buckets(rates) -> dict[str, int]:
            counts = Counter()
            for rate in rates:
                counts[pass_rate_bucket(rate)] += 1
            return {b: counts[b] for b in PASS_RATE_BUCKETS}

        per_verifier = {
            name: buckets(p / c for c, p in prompts.values() if c)
            for name, prompts in self.per_prompt_verifier.items()
        }
        return {"all": buckets(self.prompt_pass_rates().values()), "verifiers": per_verifier}

    def as_dict(self, config: FilterConfig) -> dict:
        stats = {"total": self.total, "kept": self.kept, "rejected": self.total - self.kept}
        stats.update({f"dropped_{reason}": n for reason, n in sorted(self.dropped.items())})
        stats["verifiers"] = {
            name: {**counts, "pass_rate": _rate(counts["passed"], counts["checked"])}
            for name, counts in ((n, {k: c[k] for k in ("checked", "passed", "failed", "unverified")})
                                 for n, c in self.verifier.items())
        }  # fmt: skip
        stats["pass_rate"] = {name: v["pass_rate"] for name, v in stats["verifiers"].items()}
        stats["pass_rate_by_domain"] = {d: _rate(self.domain_kept[d], n) for d, n in sorted(self.domain_total.items())}
        stats["prompts"] = len(self.prompts)
        stats["prompts_without_kept_sample"] = len(self.prompts - self.prompts_kept)
        stats["prompt_pass_rate_histogram"] = self.pass_rate_histogram()
        stats["gold_source"] = {k: self.gold_source[k] for k in ("given", "majority", "none")}
        if config.consensus != "none":
            stats["consensus"] = {"method": config.consensus, "min_agreement": config.min_agreement}
        if config.pass_rate:
            stats["pass_rate_window"] = config.pass_rate
        if config.decontaminate:
            stats["contamination"] = dict(self.contamination)
            stats["contaminated_examples"] = dict(self.contaminated_examples)
        return stats


PASS_RATE_BUCKETS = ("0", "0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1", "1")


def pass_rate_bucket(rate: float) -> str:
    if rate <= 0:
        return "0"
    if rate >= 1:
        return "1"
    return PASS_RATE_BUCKETS[1 + min(4, int(rate * 5 - 1e-9))]


def parse_window(text: str | None) -> tuple[float, float] | None:
    """`--pass-rate 0.2:0.8` as (0.2, 0.8): prompts whose pass rate lies outside are dropped."""
    if not text:
        return None
    low, sep, high = str(text).partition(":")
    try:
        window = (float(low) if low.strip() else 0.0, float(high) if high.strip() else 1.0)
    except ValueError:
        window = None
    if not sep or window is None or not 0 <= window[0] <= window[1] <= 1:
        raise DistillError(f"--pass-rate takes MIN:MAX between 0 and 1 (e.g. 0.2:0.8), got `{text}`")
    return window


def window_reason(rate: float | None, window) -> str | None:
    """Why a prompt with this pass rate falls outside the window (None: inside, or no window)."""
    if window is None or rate is None:
        return None
    if rate < window[0]:
        return "pass_rate_too_hard"
    if rate > window[1]:
        return "pass_rate_too_easy"
    return None


def write_pass_rates(path: Path, tally: Tally) -> None:
    """One line per prompt: samples, passed, pass rate and the pass rate per verifier (of the samples it checked)."""
    lines = []
    for pid, (n, passed) in sorted(tally.per_prompt.items()):
        verifiers = {}
        for name, prompts in tally.per_prompt_verifier.items():
            if pid in prompts and prompts[pid][0]:
                verifiers[name] = round(prompts[pid][1] / prompts[pid][0], 4)
        record = {"prompt_id": pid, "samples": n, "passed": passed, "pass_rate": _rate(passed, n)}
        lines.append(json.dumps({**record, "verifiers": verifiers}) + "\n")
    write_text_atomic("".join(lines), path, durable=False)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def is_complete(out: str | Path) -> bool:
    """stats.json is written last: its presence marks the output complete."""
    return (Path(out) / "stats.json").exists()


def input_fingerprint(config: FilterConfig, files: list[Path]) -> dict:
    """What decides the output: the input files (and their row counts) and the settings that place rows."""
    settings = scrub_config({name: getattr(config, name) for name in RESULT_SETTINGS})  # kept on disk: no keys
    inputs = [[str(path.resolve()), pq.ParquetFile(path).metadata.num_rows] for path in files]
    return json.loads(json.dumps({**settings, "inputs": inputs}))  # the JSON form, as read back on resume


def load_record(path: Path, out: Path, fingerprint: dict) -> dict | None:
    """A resume record (`{"settings": ...}`) checked against this run's settings; None when there is none."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        before = record["settings"]
    except (ValueError, KeyError, TypeError):
        raise DistillError(f"{path} is damaged: pass --overwrite to filter {out} again from the start") from None
    for name, value in fingerprint.items():
        if before.get(name) != value:
            what = "input files" if name == "inputs" else f"`{name}`"
            raise DistillError(
                f"cannot resume {out}: it was made with other {what} than this run; "
                "pass the same ones, or --overwrite to start again"
            )
    return record


def answer_coverage(files: list[Path], config: FilterConfig, clean: Path | None = None) -> dict:
    """Rows that none of the run's answer checks (math, code, judge) applies to, by domain: `{"unchecked": ...}` for
    stats.json, and one warning line when there are some; an error when that is every row.

    Such rows pass on the rules alone, which is right for the general rows of a mixed set and wrong when the user
    asked `--verifiers math` of a file whose rows all came in as general: that kept 5,276 GSM8K answers unchecked.
    `clean`: the output folder of a fresh run, emptied again before the error (nothing in it is worth keeping).
    """
    checks = {}
    for name, options in config.verifiers.items():
        if name in CORRECTNESS or name == "judge":
            domains = (options or {}).get("domains")
            checks[name] = set(parse_domains(domains, name) if domains is not None else verifier_class(name).domains)
    if not checks:
        return {}
    covered = set().union(*checks.values())
    by_domain: Counter = Counter()
    for path in files:
        by_domain.update(pq.read_table(path, columns=["domain"]).column("domain").to_pylist())
    total = sum(by_domain.values())
    unchecked = {domain: n for domain, n in sorted(by_domain.items()) if domain not in covered}
    rows = sum(unchecked.values())
    asked = ",".join(checks)
    what = ", ".join(f"{domain} {n}" for domain, n in unchecked.items())
    fix = (
        "give the rows a gold answer (--map gold=COLUMN, which makes an imported row math) or a domain "
        "(--map domain=COLUMN)"
    )
    if total and rows == total:
        if clean is not None:
            clear_folder(clean)
        raise DistillError(
            f"--verifiers {asked} check domains {', '.join(sorted(covered))}, and none of the {total} rows is one "
            f"({what}), so nothing would be checked: {fix}"
        )
    if rows:
        print(
            f"warning: {rows} of {total} rows ({what}) are outside what {asked} checks and pass on the other "
            f"verifiers alone (stats.json: unchecked); to check them, {fix}",
            file=sys.stderr,
        )
    return {"unchecked": {"rows": rows, "by_domain": unchecked}}


def screen(batch: list[dict], deduper, decontam) -> list[str | None]:
    """Drop reasons that come before any verifier: generate errors, contamination, duplicate prompts."""
    reasons: list[str | None] = [None] * len(batch)
    for i, row in enumerate(batch):
        fill_required(row)
        if row["error"] is not None:
            reasons[i] = "generate_error"
        elif decontam is not None and decontam.match_details(row["problem"]):
            reasons[i] = "contaminated"
    if deduper is not None:
        alive = [i for i in range(len(batch)) if reasons[i] is None]
        duplicates = deduper.check_batch([(batch[i]["prompt_id"], batch[i]["problem"]) for i in alive])
        for i, duplicate in zip(alive, duplicates, strict=True):
            if duplicate is not None:
                reasons[i] = duplicate.reason
    return reasons


@dataclass(slots=True)
class Cascade:
    """Where each row of a batch stands between verifiers (the Ray backend carries it in columns)."""

    reasons: list[str | None]  # why it is dropped so far; None: alive
    unverified: list[bool]  # some verifier could not check it
    decided: list[bool]  # a correctness verifier (math, code) or the judge gave a yes or no


def start_cascade(batch: list[dict], names: list[str], deduper, decontam) -> Cascade:
    """Empty verdict columns, then the drops that come before any verifier."""
    for row in batch:
        for name in names:
            row[f"verdict_{name}"] = None
    reasons = screen(batch, deduper, decontam)
    for i, row in enumerate(batch):
        if malformed(row):
            reasons[i] = "malformed_row"
    return Cascade(reasons, [False] * len(batch), [False] * len(batch))


def run_verifier(verifier, batch: list[dict], cascade: Cascade, config: FilterConfig) -> None:
    """One verifier over the rows still alive that it applies to: their verdicts, and the cascade moved on."""
    reasons, unverified, decided = cascade.reasons, cascade.unverified, cascade.decided
    todo = [i for i, row in enumerate(batch) if reasons[i] is None and _applies(verifier, row, decided[i])]
    if not todo:
        return
    verdicts = verifier.verify_batch([batch[i] for i in todo])
    for i, verdict in zip(todo, verdicts, strict=True):
        batch[i][f"verdict_{verifier.name}"] = _verdict_dict(verdict)
        if verdict.passed is None:
            unverified[i] = True
            if verdict.reason == "verifier_error" and not config.keep_unverified:
                reasons[i] = "verifier_error"
            continue
        if verifier.name in CORRECTNESS or verifier.name == "judge":
            decided[i] = True
            if verdict.passed:
                unverified[i] = False  # the judge settled what a rule could not
        if not verdict.passed:
            reasons[i] = f"{verifier.name}_{verdict.reason}"


def finish_cascade(cascade: Cascade, config: FilterConfig) -> list[str | None]:
    """The final drop reasons: a row no verifier could check is dropped unless --keep-unverified."""
    reasons = list(cascade.reasons)
    for i in range(len(reasons)):
        if reasons[i] is None and cascade.unverified[i] and not config.keep_unverified:
            reasons[i] = "unverified"
    return reasons


def _applies(verifier, row: dict, decided: bool) -> bool:
    if row["domain"] not in verifier.domains:
        return False
    # The judge decides only what rules could not: general prompts, and answers no rule could check.
    return not (verifier.name == "judge" and decided)


def _row_score(row: dict, names: list[str]) -> float:
    """The score that ranks samples of one prompt for --select best: the judge's, else the last verifier's."""
    for name in (["judge"] if "judge" in names else []) + names[::-1]:
        verdict = row.get(f"verdict_{name}")
        if verdict and verdict["score"] is not None:
            return verdict["score"]
    return 0.0


def remember_best(best: dict, row: dict, names: list[str], k: int) -> None:
    heap = best[row["prompt_id"]]
    # Ties go to the earlier sample: the id order is stable across runs.
    item = (_row_score(row, names), -row["sample_index"], row["id"])
    if len(heap) < k:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)
