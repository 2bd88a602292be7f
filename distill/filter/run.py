"""`distill filter`: rejection sampling over generate outputs into an SFT-ready dataset.

Rows stream through in batches: generate errors, contaminated and duplicate prompts are dropped first, then
the verifiers run in order, each on the rows still alive (a cascade, as R1's rejection sampling: cheap rules
first, the judge last and only where rules could not decide). Every input row lands in exactly one place:
`data/` (kept, with a `messages` column for TRL) or `rejected/` (with its `filter_reason`).
"""

import heapq
import json
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.config import FilterConfig, dump_config
from distill.errors import DistillError
from distill.filter.base import Verdict
from distill.filter.registry import CORRECTNESS, build_verifier
from distill.generate.writer import ShardWriter, data_files
from distill.schema import GENERATE_SCHEMA, filter_schema

KEPT_PREFIX = "train-00000-of-00001"
REJECTED_PREFIX = "rejected-00000-of-00001"
OUTPUT_ENTRIES = {"data", "rejected", ".staging", "stats.json", "config.resolved.yaml", "report.html"}


def input_files(inputs: list[str]) -> list[Path]:
    """Parquet files of the inputs: generate output folders, their data/ folders, or files."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_file():
            files.append(path)
        elif (path / "data").is_dir():
            files.extend(data_files(path / "data"))
        elif path.is_dir():
            files.extend(data_files(path))
        else:
            raise DistillError(f"input not found: {name}")
    if not files:
        raise DistillError(f"no Parquet files in {', '.join(inputs)}: pass `distill generate` output folders")
    return files


def check_columns(files: list[Path]) -> None:
    """Every generate column must be there with its type, so a wrong input fails now and not mid-run."""
    for path in files:
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DistillError(f"{path} is not a readable Parquet file ({exc})") from None
        missing = [f.name for f in GENERATE_SCHEMA if f.name not in schema.names]
        if missing:
            raise DistillError(f"{path} lacks columns {', '.join(missing)}: is it a `distill generate` output?")
        for field in GENERATE_SCHEMA:
            if not schema.field(field.name).type.equals(field.type):
                raise DistillError(
                    f"{path}: column `{field.name}` is {schema.field(field.name).type}, expected {field.type}"
                )


def to_messages(row: dict) -> list[dict] | None:
    """TRL's conversational format: the prompt's turns, then `<think>\\n…\\n</think>\\n\\n<answer>`."""
    if row["error"] is not None or row["answer"] is None:
        return None
    messages = json.loads(row["prompt_messages"])
    reasoning = (row["reasoning"] or "").strip()
    # R1 kept trivial general queries without chain of thought: no reasoning, no think block.
    content = f"<think>\n{reasoning}\n</think>\n\n{row['answer']}" if reasoning else row["answer"]
    return messages + [{"role": "assistant", "content": content}]


def _verdict_dict(verdict: Verdict | None) -> dict | None:
    if verdict is None:
        return None
    return {"passed": verdict.passed, "reason": verdict.reason, "score": verdict.score, "details": verdict.details}


class Tally:
    """Counts for stats.json: totals, drops by reason, per-verifier and per-domain pass rates."""

    def __init__(self, names: list[str]):
        self.total = self.kept = 0
        self.dropped: Counter = Counter()
        self.verifier = {name: Counter() for name in names}
        self.domain_total: Counter = Counter()
        self.domain_kept: Counter = Counter()
        self.contamination: Counter = Counter()
        self.contaminated_examples: dict[str, list] = defaultdict(list)
        self.prompts: set[str] = set()
        self.prompts_kept: set[str] = set()

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
        if config.decontaminate:
            stats["contamination"] = dict(self.contamination)
            stats["contaminated_examples"] = dict(self.contaminated_examples)
        return stats


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def run_filter(config: FilterConfig) -> dict:
    config.validate()
    files = input_files(config.inputs)
    check_columns(files)
    out = Path(config.out)
    _check_output(out, config)
    verifiers = [build_verifier(name, options) for name, options in config.verifiers.items()]
    names = [v.name for v in verifiers]
    deduper = decontam = None
    if config.dedupe != "none":
        from distill.filter.dedupe import PromptDeduper

        deduper = PromptDeduper(threshold=config.dedupe_threshold, exact_only=config.dedupe == "exact")
    if config.decontaminate:
        from distill.filter.decontam import Decontaminator

        decontam = Decontaminator.from_sources(config.decontaminate, n=config.decontam_ngram)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dump_config(config, out / "config.resolved.yaml")
    kept_schema, rejected_schema = filter_schema(names), filter_schema(names, rejected=True)
    # With --select best, passing rows wait in .staging until every sample of their prompt has been seen.
    staged = config.select == "best"
    kept = ShardWriter(out / (".staging" if staged else "data"), KEPT_PREFIX, kept_schema)
    rejected = ShardWriter(out / "rejected", REJECTED_PREFIX, rejected_schema)
    tally = Tally(names)
    per_prompt: Counter = Counter()  # passing samples kept so far, for --max-per-prompt
    best: dict[str, list] = defaultdict(list)  # prompt -> heap of (score, id), for --select best
    total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    from tqdm import tqdm

    bar = tqdm(total=total_rows, unit="row", disable=config.quiet, file=sys.stderr, dynamic_ncols=True)
    buffers: dict[str, list] = {"kept": [], "rejected": []}

    def flush(force: bool = False) -> None:
        for key, writer in (("kept", kept), ("rejected", rejected)):
            if buffers[key] and (force or len(buffers[key]) >= config.rows_per_file):
                writer.write(buffers[key])
                buffers[key] = []

    try:
        for batch in _batches(files, config.batch_size):
            reasons = _verify_batch(batch, verifiers, deduper, decontam, config, tally)
            for row, reason in zip(batch, reasons, strict=True):
                tally.total += 1
                tally.domain_total[row["domain"]] += 1
                tally.prompts.add(row["prompt_id"])
                row["messages"] = to_messages(row)
                if reason is None and config.max_per_prompt and not staged:
                    if per_prompt[row["prompt_id"]] >= config.max_per_prompt:
                        reason = "not_selected"
                    else:
                        per_prompt[row["prompt_id"]] += 1
                if reason is None:
                    buffers["kept"].append(row)
                    if staged:
                        _remember_best(best, row, names, config.max_per_prompt or 1)
                    else:
                        _count_kept(tally, row)
                else:
                    row["filter_reason"] = reason
                    tally.dropped[reason] += 1
                    buffers["rejected"].append(row)
            flush()
            bar.update(len(batch))
        flush(force=True)
        if staged:
            _select_best(out, best, kept_schema, rejected, rejected_schema, tally, config)
    finally:
        bar.close()
        for verifier in verifiers:
            verifier.close()
    stats = tally.as_dict(config)
    # stats.json is written last: its presence marks the output complete.
    (out / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return stats


def _check_output(out: Path, config: FilterConfig) -> None:
    if out.exists() and not out.is_dir():
        raise DistillError(f"--out {out} is a file: give a folder")
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise DistillError(f"output folder {out} already exists: pass --overwrite to replace it")
        strangers = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_ENTRIES)
        if strangers:
            raise DistillError(f"refusing to overwrite {out}: it holds files distill did not write ({strangers[0]})")


def _batches(files: list[Path], batch_size: int):
    """Rows in batches, reading one record batch at a time: memory does not grow with the input."""
    columns = GENERATE_SCHEMA.names
    for path in files:
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield record_batch.to_pylist()


def _verify_batch(batch, verifiers, deduper, decontam, config: FilterConfig, tally: Tally) -> list[str | None]:
    """The drop reason of each row, or None for a row that passed everything."""
    reasons: list[str | None] = [None] * len(batch)
    unverified = [False] * len(batch)  # some verifier could not check it
    decided = [False] * len(batch)  # a correctness verifier (math, code) gave a yes or no
    for i, row in enumerate(batch):
        for name in (v.name for v in verifiers):
            row[f"verdict_{name}"] = None
        if row["error"] is not None:
            reasons[i] = "generate_error"
        elif decontam is not None and (matches := decontam.match_details(row["problem"])):
            reasons[i] = "contaminated"
            for benchmark, gram in matches.items():
                tally.contamination[benchmark] += 1
                if len(tally.contaminated_examples[benchmark]) < 20:  # which rows matched, for the report
                    tally.contaminated_examples[benchmark].append({"prompt_id": row["prompt_id"], "ngram": gram})
    if deduper is not None:
        alive = [i for i in range(len(batch)) if reasons[i] is None]
        duplicates = deduper.check_batch([(batch[i]["prompt_id"], batch[i]["problem"]) for i in alive])
        for i, duplicate in zip(alive, duplicates, strict=True):
            if duplicate is not None:
                reasons[i] = duplicate.reason
    for verifier in verifiers:
        todo = [i for i, row in enumerate(batch) if reasons[i] is None and _applies(verifier, row, decided[i])]
        if not todo:
            continue
        verdicts = verifier.verify_batch([batch[i] for i in todo])
        counts = tally.verifier[verifier.name]
        for i, verdict in zip(todo, verdicts, strict=True):
            batch[i][f"verdict_{verifier.name}"] = _verdict_dict(verdict)
            counts["checked"] += 1
            if verdict.passed is None:
                counts["unverified"] += 1
                unverified[i] = True
                if verdict.reason == "verifier_error" and not config.keep_unverified:
                    reasons[i] = "verifier_error"
                continue
            counts["passed" if verdict.passed else "failed"] += 1
            if verifier.name in CORRECTNESS or verifier.name == "judge":
                decided[i] = True
                if verdict.passed:
                    unverified[i] = False  # the judge settled what a rule could not
            if not verdict.passed:
                reasons[i] = f"{verifier.name}_{verdict.reason}"
    for i in range(len(batch)):
        if reasons[i] is None and unverified[i] and not config.keep_unverified:
            reasons[i] = "unverified"
    return reasons


def _applies(verifier, row: dict, decided: bool) -> bool:
    if row["domain"] not in verifier.domains:
        return False
    # The judge decides only what rules could not: general prompts, and answers no rule could check.
    return not (verifier.name == "judge" and decided)


def _count_kept(tally: Tally, row: dict) -> None:
    tally.kept += 1
    tally.domain_kept[row["domain"]] += 1
    tally.prompts_kept.add(row["prompt_id"])


def _row_score(row: dict, names: list[str]) -> float:
    """The score that ranks samples of one prompt for --select best: the judge's, else the last verifier's."""
    for name in (["judge"] if "judge" in names else []) + names[::-1]:
        verdict = row.get(f"verdict_{name}")
        if verdict and verdict["score"] is not None:
            return verdict["score"]
    return 0.0


def _remember_best(best: dict, row: dict, names: list[str], k: int) -> None:
    heap = best[row["prompt_id"]]
    # Ties go to the earlier sample: the id order is stable across runs.
    item = (_row_score(row, names), -row["sample_index"], row["id"])
    if len(heap) < k:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def _select_best(out, best, kept_schema, rejected, rejected_schema, tally, config) -> None:
    winners = {item[2] for heap in best.values() for item in heap}
    kept = ShardWriter(out / "data", KEPT_PREFIX, kept_schema)
    for path in data_files(out / ".staging"):
        table = pq.read_table(path)
        chosen = pc.is_in(table.column("id"), value_set=pa.array(sorted(winners)))
        keep = table.filter(chosen)
        drop = table.filter(pc.invert(chosen))
        for row in keep.to_pylist():
            _count_kept(tally, row)
        if keep.num_rows:
            kept.write(keep.to_pylist())
        if drop.num_rows:
            tally.dropped["not_selected"] += drop.num_rows
            rows = drop.to_pylist()
            for row in rows:
                row["filter_reason"] = "not_selected"
            rejected.write(rows)
    shutil.rmtree(out / ".staging")
