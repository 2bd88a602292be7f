"""`distill filter --backend ray`: the same filter on Ray Data, from one machine to a cluster, with the same output.

The pipeline (each step is the code the local backend runs, from filter/cascade.py, so the two cannot drift apart):

1. Dedupe, when asked (`--dedupe`): workers hash the prompts (`PromptDeduper.hash_batch`: exact keys, MinHash
   band keys and 16-bit signatures, the costly part); the driver gathers the hashes in input order and decides
   (`PromptDeduper.check_hashed`: the LSH lookups and the first-kept-wins rule, exactly as one process decides).
   Decontamination (word n-grams against small benchmarks) is a lookup per word and runs in every worker.
2. Verification: Parquet read by Ray Data, then one `map_batches` stage per costly verifier (math, code, judge)
   in the configured order, each with its own actor pool and CPU budget; cheap rules (format, language,
   repetition, length) run inside a neighbouring stage unless `ray_stages` names them (`stage_groups`). The first
   stage screens (generate errors, contamination, duplicate prompts: `screen`), every stage runs its verifier
   over the rows still alive (`run_verifier`), the last one settles the reasons (`finish_cascade`) and builds
   the `messages` column (`to_messages`). The cascade's state travels between stages as columns.
   - Code runs on the nodes that advertise a `sandbox` resource (`ray start --resources='{"sandbox": 16}'`),
     one unit per sandbox slot; a cluster that advertises none runs it anywhere, where CodeVerifier's own
     bwrap check refuses a node without bubblewrap.
   - The judge (an OpenAI-compatible server) is capped at `ray_judge_rps` requests per second over all its
     actors by one token-bucket actor.
3. Output: the driver receives the rows in input order (`preserve_order`) and writes one kept and one rejected
   file per input shard under a deterministic name (`data/train-00003-of-00012.parquet`,
   `rejected/rejected-00003-of-00012.parquet`) through our atomic writer, then the shard's commit marker
   `.shards/shard-00003.json` holding its counts. Ray's own `write_parquet` names files by run and task and
   commits nothing per shard, so a rerun could neither find nor skip finished shards; writing costs the driver
   one Parquet encode per row, small next to verification.
4. `--select best` and `--max-per-prompt` need every sample of a prompt: passing rows wait in `.staging/`, then
   the driver picks the winners (the local rule) and writes `data/` and `rejected/not-selected-*` per shard.
5. stats.json: the shards' counts merged in input order, the same numbers and order as the local backend.

Resume (`--resume`): shards with a marker are skipped; files no marker names (a killed run's last shard) are
deleted and that shard is verified again. Ray's checkpointing is not used: it is at-least-once and needs a
shared file system; the markers need only the driver's disk.
"""

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from distill.config import FilterConfig
from distill.errors import DistillError, MissingDependency, near_hint
from distill.filter import cascade
from distill.filter.dataset.consensus import label
from distill.filter.dataset.decontam import Decontaminator
from distill.filter.dataset.dedupe import Duplicate, PromptDeduper, PromptHashes
from distill.filter.dataset.inputs import parse_map, prepare_inputs, write_normalized
from distill.filter.verifiers.registry import build_verifier, verifier_class
from distill.io import check_output, clear_folder, data_files, fsync_dir, write_json_atomic, write_table_atomic
from distill.schema import GENERATE_SCHEMA, MESSAGES_TYPE, VERDICT_TYPE, filter_schema
from distill.settings import dump_config

RECORD = "run.json"
SHARD = "_shard"  # the input shard of each row, added by the reader
STATE = ("_reason", "_unverified", "_decided")  # the cascade, carried between verifier stages
STATE_TYPES = (pa.string(), pa.bool_(), pa.bool_())
CHEAP = ("format", "language", "repetition", "length")  # rules that take microseconds a row
STAGE_KEYS = ("num_cpus", "max_actors", "batch_size")
INSTALL = "pip install 'distill[ray]'"


