"""`distill generate`: N chain-of-thought samples per prompt from a teacher into resumable Parquet shards.

Every missing sample is looked up in the response cache first (distill/engines/cache.py): a sample some earlier
run already paid for (in any output folder) is written from there, and only the rest go to the teacher, whose
engine is not even started when nothing is left. Rows carry their token counts (reasoning and cached prompt
tokens among them) and, with prices, their cost; with --budget or --max-total-tokens the openai engines reserve
each request's worst case before sending it, so the run stops before the limit, requests in flight included.
A first Ctrl-C (or SIGTERM) stops the openai engines sending and waits --stop-timeout for the requests in flight;
a second one stops at once. Either way every finished row is written, whole, and the run resumes with --resume.
"""

import dataclasses
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from distill.config import GenerateConfig
from distill.engines import Request, make_engine
from distill.engines.cache import ResponseCache, request_key, teacher_identity
from distill.engines.control import RunControl
from distill.engines.openai_batch import running_batches
from distill.engines.usage import Budget, Prices, TokenCounter, fill_counts
from distill.errors import DistillError
from distill.generate.parse import assemble_completion, parse_trace
from distill.generate.sources import Prompt, iter_prompts
from distill.generate.stats import folder_stats, paid
from distill.io import (
    ShardWriter,
    check_output,
    clear_folder,
    data_files,
    fsync_dir,
    local_paths,
    read_columns,
    shard_prefix,
    write_json_atomic,
    write_table_atomic,
)
from distill.models import model_label, resolve_model, vocab_hash
from distill.schema import GENERATE_SCHEMA
from distill.settings import dump_config

THINK_PREFILL = "<think>\n"
# An empty, closed think block: an R1-style teacher then answers at once, without chain of thought.
NO_THINK_PREFILL = "<think>\n\n</think>\n\n"
# What a folder of ours may hold; --overwrite refuses to delete a folder with anything else in it.
# Samples handed to the engine at a time: enough to keep a vLLM batch or a server's concurrency busy, few enough
# that the prompts of a 10M-prompt source are never all in memory.
TODO_BATCH = 4096
OUTPUT_ENTRIES = {"data", "shards", "batches", "config.resolved.yaml", "stats.json"}
# Engines that send requests to a server: they name their own model, and stop gracefully.
REMOTE_ENGINES = ("openai", "openai-batch")


def sampling_params(config: GenerateConfig) -> dict:
    """The parameters that change what a sample is; they are part of every sample's id."""
    params = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop),
        "prefill": THINK_PREFILL if config.prefill_think else NO_THINK_PREFILL if config.no_think else "",
    }
    if config.min_p:  # only when set: the ids of samples drawn without it stay what they were
        params["min_p"] = config.min_p
    return params


def sample_id(prompt_id: str, sample_index: int, teacher: str, sampling_json: str) -> str:
    key = json.dumps([prompt_id, sample_index, teacher, sampling_json])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def is_complete(out: str | Path) -> bool:
    """A generate output is complete when stats.json exists: it is written last, and removed at every start."""
    return (Path(out) / "stats.json").exists()


def run_generate(config: GenerateConfig) -> dict:
    config.validate()
    out = Path(config.out)
    prefix = shard_prefix(config.shard_index, config.num_shards)
    shard = (config.num_shards, config.shard_index)
    # Everything that can be wrong with the output folder or the input is found before the folder is touched: the
    # folder first (cheap, and an --out that is the input must be refused before the input is even read), then one
    # pass over the source that keeps no prompt (prompts are streamed, so memory stays flat however big the file).
    _check_output_state(out, prefix, config)
    num_prompts = sum(1 for _ in iter_prompts(config, shard))

    # A server names its own model (and the batch engine its folder's batches), so those engines start now; an
    # in-process engine loads its model only when some sample is neither in the folder nor in the cache (eval
    # resumes every model's samples this way; a vLLM start costs a minute or more).
    teacher_engine = _Teacher(config, make_engine(config) if config.engine in REMOTE_ENGINES else None)
    cache = ResponseCache() if config.cache else None
    try:
        teacher = teacher_engine.name
        sampling = sampling_params(config)
        sampling_json = json.dumps(sampling, sort_keys=True)
        vocab = None
        if config.logprobs:  # the tokenizer a resumed folder recorded, else the teacher's (no engine needed)
            vocab = (_recorded_tokenizer(out) if config.resume else None) or teacher_tokenizer(
                teacher_engine.engine, teacher
            )
        _prepare_output(out, prefix, config, teacher, sampling_json, vocab)

        files = data_files(out / "data", prefix)
        if config.retry_errors:
            drop_error_rows(files)
            files = data_files(out / "data", prefix)
        done = scan_done(files)
        window = getattr(teacher_engine.engine, "window", TODO_BATCH)
        todo = _todo_batches(iter_prompts(config, shard), done, config.num_samples, teacher, sampling_json, window)
        # At most this many are left (done may hold rows of prompts no longer in the source): the bar's total.
        left = max(0, num_prompts * config.num_samples - len(done))
        budget = None
        if config.budget is not None or config.max_total_tokens is not None:
            spent_usd, spent_tokens = paid(files, config_prices(config))
            budget = Budget(config_prices(config), config.budget, config.max_total_tokens, spent_usd, spent_tokens)
        run = _generate(teacher_engine, todo, left, config, teacher, sampling, out, prefix, cache, budget, vocab)
    finally:
        teacher_engine.close()
        if cache is not None:
            cache.close()
    return _finish(out, prefix, config, num_prompts, run)


