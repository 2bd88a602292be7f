"""`distill generate`: N chain-of-thought samples per prompt from a teacher into resumable Parquet shards."""

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

from distill.config import GenerateConfig, dump_config
from distill.engines import Request, make_engine
from distill.errors import DistillError
from distill.generate.parse import assemble_completion, parse_trace
from distill.generate.sources import Prompt, iter_prompts
from distill.generate.stats import folder_stats
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

THINK_PREFILL = "<think>\n"
# An empty, closed think block: an R1-style teacher then answers at once, without chain of thought.
NO_THINK_PREFILL = "<think>\n\n</think>\n\n"
# What a folder of ours may hold; --overwrite refuses to delete a folder with anything else in it.
# Samples handed to the engine at a time: enough to keep a vLLM batch or a server's concurrency busy, few enough
# that the prompts of a 10M-prompt source are never all in memory.
TODO_BATCH = 4096
OUTPUT_ENTRIES = {"data", "shards", "config.resolved.yaml", "stats.json"}


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

    if _nothing_left(out, prefix, config, shard):
        # Every sample is already in the folder (eval resumes each model's samples this way): no engine to start,
        # which for vLLM is a minute or more per model. The folder's stats are written again as a run would.
        teacher = model_label(config.model)
        vocab = _recorded_tokenizer(out) if config.logprobs else None
        _prepare_output(out, prefix, config, teacher, json.dumps(sampling_params(config), sort_keys=True), vocab)
        return _finish(out, prefix, config, num_prompts, {"generated": 0, "completion_tokens": 0, "seconds": 0.0})

    engine = make_engine(config)
    try:
        teacher = getattr(engine, "model_name", None) or config.model
        sampling = sampling_params(config)
        sampling_json = json.dumps(sampling, sort_keys=True)
        vocab = teacher_tokenizer(engine, teacher) if config.logprobs else None
        _prepare_output(out, prefix, config, teacher, sampling_json, vocab)

        files = data_files(out / "data", prefix)
        if config.retry_errors:
            drop_error_rows(files)
            files = data_files(out / "data", prefix)
        done = scan_done(files)
        todo = _todo_batches(iter_prompts(config, shard), done, config.num_samples, teacher, sampling_json)
        # At most this many are left (done may hold rows of prompts no longer in the source): the bar's total.
        left = max(0, num_prompts * config.num_samples - len(done))
        run = _generate(engine, todo, left, config, teacher, sampling, out, prefix, vocab)
    finally:
        engine.close()
    return _finish(out, prefix, config, num_prompts, run)


def _nothing_left(out: Path, prefix: str, config: GenerateConfig, shard: tuple[int, int]) -> bool:
    """True when a --resume finds every sample of this shard done. Only for the in-process engines, whose
    sample ids name the model as `model_label` does without loading it (a server names its own model), and not
    with --retry-errors (failed rows are redone) or --overwrite (nothing is kept)."""
    if not config.resume or config.overwrite or config.retry_errors or config.engine not in ("vllm", "transformers"):
        return False
    files = data_files(out / "data", prefix)
    if not files:
        return False
    done = scan_done(files)
    sampling_json = json.dumps(sampling_params(config), sort_keys=True)
    teacher = model_label(config.model)
    todo = _todo_batches(iter_prompts(config, shard), done, config.num_samples, teacher, sampling_json)
    return next(todo, None) is None


def _todo_batches(prompts, done: set, num_samples: int, teacher: str, sampling_json: str):
    """The samples still missing, TODO_BATCH at a time: (prompt, sample index, sample id) tuples."""
    batch = []
    for prompt in prompts:
        for k in range(num_samples):
            row_id = sample_id(prompt.prompt_id, k, teacher, sampling_json)
            if row_id not in done:
                batch.append((prompt, k, row_id))
        if len(batch) >= TODO_BATCH:
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
    against the student's. An openai server keeps its tokenizer: it is looked for locally under the model's name
    (an alias, a folder, a cached hub id), and when none is found the hash is null and KD refuses the rows."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        try:
            from transformers import AutoTokenizer

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
    if config.overwrite:
        if config.num_shards == 1:
            clear_folder(out)
        else:  # other hosts own the other shards: delete only ours
            for path in data_files(out / "data", prefix):
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


def _generate(engine, batches, total: int, config, teacher, sampling, out, prefix, vocab=None) -> dict:
    """Run the engine over the missing samples, batch by batch, flushing finished rows every N rows or N seconds."""
    from tqdm import tqdm

    writer = ShardWriter(out / "data", prefix, GENERATE_SCHEMA)
    sampling_json = json.dumps(sampling, sort_keys=True)
    engine_sampling = config.sampling()
    engine_sampling.logprobs = config.logprobs
    buffer: list[dict] = []
    run = {"generated": 0, "completion_tokens": 0, "seconds": 0.0}
    last_flush = start = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        writer.write(buffer)
        buffer.clear()
        last_flush = time.monotonic()

    bar = tqdm(total=total, unit="sample", disable=config.quiet, file=sys.stderr, dynamic_ncols=True)
    # SIGTERM (a scheduler's preemption) flushes like Ctrl-C does. Only the main thread may set handlers.
    in_main = threading.current_thread() is threading.main_thread()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        for todo in batches:
            requests = [Request(messages=p.messages, prefill=sampling["prefill"]) for p, _, _ in todo]
            for index, result in engine.generate(requests, engine_sampling):
                prompt, k, row_id = todo[index]
                buffer.append(_row(prompt, k, row_id, result, teacher, sampling_json, sampling["prefill"], vocab))
                run["generated"] += 1
                run["completion_tokens"] += result.completion_tokens or 0
                elapsed = time.monotonic() - start
                bar.set_postfix_str(f"{run['completion_tokens'] / max(elapsed, 1e-9):.1f} tok/s", refresh=False)
                bar.update(1)
                if len(buffer) >= config.rows_per_file or time.monotonic() - last_flush >= config.flush_seconds:
                    flush()
    finally:
        # Rows already in the buffer are finished samples: keep them even when interrupted.
        flush()
        bar.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous_term)
        run["seconds"] = time.monotonic() - start
    return run


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _row(
    prompt: Prompt, k: int, row_id: str, result, teacher: str, sampling_json: str, prefill: str, vocab=None
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
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    write_json_atomic(stats, shard_dir / f"{prefix}.json")
    # The last shard to finish writes the folder's stats.json, which marks the whole output complete.
    finished = sorted(shard_dir.glob(f"train-*-of-{config.num_shards:05d}.json"))
    if len(finished) == config.num_shards:
        total = folder_stats(data_files(out / "data"))
        total["shards"] = config.num_shards
        if config.num_shards == 1:
            total.update({k: stats[k] for k in ("generated_this_run", "seconds_this_run", "tokens_per_second")})
        write_json_atomic(total, out / "stats.json")
    return stats


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