def run_filter_ray(config: FilterConfig) -> dict:
    if config.pass_rate or config.consensus != "none":
        raise DistillError("--pass-rate and --consensus are not supported with --backend ray yet: use --backend local")
    mapping = parse_map(config.map)
    plans = prepare_inputs(config.inputs, config.input_format, mapping)  # every layout checked before writing
    out = Path(config.out)
    ours = lambda p: p.name in cascade.OUTPUT_ENTRIES  # noqa: E731
    check_output(out, inputs=[*config.inputs, *config.decontaminate], resume=config.resume,
                 overwrite=config.overwrite, holds="a filter output", ours=ours)  # fmt: skip
    if config.resume and (out / cascade.PROGRESS).exists():
        raise DistillError(f"{out} was written by the local backend: resume it without --backend ray, or --overwrite")
    record = None
    if config.resume and (out / cascade.SHARDS / RECORD).exists():
        # The same normalized files as the killed run (deterministic), then the same fingerprint
        files = write_normalized(plans, mapping, out / cascade.INPUTS)
        record = _load_record(out, cascade.input_fingerprint(config, files))
        if cascade.is_complete(out):
            shutil.rmtree(out / cascade.INPUTS, ignore_errors=True)
            return json.loads((out / "stats.json").read_text(encoding="utf-8"))
    names = [verifier_class(name).name for name in config.verifiers]
    for name, options in config.ray_stages.items():
        if name not in config.verifiers:
            raise DistillError(
                f"ray_stages names `{name}`, which is not a verifier of this run{near_hint(name, names)}"
            )
        for key in options:
            if key not in STAGE_KEYS:
                raise DistillError(f"ray_stages.{name}: unknown key `{key}`{near_hint(key, STAGE_KEYS)}")
    ray = _connect(config)

    decontam = None
    if config.decontaminate:
        decontam = Decontaminator.from_sources(
            config.decontaminate, n=config.decontam_ngram, min_overlap=config.decontam_overlap
        )
    if record is None:
        clear_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        files = write_normalized(plans, mapping, out / cascade.INPUTS)
        fingerprint = cascade.input_fingerprint(config, files)
        (out / cascade.SHARDS).mkdir()
        dump_config(config, out / "config.resolved.yaml")
        _save_json(out / cascade.SHARDS / RECORD, {"backend": "ray", "settings": fingerprint, "shards": len(files)})
    unchecked = cascade.answer_coverage(files, config, clean=out if record is None else None)
    markers = _committed(out, len(files))
    staged = config.select == "best" or config.max_per_prompt is not None
    pending = [i for i in range(len(files)) if i not in markers]

    duplicates = _dedupe(ray, files, decontam, config) if config.dedupe != "none" and pending else {}
    if pending:
        context = ray.put({"duplicates": duplicates, "decontam": decontam, "config": config, "names": names})
        _verify(ray, files, pending, names, context, config, out, staged, decontam)
    if staged:
        _select(out, files, names, config)
    shutil.rmtree(out / ".staging", ignore_errors=True)
    # The shards' counts merged in input order, whatever order they finished in: the local backend's stats.
    tally = cascade.Tally(names, decontam)
    for i in range(len(files)):
        _merge(tally, _read_json(out / cascade.SHARDS / f"shard-{i:05d}.json")["tally"])
    if staged:
        _merge(tally, _read_json(out / cascade.SHARDS / "selected.json")["tally"])
    shutil.rmtree(out / cascade.INPUTS, ignore_errors=True)
    cascade.write_pass_rates(out / cascade.PASS_RATES, tally)
    stats = tally.as_dict(config) | unchecked
    # stats.json is written last: its presence marks the output complete.
    write_json_atomic(stats, out / "stats.json")
    return stats


