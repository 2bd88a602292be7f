"""`distill filter`: rejection sampling over generate outputs into an SFT-ready dataset.

Rows stream through in batches: generate errors, contaminated and duplicate prompts are dropped first, then
the verifiers run in order, each on the rows still alive (a cascade, as R1's rejection sampling: cheap rules
first, the judge last and only where rules could not decide). Every input row lands in exactly one place:
`data/` (kept, with a `messages` column for TRL) or `rejected/` (with its `filter_reason`).

Resume: every `rows_per_file` rows the buffers are written and `progress.json` records, atomically, how many
input rows are done and which output files hold them. A killed run restarted with `--resume` deletes the files
written after that record, rebuilds its counts from the files it keeps (and its dedupe memory from the input
rows already done), and goes on from the next row: no row is lost or written twice.
"""

import json
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from distill.config import FilterConfig
from distill.errors import DistillError
from distill.filter.cascade import (
    INPUTS,
    KEPT_PREFIX,
    OUTPUT_ENTRIES,
    PASS_RATES,
    PROGRESS,
    REJECTED_PREFIX,
    SHARDS,
    Tally,
    answer_coverage,
    finish_cascade,
    input_fingerprint,
    is_complete,
    load_record,
    parse_window,
    remember_best,
    run_verifier,
    screen,
    start_cascade,
    to_messages,
    window_reason,
    write_pass_rates,
)
from distill.filter.dataset.consensus import check_consensus, label, majority_golds
from distill.filter.dataset.decontam import Decontaminator
from distill.filter.dataset.dedupe import PromptDeduper
from distill.filter.dataset.inputs import parse_map, prepare_inputs, write_normalized
from distill.filter.ray_backend import run_filter_ray
from distill.filter.verifiers.registry import build_verifier
from distill.io import ShardWriter, check_output, clear_folder, data_files, write_json_atomic
from distill.schema import GENERATE_SCHEMA, filter_schema
from distill.settings import dump_config