def config_prices(config) -> Prices:
    return Prices(config.price_input, config.price_cached_input, config.price_output)


class _Teacher:
    """The run's engine, built on first use when it runs in this process."""

    def __init__(self, config: GenerateConfig, engine=None):
        self.config = config
        self.engine = engine
        self.name = getattr(engine, "model_name", None) or model_label(config.model)

    def get(self):
        if self.engine is None:
            self.engine = make_engine(self.config)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def cancel_batches(config: GenerateConfig) -> list[str]:
    """`--cancel`: cancel the batches this output's shard has running at the provider; returns their ids."""
    config.validate()
    prefix = shard_prefix(config.shard_index, config.num_shards)
    if not (Path(config.out) / "batches" / f"{prefix}.json").exists():
        raise DistillError(f"{config.out} has no batches of shard {config.shard_index}: nothing to cancel")
    engine = make_engine(config)
    try:
        return engine.cancel_all()
    finally:
        engine.close()


def _todo_batches(prompts, done: set, num_samples: int, teacher: str, sampling_json: str, size: int = TODO_BATCH):
    """The samples still missing, `size` at a time: (prompt, sample index, sample id) tuples."""
    batch = []
    for prompt in prompts:
        for k in range(num_samples):
            row_id = sample_id(prompt.prompt_id, k, teacher, sampling_json)
            if row_id not in done:
                batch.append((prompt, k, row_id))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_output_state(out: Path, prefix: str, config: GenerateConfig) -> None:
    # The output may touch neither the prompt file or folder nor a local teacher folder.
    inputs = local_paths([config.source, config.model])
    busy = None  # one host: anything in the folder; many: only this host's own files
    if config.num_shards > 1:
        busy = bool(data_files(out / "data", prefix)) or (out / "shards" / f"{prefix}.json").exists()
    check_output(
        out,
        inputs=inputs,
        resume=config.resume,
        overwrite=config.overwrite,
        holds="samples",
        busy=busy,
        ours=(lambda p: p.name in OUTPUT_ENTRIES) if config.overwrite and config.num_shards == 1 else None,
    )