def _connect(config: FilterConfig):
    try:
        import ray  # the optional [ray] extra; only with --backend ray
    except ImportError:
        raise MissingDependency("ray", INSTALL) from None
    if not ray.is_initialized():
        # Without an address: a Ray on this machine, started here and stopped at exit.
        ray.init(address=config.ray_address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows reach the driver in input order: shard by shard
    context.enable_progress_bars = False  # ours shows rows/s; Ray's would print one bar per stage
    if config.quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


# --------------------------------------------------------------------------------------------------------------
# dedupe: hashing on the workers, deciding on the driver
# --------------------------------------------------------------------------------------------------------------


class _PromptHasher:
    """Ray Data stage: the dedupe hashes of the rows that reach the deduper (no generate error, not contaminated)."""

    def __init__(self, threshold: float, exact_only: bool, decontam):
        self.deduper = PromptDeduper(threshold=threshold, exact_only=exact_only)
        self.decontam = decontam

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.select(["prompt_id", "problem", "error"]).to_pylist()
        alive = [reason is None for reason in cascade.screen(rows, None, self.decontam)]
        hashes = self.deduper.hash_batch([row["problem"] for row in rows])
        columns = {"prompt_id": table.column("prompt_id"), "alive": pa.array(alive), "exact": hashes.exact}
        if hashes.keys is not None:
            columns["keys"] = pa.FixedSizeListArray.from_arrays(hashes.keys.ravel(), hashes.keys.shape[1])
            columns["signatures"] = pa.FixedSizeListArray.from_arrays(
                hashes.signatures.ravel(), hashes.signatures.shape[1]
            )
        return pa.table(columns)


def _dedupe(ray, files: list[Path], decontam, config: FilterConfig) -> dict[str, str]:
    """prompt id -> drop reason of every duplicate prompt in the whole input, decided as the local backend does.

    Every shard is read, finished ones too: a prompt of a pending shard may duplicate one of a finished shard.
    """
    deduper = PromptDeduper(threshold=config.dedupe_threshold, exact_only=config.dedupe == "exact")
    hashed = _read(ray, files, ["prompt_id", "problem", "error"]).map_batches(
        _PromptHasher,
        fn_constructor_kwargs={"threshold": config.dedupe_threshold, "exact_only": deduper.exact_only,
                               "decontam": decontam},
        batch_format="pyarrow", batch_size=config.batch_size,
        num_cpus=min(1.0, max(MIN_STAGE_CPUS, _cluster_cpus(ray) - READ_RESERVE)),  # room for the reads
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(_cluster_cpus(ray) - READ_RESERVE))),
    )  # fmt: skip
    duplicates: dict[str, str] = {}

    def matrix(column) -> np.ndarray:
        array = column.combine_chunks()
        return array.flatten().to_numpy().reshape(len(array), array.type.list_size)

    for table in hashed.iter_batches(batch_size=None, batch_format="pyarrow"):
        table = table.filter(table.column("alive"))
        if not table.num_rows:
            continue
        near = "keys" in table.column_names
        hashes = PromptHashes(
            table.column("exact").to_numpy(),
            matrix(table.column("keys")) if near else None,
            matrix(table.column("signatures")) if near else None,
        )
        prompt_ids = table.column("prompt_id").to_pylist()
        for prompt_id, duplicate in zip(prompt_ids, deduper.check_hashed(prompt_ids, hashes), strict=True):
            if duplicate is not None:
                duplicates[prompt_id] = duplicate.reason
    return duplicates


class _Decided:
    """The deduper's answers, decided before verification: what `screen` asks a deduper, answered from a dict."""

    def __init__(self, duplicates: dict[str, str]):
        self._answers = {pid: Duplicate(reason, "", 0.0) for pid, reason in duplicates.items()}

    def check_batch(self, items):
        return [self._answers.get(prompt_id) for prompt_id, _ in items]


# --------------------------------------------------------------------------------------------------------------
# verification: one Ray Data stage per verifier
# --------------------------------------------------------------------------------------------------------------