def run_filter(config: FilterConfig) -> dict:
    config.validate()
    if config.backend == "ray":
        return run_filter_ray(config)
    mapping = parse_map(config.map)
    plans = prepare_inputs(config.inputs, config.input_format, mapping)  # every layout checked before writing
    window = parse_window(config.pass_rate)
    check_consensus(config.consensus, config.min_agreement)
    out = Path(config.out)
    # Before anything is read into or deleted from the output: it may not be, hold or lie in an input.
    check_output(
        out,
        inputs=[*config.inputs, *config.decontaminate],
        resume=config.resume,
        overwrite=config.overwrite,
        holds="a filter output",
        ours=lambda p: p.name in OUTPUT_ENTRIES,
    )
    if config.resume and (out / SHARDS).exists():
        raise DistillError(f"{out} was written by --backend ray: resume it with --backend ray, or pass --overwrite")
    if config.resume and (out / PROGRESS).exists():
        files = write_normalized(plans, mapping, out / INPUTS)  # deterministic: the same files as the killed run
    else:
        files = None
    fingerprint = input_fingerprint(config, files) if files is not None else None
    progress = _load_progress(out, fingerprint) if config.resume and fingerprint is not None else None
    if progress is not None and is_complete(out):
        shutil.rmtree(out / INPUTS, ignore_errors=True)  # written again above only to check the fingerprint
        return json.loads((out / "stats.json").read_text(encoding="utf-8"))

    verifiers = [build_verifier(name, options) for name, options in config.verifiers.items()]
    names = [v.name for v in verifiers]
    deduper = decontam = None
    if config.dedupe != "none":
        deduper = PromptDeduper(threshold=config.dedupe_threshold, exact_only=config.dedupe == "exact")
    if config.decontaminate:
        decontam = Decontaminator.from_sources(
            config.decontaminate, n=config.decontam_ngram, min_overlap=config.decontam_overlap
        )

    if progress is None:
        clear_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        files = write_normalized(plans, mapping, out / INPUTS)
        fingerprint = input_fingerprint(config, files)
        dump_config(config, out / "config.resolved.yaml")
        progress = {"settings": fingerprint, "rows_done": 0, "selected": False, "files": []}
        _save_progress(out, progress)
        unchecked = answer_coverage(files, config, clean=out)
    else:
        _drop_uncommitted(out, progress)
        unchecked = answer_coverage(files, config)
    kept_schema, rejected_schema = filter_schema(names), filter_schema(names, rejected=True)
    # With --select best, passing rows wait in .staging until every sample of their prompt has been seen.
    staged = config.select == "best" or window is not None
    kept = ShardWriter(out / (".staging" if staged else "data"), KEPT_PREFIX, kept_schema)
    rejected = ShardWriter(out / "rejected", REJECTED_PREFIX, rejected_schema)
    tally = Tally(names, decontam)
    per_prompt: Counter = Counter()  # passing samples kept so far, for --max-per-prompt
    best: dict[str, list] = defaultdict(list)  # prompt -> heap of (score, id), for --select best
    _recount(out, progress, tally, per_prompt, best, staged, config)
    total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    golds = majority_golds(files, config.min_agreement) if config.consensus == "majority" else {}

    bar = tqdm(total=total_rows, unit="row", disable=config.quiet, file=sys.stderr, dynamic_ncols=True)
    bar.update(progress["rows_done"])
    buffers: dict[str, list] = {"kept": [], "rejected": []}
    pending = 0  # input rows verified since the last commit
    buffered = 0  # bytes of text those rows hold

    def commit() -> None:
        """Write both buffers, then record that their rows are done: the point a resumed run starts from."""
        nonlocal pending
        for key, writer in (("kept", kept), ("rejected", rejected)):
            if buffers[key]:
                path = writer.write(buffers[key])
                progress["files"].append(f"{path.parent.name}/{path.name}")
                buffers[key] = []
        progress["rows_done"] += pending
        pending = 0
        _save_progress(out, progress)

    try:
        for batch, done_before in _batches(files, config.batch_size, progress["rows_done"], deduper is not None):
            if done_before:  # verified by the killed run: only the dedupe memory must see these prompts again
                screen(batch, deduper, decontam)
                continue
            label(batch, golds)
            reasons = _verify_batch(batch, verifiers, deduper, decontam, config)
            for row, reason in zip(batch, reasons, strict=True):
                row["messages"] = to_messages(row)
                if reason is None and config.max_per_prompt and not staged:
                    if per_prompt[row["prompt_id"]] >= config.max_per_prompt:
                        reason = "not_selected"
                    else:
                        per_prompt[row["prompt_id"]] += 1
                tally.count(row, reason)
                if reason is None:
                    buffers["kept"].append(row)
                    if config.select == "best":
                        remember_best(best, row, names, config.max_per_prompt or 1)
                    else:
                        tally.count_kept(row)
                else:
                    row["filter_reason"] = reason
                    buffers["rejected"].append(row)
            pending += len(batch)
            buffered += sum(row_bytes(row) for row in batch)
            if len(buffers["kept"]) + len(buffers["rejected"]) >= config.rows_per_file or buffered >= COMMIT_BYTES:
                commit()
                buffered = 0
            bar.update(len(batch))
        commit()
        if staged and not progress["selected"]:
            _select_best(out, best, kept_schema, rejected, tally, progress, window, config)
        shutil.rmtree(out / ".staging", ignore_errors=True)
        shutil.rmtree(out / INPUTS, ignore_errors=True)
        write_pass_rates(out / PASS_RATES, tally)
    finally:
        bar.close()
        for verifier in verifiers:
            verifier.close()
    stats = tally.as_dict(config) | unchecked
    # stats.json is written last: its presence marks the output complete.
    write_json_atomic(stats, out / "stats.json")
    return stats


# Text the buffers may hold before they are written, whatever --rows-per-file says: 10,000 rows of a 200 KB problem
# (an OpenR1 import; each row carries the problem in three columns) were 6 GB.
COMMIT_BYTES = 64 << 20


def row_bytes(row: dict) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, str)) + sum(
        len(m["content"] or "") for m in row.get("messages") or ()
    )


def _load_progress(out: Path, fingerprint: dict) -> dict | None:
    """The progress record of an interrupted run into `out`, or None when there is nothing to resume."""
    return load_record(out / PROGRESS, out, fingerprint)


def _save_progress(out: Path, progress: dict) -> None:
    """Atomic and durable: the record never names a file that is not complete on disk."""
    write_json_atomic(progress, out / PROGRESS, indent=None)


def _drop_uncommitted(out: Path, progress: dict) -> None:
    """Delete the files a killed run wrote after its last progress record: their rows are verified again."""
    committed = set(progress["files"])
    for folder in ("data", "rejected", ".staging"):
        for path in data_files(out / folder):
            if f"{folder}/{path.name}" not in committed:
                path.unlink()
    (out / "stats.json").unlink(missing_ok=True)