def teacher_tokenizer(engine, teacher: str) -> dict:
    """The teacher's tokenizer for --logprobs: its name and vocab_hash, which `distill train --method kd` checks
    against the student's. An openai server keeps its tokenizer, and an in-process engine is not built before it is
    needed: the tokenizer is then looked for locally under the model's name (an alias, a folder, a cached hub id),
    and when none is found the hash is null and KD refuses the rows."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        try:
            from transformers import AutoTokenizer  # imports torch; only with --logprobs

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(teacher), local_files_only=True)
        except (OSError, ValueError, DistillError):
            print(f"warning: no local tokenizer for `{teacher}`: its vocabulary hash is not recorded", file=sys.stderr)
            return {"name": teacher, "vocab_hash": None}
    return {"name": teacher, "vocab_hash": vocab_hash(tokenizer)}


def _recorded_tokenizer(out: Path) -> dict | None:
    try:
        return (yaml.safe_load((out / "config.resolved.yaml").read_text(encoding="utf-8")) or {}).get(
            "teacher_tokenizer"
        )
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def _prepare_output(
    out: Path, prefix: str, config: GenerateConfig, teacher: str, sampling_json: str, vocab: dict | None = None
) -> None:
    running = running_batches(out / "batches") if config.overwrite else []
    if running:
        raise DistillError(
            f"{out} has {len(running)} batches that may still run at the provider ({', '.join(running[:3])}): "
            "cancel them with --cancel (or collect them with --resume) before --overwrite"
        )
    if config.overwrite:
        if config.num_shards == 1:
            clear_folder(out)
        else:  # other hosts own the other shards: delete only ours
            for path in data_files(out / "data", prefix):
                path.unlink()
            for path in (out / "batches").glob(f"{prefix}*"):
                path.unlink()
    elif config.resume and (out / "config.resolved.yaml").exists():
        _check_same_run(out / "config.resolved.yaml", config, teacher, sampling_json)
    out.mkdir(parents=True, exist_ok=True)
    # The output is incomplete from now until _finish writes stats again.
    (out / "stats.json").unlink(missing_ok=True)
    (out / "shards" / f"{prefix}.json").unlink(missing_ok=True)
    resolved = GenerateConfig(**{**_asdict(config), "model": teacher})
    dump_config(resolved, out / "config.resolved.yaml", {"teacher_tokenizer": vocab} if vocab else None)


def _check_same_run(path: Path, config: GenerateConfig, teacher: str, sampling_json: str) -> None:
    """Refuse to resume into a folder made with another teacher, other sampling or another sharding."""
    before = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    previous = GenerateConfig(**{k: v for k, v in before.items() if k in _asdict(config)})
    checks = {
        "teacher": (previous.model, teacher),
        "sampling": (json.dumps(sampling_params(previous), sort_keys=True), sampling_json),
        "num_shards": (previous.num_shards, config.num_shards),
        "logprobs": (previous.logprobs, config.logprobs),  # one folder: every row with its log-probs, or none
    }
    for name, (was, now) in checks.items():
        if was != now:
            raise DistillError(
                f"cannot resume {path.parent}: it was made with {name} {was}, this run has {now}; "
                "use another --out or pass --overwrite"
            )


def _asdict(config: GenerateConfig) -> dict:
    return dataclasses.asdict(config)


def _generate(
    teacher_engine, batches, total: int, config, teacher, sampling, out, prefix, cache, budget, vocab=None
) -> dict:
    """Run the engine over the missing samples, batch by batch, flushing finished rows every N rows or N seconds."""
    writer = ShardWriter(out / "data", prefix, GENERATE_SCHEMA)
    sampling_json = json.dumps(sampling, sort_keys=True)
    engine_sampling = config.sampling()
    engine_sampling.logprobs = config.logprobs
    # The cache keys a sample by what changes it; asked with log-probs, an answer stored without them will not do.
    key_json = (
        json.dumps({**sampling, "logprobs": config.logprobs}, sort_keys=True) if config.logprobs else sampling_json
    )
    prices = config_prices(config)
    identity = teacher_identity(config, teacher) if cache is not None else None
    # A server may leave counts out; the teacher's tokenizer (or --tokenizer) counts them, loaded only then.
    counter = TokenCounter(config.tokenizer or teacher) if config.engine in REMOTE_ENGINES else None
    control = RunControl(budget, config.stop_timeout)
    buffer: list[dict] = []
    run = {"generated": 0, "requests": 0, "cache_hits": 0, "cache_misses": 0, "cost_usd": 0.0, "completion_tokens": 0}
    last_flush = start = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        writer.write(buffer)
        buffer.clear()
        last_flush = time.monotonic()

    def add(prompt: Prompt, k: int, row_id: str, result, request: Request | None) -> None:
        """One finished sample: counted, priced, into the buffer (and the buffer onto disk when it is due)."""
        from_cache = request is None
        if not from_cache and result.error is None:
            completion = assemble_completion(result.text, sampling["prefill"], result.reasoning)
            fill_counts(result, request, result.reasoning or parse_trace(completion).reasoning, counter)
        cost = prices.cost(result.prompt_tokens, result.cached_tokens, result.completion_tokens)
        if from_cache or result.error is not None:
            cost = 0.0 if prices.known else None  # a cached answer, or a failed request, is not paid for
        elif result.prompt_tokens is None or result.completion_tokens is None:
            cost = None  # unknown: not 0
        if not from_cache:
            if cache is not None and result.error is None:
                cache.put(request_key(identity, prompt.messages, key_json, config.seed, k), result)
            if budget is not None:
                known = result.prompt_tokens is not None and result.completion_tokens is not None
                tokens = (result.prompt_tokens or 0) + (result.completion_tokens or 0) if known else None
                failed = result.error is not None
                budget.settle(row_id, 0.0 if failed else cost, 0 if failed else tokens)
            run["requests"] += 1
            run["cost_usd"] += cost or 0.0
        row = _row(prompt, k, row_id, result, teacher, sampling_json, sampling["prefill"], cost, from_cache, vocab)
        buffer.append(row)
        run["generated"] += 1
        run["cache_hits"] += from_cache
        run["completion_tokens"] += 0 if from_cache else result.completion_tokens or 0
        bar.set_postfix_str(_progress(run, time.monotonic() - start, prices, config.budget), refresh=False)
        bar.update(1)
        if len(buffer) >= config.rows_per_file or time.monotonic() - last_flush >= config.flush_seconds:
            flush()

    bar = tqdm(total=total, unit="sample", disable=config.quiet, file=sys.stderr, dynamic_ncols=True)
    graceful = config.engine in REMOTE_ENGINES
    previous = _catch_stops(control, graceful)
    try:
        for todo in batches:
            if control.stopping:
                break
            keys = hits = None
            if cache is not None:
                keys = [request_key(identity, p.messages, key_json, config.seed, k) for p, k, _ in todo]
                hits = cache.get_many(keys)
            misses = []
            for j, (prompt, k, row_id) in enumerate(todo):
                if hits and keys[j] in hits:
                    add(prompt, k, row_id, hits[keys[j]], None)
                else:
                    misses.append(j)
            if not misses:
                continue
            engine = teacher_engine.get()
            requests = [Request(todo[j][0].messages, prefill=sampling["prefill"], key=todo[j][2]) for j in misses]
            extra = {"control": control} if getattr(engine, "stops_gracefully", False) else {}
            for index, result in engine.generate(requests, engine_sampling, **extra):
                prompt, k, row_id = todo[misses[index]]
                add(prompt, k, row_id, result, requests[index])
    finally:
        # Rows already in the buffer are finished samples: keep them even when interrupted, and let no further
        # Ctrl-C cut this last write short (it takes milliseconds).
        ignored = _ignore_stops()
        try:
            flush()
        finally:
            _restore({**(ignored or {}), **(previous or {})})  # the handlers from before the run
            bar.close()
        run["seconds"] = time.monotonic() - start
        run["cache_misses"] = cache.misses if cache is not None else 0
    for note in control.notes:
        print(note, file=sys.stderr)
    if control.reason == "interrupt":
        raise KeyboardInterrupt
    if control.reason in ("budget", "max_total_tokens"):
        raise DistillError(_budget_message(control.reason, budget, run, total, config))
    return run


def _progress(run: dict, elapsed: float, prices: Prices, budget: float | None) -> str:
    """The bar's postfix (tqdm shows rows/s and the ETA): tokens/s, the cost so far, cache hits."""
    parts = [f"{run['completion_tokens'] / max(elapsed, 1e-9):.1f} tok/s"]
    if prices.known:
        parts.append(f"${run['cost_usd']:.4f}" + (f" of ${budget:g}" if budget is not None else ""))
    if run["cache_hits"]:
        parts.append(f"{run['cache_hits']} cached")
    return ", ".join(parts)