class _VerifierStage:
    """Ray Data stage: verifiers of the cascade, in order, over an Arrow batch (an actor: their pools live on).

    Usually one verifier; cheap rules ride along with a neighbour (`stage_groups`).
    """

    def __init__(self, stage: list, first: bool, last: bool, context: list, limiter=None):
        import ray  # the optional [ray] extra; only with --backend ray

        shared = ray.get(context[0])
        self.config: FilterConfig = shared["config"]
        self.names: list[str] = shared["names"]
        self.decontam = shared["decontam"]
        self.deduper = _Decided(shared["duplicates"]) if self.config.dedupe != "none" else None
        self.verifiers = [build_verifier(name, options) for name, options in stage]
        if limiter is not None:
            self.verifiers = [_RateLimited(v, limiter) if name == "judge" else v
                              for (name, _), v in zip(stage, self.verifiers, strict=True)]  # fmt: skip
        self.first, self.last = first, last

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        if self.first:
            label(rows, {})  # gold_source: given or none (no --consensus on this backend)
            where = cascade.start_cascade(rows, self.names, self.deduper, self.decontam)
        else:
            where = cascade.Cascade(*(table.column(name).to_pylist() for name in STATE))
        for verifier in self.verifiers:
            cascade.run_verifier(verifier, rows, where, self.config)
        base = table.select([*GENERATE_SCHEMA.names, "origin", SHARD])
        base = base.append_column("gold_source", pa.array([row["gold_source"] for row in rows], pa.string()))
        verdicts = {f"verdict_{n}": pa.array([r[f"verdict_{n}"] for r in rows], VERDICT_TYPE) for n in self.names}
        if self.last:
            reasons = cascade.finish_cascade(where, self.config)
            extra = {"messages": pa.array([cascade.to_messages(row) for row in rows], MESSAGES_TYPE), **verdicts}
            extra["filter_reason"] = pa.array(reasons, pa.string())
        else:
            state = (where.reasons, where.unverified, where.decided)
            extra = {**verdicts, **{n: pa.array(v, t) for n, v, t in zip(STATE, state, STATE_TYPES, strict=True)}}
        for name, column in extra.items():
            base = base.append_column(name, column)
        return base

    def __del__(self):
        for verifier in getattr(self, "verifiers", []):
            try:
                verifier.close()
            except Exception:  # noqa: BLE001 - an actor going away must not fail on its pools' shutdown
                pass


def stage_groups(verifiers: list[str], own: dict) -> list[list[str]]:
    """The verifiers (cascade order) grouped into Ray Data stages.

    Every verifier that costs real time (math, code, judge, any other) leads a stage of its own, with its own
    actors and CPU budget. A cheap rule (microseconds a row) rides in the stage before it, or the first one when
    it comes first: a stage of its own would cost a whole batch's Arrow-to-rows round trip and an actor pool for
    almost no work (measured: 0.5x the local backend with math and format as two stages, see
    benchmarks/RESULTS.md). A cheap rule named in `ray_stages` gets its own stage, as asked; so do cheap rules
    when nothing else runs.
    """
    groups: list[list[str]] = []
    waiting: list[str] = []  # cheap rules before the first stage of their own
    for name in verifiers:
        if name in CHEAP and name not in own:
            (groups[-1] if groups else waiting).append(name)
        else:
            groups.append(waiting + [name])
            waiting = []
    if waiting:
        groups.append(waiting)
    return groups


class _RateLimited:
    """A verifier whose requests wait for tokens of a shared bucket: the judge's server sees at most `rps`."""

    def __init__(self, verifier, limiter):
        self.inner, self.limiter = verifier, limiter
        self.name, self.domains = verifier.name, verifier.domains
        self.chunk = max(1, getattr(verifier, "batch_size", 8))

    def verify_batch(self, samples):
        import ray  # the optional [ray] extra; only with --backend ray

        verdicts = []
        for start in range(0, len(samples), self.chunk):
            part = samples[start : start + self.chunk]
            time.sleep(ray.get(self.limiter.acquire.remote(len(part))))
            verdicts.extend(self.inner.verify_batch(part))
        return verdicts

    def close(self):
        self.inner.close()


class TokenBucket:
    """Requests per second for a whole cluster: each caller is told how long to wait before sending n requests."""

    def __init__(self, rps: float):
        self.rps = rps
        self.next_free = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self, n: int) -> float:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rps
            return start - now


# CPUs no actor may take: the Parquet read tasks (0.25 CPU each) need them. Actors holding every CPU starved the
# reads, and the run hung (`--verifiers code,math` on 2 CPUs, one worker each).
READ_RESERVE = 0.5
MIN_STAGE_CPUS = 0.25