def _recount(out: Path, progress: dict, tally: Tally, per_prompt: Counter, best: dict, staged: bool, config) -> None:
    """Rebuild the counts, per-prompt quotas and best-sample heaps from the files a resumed run keeps."""
    folders = ["data", "rejected"] if progress["selected"] or not staged else [".staging", "rejected"]
    for folder in folders:
        for path in data_files(out / folder):
            for record_batch in pq.ParquetFile(path).iter_batches(batch_size=config.batch_size):
                for row in record_batch.to_pylist():
                    reason = row.get("filter_reason")
                    tally.count(row, reason)
                    if reason is not None:
                        continue
                    if folder == ".staging":
                        if config.select == "best":
                            remember_best(best, row, tally.names, config.max_per_prompt or 1)
                    else:
                        tally.count_kept(row)
                        per_prompt[row["prompt_id"]] += 1


def _batches(files: list[Path], batch_size: int, rows_done: int, replay: bool):
    """(rows, done_before) in batches, reading one record batch at a time: memory does not grow with the input.

    The first `rows_done` rows were verified by an interrupted run; they are read again only when `replay`
    (the dedupe memory must see them), and skipped unread otherwise.
    """
    seen = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        has_origin = "origin" in parquet.schema_arrow.names
        columns = GENERATE_SCHEMA.names + (["origin"] if has_origin else [])
        start = seen
        if not replay and seen + parquet.metadata.num_rows <= rows_done:
            seen += parquet.metadata.num_rows
            continue
        for record_batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            rows = record_batch.to_pylist()
            if not has_origin:  # a generate output: the file and row the sample came from
                for i, row in enumerate(rows):
                    row["origin"] = f"{path}:{seen - start + i}"
            if seen >= rows_done:
                yield rows, False
            elif seen + len(rows) <= rows_done:
                if replay:
                    yield rows, True
            else:
                cut = rows_done - seen
                if replay:
                    yield rows[:cut], True
                yield rows[cut:], False
            seen += len(rows)


def _verify_batch(batch, verifiers, deduper, decontam, config: FilterConfig) -> list[str | None]:
    """The drop reason of each row, or None for a row that passed everything; verdicts go into the rows."""
    cascade = start_cascade(batch, [verifier.name for verifier in verifiers], deduper, decontam)
    for verifier in verifiers:
        run_verifier(verifier, batch, cascade, config)
    return finish_cascade(cascade, config)


def _select_best(
    out: Path, best: dict, kept_schema, rejected: ShardWriter, tally: Tally, progress: dict, window, config
) -> None:
    """Move the winners of .staging to data/ and the others to rejected/; one progress record at the end, so a
    run killed halfway deletes what it moved and selects again from .staging, which is removed only after.

    Winners: inside the --pass-rate window (when given), then the best-scored (--select best) or the first
    --max-per-prompt samples of their prompt."""
    rates = tally.prompt_pass_rates()
    if config.select == "best":
        winners = {
            item[2] for pid, heap in best.items() if window_reason(rates.get(pid), window) is None for item in heap
        }
    else:
        winners, taken = set(), Counter()
        for path in data_files(out / ".staging"):
            for pid, sid in zip(*pq.read_table(path, columns=["prompt_id", "id"]).columns, strict=True):
                pid = pid.as_py()
                if window_reason(rates.get(pid), window) is not None:
                    continue
                if not config.max_per_prompt or taken[pid] < config.max_per_prompt:
                    taken[pid] += 1
                    winners.add(sid.as_py())
    kept = ShardWriter(out / "data", KEPT_PREFIX, kept_schema)
    written = []
    for path in data_files(out / ".staging"):
        table = pq.read_table(path)
        chosen = pc.is_in(table.column("id"), value_set=pa.array(sorted(winners), pa.string()))
        keep = table.filter(chosen)
        drop = table.filter(pc.invert(chosen))
        for row in keep.to_pylist():
            tally.count_kept(row)
        if keep.num_rows:
            written.append(kept.write(keep.to_pylist()))
        if drop.num_rows:
            rows = drop.to_pylist()
            for row in rows:
                # Outside the --pass-rate window says more than "not selected": it names which side.
                row["filter_reason"] = window_reason(rates.get(row["prompt_id"]), window) or "not_selected"
                tally.dropped[row["filter_reason"]] += 1
            written.append(rejected.write(rows))
    staged = {f".staging/{path.name}" for path in data_files(out / ".staging")}
    progress["files"] = [name for name in progress["files"] if name not in staged]
    progress["files"] += [f"{path.parent.name}/{path.name}" for path in written]
    progress["selected"] = True
    _save_progress(out, progress)