def _budget_message(reason: str, budget: Budget, run: dict, total: int, config) -> str:
    left = max(0, total - run["generated"])
    per_row = run["cost_usd"] / run["requests"] if run["requests"] else None
    if reason == "budget":
        more = _usd(budget.spent_usd + per_row * left * 1.1) if per_row else _usd(config.budget * 2)
        return (
            f"budget reached: ${_usd(budget.spent_usd)} of ${_usd(config.budget)} spent on this output, {left} "
            f"samples left: rerun with --resume --budget {more} to finish them"
        )
    per_row = budget.spent_tokens / max(1, run["requests"])
    more = int(budget.spent_tokens + per_row * left * 1.1) if run["requests"] else config.max_total_tokens * 2
    return (
        f"token limit reached: {budget.spent_tokens} of {config.max_total_tokens} tokens spent on this output, "
        f"{left} samples left: rerun with --resume --max-total-tokens {more} to finish them"
    )


def _usd(amount: float) -> str:
    """Dollars to cents, or to three significant digits below $10 (a test run costs fractions of a cent)."""
    return f"{amount:.2f}" if amount >= 10 else f"{amount:.3g}"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _catch_stops(control: RunControl, graceful: bool) -> dict | None:
    """SIGINT and SIGTERM (a scheduler's preemption): the first stops a remote engine gracefully (no new requests,
    the ones in flight finish); a second one, or any with an in-process engine, raises KeyboardInterrupt at once.
    Only the main thread may set handlers; a SIGINT the shell ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        if not graceful or control.stopping:
            raise KeyboardInterrupt
        control.request_stop("interrupt")
        if control.waiting_on == "requests":
            what = f"finishing the {control.in_flight} requests in flight (at most {control.stop_timeout:g} s)"
        else:
            what = "the submitted batches keep running"
        print(f"\nstopping: nothing more is sent; {what}. Ctrl-C again to quit at once", file=sys.stderr)

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, stop)
    return previous


def _ignore_stops() -> dict | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}


def _restore(previous: dict | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


def _row(
    prompt: Prompt,
    k: int,
    row_id: str,
    result,
    teacher: str,
    sampling_json: str,
    prefill: str,
    cost: float | None = None,
    from_cache: bool = False,
    vocab: dict | None = None,
) -> dict:
    if result.error is not None:
        reasoning = answer = completion = None
    else:
        completion = assemble_completion(result.text, prefill, result.reasoning)
        trace = parse_trace(completion)
        reasoning, answer = trace.reasoning, trace.answer
    return {
        "id": row_id,
        "prompt_id": prompt.prompt_id,
        "sample_index": k,
        "domain": prompt.domain,
        "source": prompt.source,
        "problem": prompt.problem,
        "prompt_messages": json.dumps(prompt.messages, ensure_ascii=False),
        "gold": prompt.gold,
        "tests": prompt.tests,
        "reasoning": reasoning,
        "answer": answer,
        "completion": completion,
        "finish_reason": result.finish_reason,
        "truncated": result.finish_reason == "length",
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "reasoning_tokens": result.reasoning_tokens,
        "cached_tokens": result.cached_tokens,
        "token_source": result.token_source,
        "cost_usd": cost,
        "from_cache": from_cache,
        "teacher": teacher,
        "sampling": sampling_json,
        "error": result.error,
        "token_ids": result.token_ids,
        "top_token_ids": result.top_ids,
        "top_logprobs": result.top_logprobs,
        "teacher_tokenizer": vocab["name"] if vocab and result.token_ids is not None else None,
        "teacher_vocab_hash": vocab["vocab_hash"] if vocab and result.token_ids is not None else None,
    }


def _finish(out: Path, prefix: str, config: GenerateConfig, num_prompts: int, run: dict) -> dict:
    stats = folder_stats(data_files(out / "data", prefix))
    stats["prompts_in_source_shard"] = num_prompts
    stats["generated_this_run"] = run["generated"]
    stats["seconds_this_run"] = round(run["seconds"], 3)
    stats["tokens_per_second"] = round(run["completion_tokens"] / run["seconds"], 2) if run["seconds"] else 0.0
    # What this run paid for: requests sent (the rest came from the response cache), and their cost
    stats["requests_this_run"] = run["requests"]
    stats["cost_usd_this_run"] = round(run["cost_usd"], 6) if config.price_input is not None else None
    stats["cache"] = {"hits": run["cache_hits"], "misses": run["cache_misses"]} if config.cache else "off"
    stats["prices_per_million"] = _prices_dict(config)
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    write_json_atomic(stats, shard_dir / f"{prefix}.json")
    # The last shard to finish writes the folder's stats.json, which marks the whole output complete.
    finished = sorted(shard_dir.glob(f"train-*-of-{config.num_shards:05d}.json"))
    if len(finished) == config.num_shards:
        total = folder_stats(data_files(out / "data"))
        total["shards"] = config.num_shards
        if config.num_shards == 1:
            total.update({k: v for k, v in stats.items() if k.endswith("_this_run") or k in THIS_RUN})
        write_json_atomic(total, out / "stats.json")
    return stats


THIS_RUN = ("tokens_per_second", "cache", "prices_per_million")


def _prices_dict(config) -> dict | None:
    if config.price_input is None:
        return None
    return {"input": config.price_input, "cached_input": config.price_cached_input, "output": config.price_output}


def scan_done(files: Iterable[Path]) -> dict[str, str | None]:
    """Map every finished sample id to its `error` (None when it succeeded)."""
    done: dict[str, str | None] = {}
    for path in files:
        table = read_columns(path, ["id", "error"])
        done.update(zip(table.column("id").to_pylist(), table.column("error").to_pylist(), strict=True))
    return done


def drop_error_rows(files: Iterable[Path]) -> int:
    """Rewrite files without their failed rows, so `--retry-errors` regenerates them without duplicates.

    Dropping comes first and is atomic per file: if we are killed afterwards, the dropped samples are simply
    missing and the next `--resume` generates them.
    """
    dropped = 0
    for path in files:
        table = pq.read_table(path)
        ok = table.filter(pc.is_null(table.column("error")))
        if ok.num_rows == table.num_rows:
            continue
        dropped += table.num_rows - ok.num_rows
        if ok.num_rows:
            write_table_atomic(ok, path)
        else:
            path.unlink()
            fsync_dir(path.parent)
    return dropped