def stage_demand(name: str, options: dict, cpus: float) -> tuple[dict, float, int]:
    """(verifier options, CPUs one actor of this stage would like, actors it would like): each verifier's own pool
    and CPU budget, before the cluster's size is applied (`plan_stages`)."""
    options = dict(options)
    if name in CHEAP:
        return options, 0.25, max(1, int(cpus // 4))
    if name == "math":
        # Ray Data calls stages off the main thread, where math-verify's SIGALRM timeouts cannot be armed: at
        # least one pool process per actor (workers=0, in-process, would leave every row unverified).
        options["workers"] = max(1, options.get("workers") or 1)
        return options, float(options["workers"]), max(1, int(cpus // options["workers"]))
    if name == "code":
        options.setdefault("workers", 4)
        return options, float(options["workers"]), max(1, int(cpus // options["workers"]))
    if name == "judge":
        return options, 0.25, 4  # waits on a server: threads and sockets, not CPU
    return options, 1.0, max(1, int(cpus))


def plan_stages(leads: list[tuple[str, dict]], own: dict, cpus: float) -> list[tuple[dict, float, int]]:
    """(options, CPUs per actor, most actors) for each stage, from the cluster's CPUs: the first actor of every
    stage fits together with READ_RESERVE for the reads, or the run is refused here instead of hanging in Ray.

    A stage asks for its verifier's CPUs (`stage_demand`) when they fit; when the stages together ask for more
    than the cluster has, each gets its share of what there is (an actor's CPUs are a scheduling budget: a code
    actor with 4 sandbox threads on 0.75 CPU still runs 4 threads). `ray_stages` values are kept as given, and
    refused when they cannot fit.
    """
    budget = cpus - READ_RESERVE
    demands = [stage_demand(name, options, cpus) for name, options in leads]
    pinned = {i: own[name]["num_cpus"] for i, (name, _) in enumerate(leads) if "num_cpus" in own.get(name, {})}
    free = budget - sum(pinned.values())
    loose = [i for i in range(len(leads)) if i not in pinned]
    if free < MIN_STAGE_CPUS * len(loose) or budget <= 0:
        what = (
            f"ray_stages ask for {sum(pinned.values()):g} CPUs"
            if pinned
            else f"{len(leads)} verifier stages need {MIN_STAGE_CPUS * len(leads):g} CPUs"
        )
        fix = "lower ray_stages.<stage>.num_cpus" if pinned else "give Ray more CPUs or use --backend local"
        raise DistillError(
            f"{what}, and reading the input needs {READ_RESERVE:g}, but the Ray cluster has {cpus:g} CPUs: {fix} "
            "(Ray would wait for them forever)"
        )
    wanted = sum(demands[i][1] for i in loose)
    above = sum(demands[i][1] - MIN_STAGE_CPUS for i in loose)
    firsts = []
    for i in range(len(leads)):
        options, want, actors = demands[i]
        if i in pinned:
            per_actor = pinned[i]
        elif wanted <= free:
            per_actor = want
        else:  # every stage its minimum, the rest shared in proportion to what each asks beyond it
            extra = (free - MIN_STAGE_CPUS * len(loose)) * (want - MIN_STAGE_CPUS) / above if above else 0.0
            per_actor = MIN_STAGE_CPUS + int(extra * 100) / 100
        firsts.append((options, per_actor, actors))
    # Every stage may grow to the same multiple of its first actor, as long as all of them together still leave
    # the reads their CPUs: idle actors holding the last CPUs would starve the reads they wait for.
    room = max(1, int(budget / sum(per_actor for _, per_actor, _ in firsts)))
    plan = []
    for (name, _), (options, per_actor, actors) in zip(leads, firsts, strict=True):
        actors = own.get(name, {}).get("max_actors", min(actors, room))
        plan.append((options, per_actor, max(1, int(actors))))
    return plan


def _stage_options(ray, name: str, options: dict, config: FilterConfig, planned=None) -> tuple[dict, dict]:
    """(verifier options, map_batches arguments): each verifier's own actors and CPU budget (`plan_stages`)."""
    cpus = _cluster_cpus(ray)
    options, num_cpus, max_actors = planned or plan_stages([(name, options)], config.ray_stages, cpus)[0]
    own = config.ray_stages.get(name, {})
    args = {
        "num_cpus": num_cpus,
        "batch_size": own.get("batch_size", config.batch_size),
        "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(max_actors))),
    }
    sandboxes = ray.cluster_resources().get("sandbox")
    if name == "code" and sandboxes:
        # Only nodes started with bwrap and the label; never more units than the cluster has.
        args["resources"] = {"sandbox": min(options["workers"], sandboxes)}
    return options, args


def _verify(ray, files, pending, names, context, config: FilterConfig, out: Path, staged: bool, decontam) -> None:
    dataset = _read(ray, files, GENERATE_SCHEMA.names, pending)
    limiter = None
    if "judge" in names and config.ray_judge_rps:
        limiter = ray.remote(num_cpus=0)(TokenBucket).remote(config.ray_judge_rps)
    groups = stage_groups(list(config.verifiers), config.ray_stages)
    leads = [next((name for name in group if name not in CHEAP or name in config.ray_stages), group[0])
             for group in groups]  # fmt: skip
    plan = plan_stages([(name, config.verifiers[name]) for name in leads], config.ray_stages, _cluster_cpus(ray))
    for k, group in enumerate(groups):
        lead = leads[k]
        stage = []
        for name in group:
            planned = plan[k] if name == lead else None
            options, args = _stage_options(ray, name, config.verifiers[name], config, planned)
            stage.append((name, options))
            if name == lead:
                lead_args = args
        kwargs = {"stage": stage, "first": k == 0, "last": k == len(groups) - 1, "context": [context],
                  "limiter": limiter if "judge" in group else None}  # fmt: skip
        dataset = dataset.map_batches(_VerifierStage, fn_constructor_kwargs=kwargs, batch_format="pyarrow",
                                      **lead_args)  # fmt: skip

    expected = {i: pq.ParquetFile(files[i]).metadata.num_rows for i in pending}
    parts: dict[int, list[pa.Table]] = {i: [] for i in pending}
    got = Counter()
    total = sum(expected.values())
    bar = tqdm(total=total, unit="row", disable=config.quiet, file=sys.stderr, dynamic_ncols=True)
    try:
        for i in pending:  # empty shards get no rows: commit them now
            if not expected[i]:
                _commit_shard(out, files, i, pa.table({}), names, staged, decontam)
                parts.pop(i)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            shards = table.column(SHARD)
            for i in pc.unique(shards).to_pylist():
                part = table.filter(pc.equal(shards, i))
                parts[i].append(part)
                got[i] += part.num_rows
                if got[i] == expected[i]:
                    _commit_shard(out, files, i, pa.concat_tables(parts.pop(i)), names, staged, decontam)
                elif got[i] > expected[i]:
                    raise DistillError(f"Ray returned more rows of {files[i]} than it holds: rerun with --resume")
            bar.update(table.num_rows)
    finally:
        bar.close()
    if parts:
        missing = ", ".join(str(files[i]) for i in sorted(parts))
        raise DistillError(f"Ray returned too few rows of {missing}: rerun with --resume")


def _commit_shard(out: Path, files, i: int, table: pa.Table, names, staged: bool, decontam) -> None:
    """One input shard's rows, verified: counted in input order, written, then its commit marker."""
    shard = cascade.Tally(names, decontam)
    written = []
    if table.num_rows:
        columns = ["domain", "prompt_id", "problem", "gold_source", "filter_reason"]
        small = table.select(columns + [f"verdict_{n}" for n in names])
        for row in small.to_pylist():
            shard.count(row, row["filter_reason"])
            if row["filter_reason"] is None and not staged:
                shard.count_kept(row)
        reasons = table.column("filter_reason")
        kept = table.filter(pc.is_null(reasons))
        rejected = table.filter(pc.is_valid(reasons))
        name = _shard_name(i, len(files))
        for folder, part, rejected_schema in ((".staging" if staged else "data", kept, False),
                                              ("rejected", rejected, True)):  # fmt: skip
            if part.num_rows:
                prefix = "rejected" if rejected_schema else "train"
                path = out / folder / f"{prefix}-{name}.parquet"
                path.parent.mkdir(exist_ok=True)
                write_table_atomic(_conform(part, filter_schema(names, rejected=rejected_schema)), path)
                written.append(f"{folder}/{path.name}")
    _save_json(out / cascade.SHARDS / f"shard-{i:05d}.json", {"files": written, "tally": _state(shard)})


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _shard_name(i: int, n: int) -> str:
    return f"{i:05d}-of-{n:05d}"


# --------------------------------------------------------------------------------------------------------------
# --select best / --max-per-prompt: every sample of a prompt, then the winners
# --------------------------------------------------------------------------------------------------------------


def _select(out: Path, files, names: list[str], config: FilterConfig) -> None:
    """The local backend's choice over the staged rows in input order; one marker when every shard is written."""
    marker = out / cascade.SHARDS / "selected.json"
    if marker.exists():
        return
    staged = [(i, out / ".staging" / f"train-{_shard_name(i, len(files))}.parquet") for i in range(len(files))]
    staged = [(i, path) for i, path in staged if path.exists()]
    winners: set[str] = set()
    if config.select == "best":
        best: dict[str, list] = defaultdict(list)
        columns = ["id", "prompt_id", "sample_index"] + [f"verdict_{n}" for n in names]
        for _, path in staged:
            for row in pq.read_table(path, columns=columns).to_pylist():
                cascade.remember_best(best, row, names, config.max_per_prompt or 1)
        winners = {item[2] for heap in best.values() for item in heap}
    else:
        per_prompt: Counter = Counter()
        for _, path in staged:
            for row in pq.read_table(path, columns=["id", "prompt_id"]).to_pylist():
                if per_prompt[row["prompt_id"]] < config.max_per_prompt:
                    per_prompt[row["prompt_id"]] += 1
                    winners.add(row["id"])
    change = cascade.Tally(names)
    written = []
    rejected_schema = filter_schema(names, rejected=True)
    for i, path in staged:
        table = pq.read_table(path)
        chosen = pc.is_in(table.column("id"), value_set=pa.array(sorted(winners), pa.string()))
        keep, drop = table.filter(chosen), table.filter(pc.invert(chosen))
        for row in keep.select(["domain", "prompt_id"]).to_pylist():
            change.count_kept(row)
        name = _shard_name(i, len(files))
        if keep.num_rows:
            (out / "data").mkdir(exist_ok=True)
            write_table_atomic(keep, out / "data" / f"train-{name}.parquet")
            written.append(f"data/train-{name}.parquet")
        if drop.num_rows:
            change.dropped["not_selected"] += drop.num_rows
            reason = pa.array(["not_selected"] * drop.num_rows, pa.string())
            write_table_atomic(_conform(drop.append_column("filter_reason", reason), rejected_schema),
                         out / "rejected" / f"not-selected-{name}.parquet")  # fmt: skip
            written.append(f"rejected/not-selected-{name}.parquet")
    _save_json(marker, {"files": written, "tally": _state(change)})


# --------------------------------------------------------------------------------------------------------------
# counts, markers, resume
# --------------------------------------------------------------------------------------------------------------


def _state(tally) -> dict:
    """A Tally as JSON, in its insertion orders (contamination lists benchmarks in the order first met)."""
    return {
        "total": tally.total, "kept": tally.kept, "dropped": dict(tally.dropped),
        "verifier": {name: dict(counts) for name, counts in tally.verifier.items()},
        "domain_total": dict(tally.domain_total), "domain_kept": dict(tally.domain_kept),
        "contamination": dict(tally.contamination), "contaminated_examples": dict(tally.contaminated_examples),
        "prompts": sorted(tally.prompts), "prompts_kept": sorted(tally.prompts_kept),
        "gold_source": dict(tally.gold_source), "per_prompt": dict(tally.per_prompt),
        "per_prompt_verifier": {name: dict(prompts) for name, prompts in tally.per_prompt_verifier.items()},
    }  # fmt: skip


def _merge(tally, state: dict) -> None:
    """Add one shard's counts; merged in input order, the result is what one pass over all rows counts."""
    tally.total += state["total"]
    tally.kept += state["kept"]
    for name in ("dropped", "domain_total", "domain_kept", "contamination", "gold_source"):
        getattr(tally, name).update(state[name])
    for name, counts in state["verifier"].items():
        tally.verifier[name].update(counts)
    for benchmark, examples in state["contaminated_examples"].items():
        have = tally.contaminated_examples[benchmark]
        have.extend(examples[: max(0, 20 - len(have))])  # Tally.count keeps the first 20 of each benchmark
    tally.prompts.update(state["prompts"])
    tally.prompts_kept.update(state["prompts_kept"])
    for mine, theirs in [(tally.per_prompt, state["per_prompt"])] + [
        (tally.per_prompt_verifier[name], prompts) for name, prompts in state["per_prompt_verifier"].items()
    ]:
        for prompt_id, (n, passed) in theirs.items():
            counts = mine[prompt_id]
            counts[0] += n
            counts[1] += passed


def _load_record(out: Path, fingerprint: dict) -> dict | None:
    if (out / cascade.PROGRESS).exists():
        raise DistillError(f"{out} was written by the local backend: resume it without --backend ray, or --overwrite")
    return cascade.load_record(out / cascade.SHARDS / RECORD, out, fingerprint)


def _committed(out: Path, num_shards: int) -> dict[int, dict]:
    """The markers of finished shards; every output file no marker names is a killed run's and is deleted."""
    markers, named = {}, set()
    for i in range(num_shards):
        path = out / cascade.SHARDS / f"shard-{i:05d}.json"
        if path.exists():
            markers[i] = _read_json(path)
            named.update(markers[i]["files"])
    selected = out / cascade.SHARDS / "selected.json"
    if selected.exists():
        named.update(_read_json(selected)["files"])
    for folder in ("data", "rejected", ".staging"):
        for path in data_files(out / folder):
            if f"{folder}/{path.name}" not in named:
                path.unlink()
    (out / "stats.json").unlink(missing_ok=True)
    return markers


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DistillError(f"{path} is missing or damaged: pass --overwrite to filter again from the start") from None


def _save_json(path: Path, value: dict) -> None:
    """Atomic and durable: a marker exists only once the files it names are complete on disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read(ray, files: list[Path], columns: list[str], shards: list[int] | None = None):
    """The rows of some input shards, one read task per Parquet row group, each row tagged with its shard index.

    Read with pyarrow in the workers (no row passes through the driver); Ray's `read_parquet` would do the
    same but lists files in a task asking a whole CPU, which a two-CPU machine running actors cannot give.
    """
    shards = list(range(len(files))) if shards is None else shards
    items = [{"shard": i, "path": str(files[i]), "group": g}
             for i in shards for g in range(pq.ParquetFile(files[i]).metadata.num_row_groups)]  # fmt: skip
    if not items:
        items = [{"shard": -1, "path": "", "group": -1}]  # a dataset of no rows still needs one item
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(_read_group, fn_kwargs={"columns": columns}, batch_size=1, batch_format="pyarrow",
                               num_cpus=0.25)  # fmt: skip


def _read_group(item: pa.Table, columns: list[str]) -> pa.Table:
    """One row group, with `origin` (the local backend's `file:row` for generate outputs) and the shard index."""
    shard, path, group = (item.column(name)[0].as_py() for name in ("shard", "path", "group"))
    schema = pa.schema([GENERATE_SCHEMA.field(name) for name in columns])
    schema = schema.append(pa.field("origin", pa.string())).append(pa.field(SHARD, pa.int64()))
    if shard < 0:
        return schema.empty_table()
    parquet = pq.ParquetFile(path)
    has_origin = "origin" in parquet.schema_arrow.names
    table = parquet.read_row_group(group, columns=columns + (["origin"] if has_origin else []))
    arrays = [table.column(name).cast(GENERATE_SCHEMA.field(name).type) for name in columns]
    # A null where the schema needs a value (a malformed row, rejected by the first stage) as the local backend
    # writes it: empty.
    for k, name in enumerate(columns):
        if name in cascade.REQUIRED_TEXT or name == "sample_index":
            arrays[k] = pc.fill_null(arrays[k], "" if name != "sample_index" else 0)
    if has_origin:
        arrays.append(table.column("origin"))
    else:
        offset = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
        arrays.append(pa.array([f"{path}:{offset + i}" for i in range(table.num_rows)], pa.string()))
    arrays.append(pa.array([shard] * table.num_rows, pa.int64()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _cluster_cpus(ray) -> float:
    return float(ray.cluster_resources().get("CPU", 1))
