"""Prompt sources: local JSONL/JSON/Parquet/CSV files, `datasets` folders and hub ids, and reasoning-gym.

Every source becomes a list of `Prompt`s with a stable `prompt_id`, a `domain`, the chat `messages` sent to
the teacher, and the gold answer and code tests when the source has them.
"""

import csv
import hashlib
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distill.errors import DistillError, MissingDependency, shown

DOMAINS = ("math", "code", "science", "general")
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# The R1 recipe: no system prompt, the instruction in the user turn for problems with a checkable answer.
DEFAULT_TEMPLATES = {
    "math": "{problem}\n" + R1_INSTRUCTION,
    "science": "{problem}\n" + R1_INSTRUCTION,
    "code": "{problem}",
    "general": "{problem}",
}
PROMPT_COLUMNS = ("problem", "prompt", "question", "instruction")
ANSWER_COLUMNS = ("answer", "gold")
REASONING_GYM = "reasoning-gym:"
BATCH_ROWS = 1024  # rows read at a time from Parquet files and `datasets` folders
# No prompt is this long (a 1M-token context is ~4 MiB of text): a longer line is refused before it is read, so a
# broken or hostile file cannot make a reader hold it whole.
MAX_ROW_BYTES = 16 * 2**20
# A .json file is parsed whole (Python objects take ~5x the file's bytes): past this, JSONL is the way.
MAX_JSON_BYTES = 64 * 2**20


@dataclass(slots=True)
class Prompt:
    prompt_id: str
    problem: str
    messages: list[dict]
    domain: str
    source: str
    gold: str | None = None
    tests: str | None = None


def iter_prompts(config, shard: tuple[int, int] | None = None) -> Iterator[Prompt]:
    """The configured source's prompts, one at a time, read in batches: memory stays flat however big the file.

    `shard` = (num_shards, shard_index) yields only that shard's prompts: every row is still read and checked
    (an error anywhere fails every host alike), but other shards' rows are dropped as soon as they are read.
    What grows with the file is the duplicate check, under 250 bytes a row (a set of 64-bit hashes of the ids),
    never with the prompt text.
    """
    if config.num_prompts is not None and config.num_prompts < 1:
        # a negative count would slice from the end and drop rows silently
        raise DistillError(f"--num-prompts must be at least 1, got {config.num_prompts}")
    if config.source.startswith(REASONING_GYM):
        label = config.source

        def rows() -> Iterator[dict]:
            return _reasoning_gym_rows(config)
    else:
        label = _source_label(config.source)

        def rows() -> Iterator[dict]:
            return itertools.islice(iter_source_rows(config), config.num_prompts)

    for prompt in _to_prompts(rows, config, label, default_domain="math"):
        if shard is None or shard_of(prompt.prompt_id, shard[0]) == shard[1]:
            yield prompt


def load_prompts(config) -> list[Prompt]:
    """All of the source's prompts in a list (eval's small benchmarks); generate streams with `iter_prompts`."""
    return list(iter_prompts(config))


def shard_of(prompt_id: str, num_shards: int) -> int:
    """Which of `num_shards` hosts owns a prompt: a hash, so it does not depend on row order."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) % num_shards


def apply_template(template: str, problem: str) -> str:
    # str.replace, not str.format: templates hold literal braces such as \boxed{}.
    return template.replace("{problem}", problem)


def _source_label(source: str) -> str:
    path = Path(source)
    return path.name if path.exists() else source


def _to_prompts(rows: Callable[[], Iterator[dict]], config, label: str, default_domain: str) -> Iterator[Prompt]:
    """`rows` opens the source afresh: a repeated id is looked up again to name its first row (the seen-set keeps
    hashes only, so the text of a row is never held after it has been turned into a prompt)."""
    iterator = iter(rows())
    first = next(iterator, None)
    if first is None:
        raise DistillError(f"source {config.source} holds no rows")
    columns = list(first.keys())
    prompt_col = pick_column(columns, config.prompt_column, PROMPT_COLUMNS, "--prompt-column", required=True)
    answer_col = pick_column(columns, config.answer_column, ANSWER_COLUMNS, "--answer-column")
    id_col = pick_column(columns, config.id_column, ("id",), "--id-column")
    if config.domain is not None and config.domain not in DOMAINS:
        raise DistillError(f"unknown domain `{shown(config.domain)}`: choose one of {', '.join(DOMAINS)}")
    for flag, text in (("--system-prompt", config.system_prompt), ("--prompt-template", config.prompt_template)):
        if text is not None and not _is_unicode(text):
            raise DistillError(f"{flag} is not valid UTF-8 text: fix its value")

    seen: set[int] = set()  # 64-bit hashes of the ids (or prompt digests) met so far
    repeats: dict[str, int] = {}  # digest -> how many times it was met, only for prompts met more than once
    for number, row in enumerate(itertools.chain([first], iterator), start=1):
        problem = row.get(prompt_col)
        if not isinstance(problem, str) or not problem.strip():
            raise DistillError(f"row {number} of {label} has an empty or non-text prompt in column `{prompt_col}`")
        domain = config.domain or row.get("domain") or default_domain
        if domain not in DOMAINS:
            raise DistillError(
                f"row {number} of {label} has unknown domain `{shown(domain)}`: use {', '.join(DOMAINS)}"
            )
        messages = []
        if config.system_prompt:
            messages.append({"role": "system", "content": config.system_prompt})
        template = config.prompt_template or DEFAULT_TEMPLATES[domain]
        messages.append({"role": "user", "content": apply_template(template, problem)})

        if id_col is not None:
            # Columns are found on the first row: a later row may lack the id, or hold one that is no id at all.
            value = row.get(id_col)
            if value is None or value == "" or isinstance(value, (list, dict, bytes)):
                raise DistillError(
                    f"row {number} of {label} has no usable id in column `{id_col}` (got {shown(value)}): "
                    "give every row a text or number id, or pass --id-column"
                )
            prompt_id = str(value)
            key = _hash64(prompt_id)
            if key in seen:
                earlier = _first_row_with_id(rows, id_col, prompt_id, number)
                if earlier is not None:  # else two ids that share a hash: rare, and no repeat
                    raise DistillError(
                        f"row {number} of {label} repeats id `{shown(prompt_id)}` (first at row {earlier})"
                    )
            seen.add(key)
        else:
            digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
            # The same prompt twice in one file still gets two distinct, stable ids. (Two digests sharing a
            # 64-bit hash would only give the second a suffix: still distinct, still stable.)
            key = _hash64(digest)
            if key in seen:
                count = repeats.get(digest, 1)
                repeats[digest] = count + 1
                prompt_id = f"{digest}-{count}"
            else:
                seen.add(key)
                prompt_id = digest
        prompt = Prompt(
            prompt_id=prompt_id,
            problem=problem,
            messages=messages,
            domain=domain,
            source=label,
            gold=_as_text(row.get(answer_col)) if answer_col else None,
            tests=_as_json_text(row.get("tests")),
        )
        # A JSON escape such as "\ud800" reads as a lone surrogate, which no UTF-8 file or tokenizer takes.
        if not all(_is_unicode(t) for t in (prompt.prompt_id, prompt.problem, prompt.gold, prompt.tests)):
            raise DistillError(
                f"row {number} of {label} holds text that is not valid Unicode (a lone surrogate such as "
                "\\ud800): fix that row"
            )
        yield prompt


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _first_row_with_id(rows: Callable[[], Iterator[dict]], id_col: str, prompt_id: str, before: int) -> int | None:
    for number, row in enumerate(rows(), start=1):
        if number >= before:
            return None
        if str(row.get(id_col)) == prompt_id:
            return number
    return None


def _is_unicode(text: str | None) -> bool:
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pick_column(columns: list[str], wanted: str | None, candidates, flag: str, required: bool = False):
    if wanted is not None:
        if wanted not in columns:
            raise DistillError(f"column `{shown(wanted)}` not found (columns: {_names(columns)}): fix {flag}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DistillError(f"no prompt column among {_names(columns)}: pass {flag}")
    return None


def _names(columns: list[str]) -> str:
    names = ", ".join(shown(c, limit=40) for c in columns[:20])
    return names + (f" and {len(columns) - 20} more" if len(columns) > 20 else "")


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    # default=str: Parquet lists and structs may hold dates, decimals or bytes, which JSON has no type for.
    return json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def _as_json_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def iter_source_rows(config) -> Iterator[dict]:
    """The rows of `config.source` (a file, a `datasets` folder or a hub id), one at a time."""
    path = Path(config.source)
    if path.is_file():
        return read_file_rows(path)
    if path.is_dir():
        return _read_dataset(config, local=True)
    if path.suffix or config.source.startswith((".", "/", "~")):
        raise DistillError(f"source not found: {config.source}")
    return _read_dataset(config, local=False)


def read_file_rows(path: Path, what: str = "") -> Iterator[dict]:
    """A .jsonl, .json, .parquet or .csv file's rows, one at a time. `what` names the file's role in errors."""
    reader = FILE_READERS.get(Path(path).suffix.lower())
    if reader is None:
        raise DistillError(f"cannot read {what}{path}: use a .jsonl, .json, .parquet or .csv file")
    return reader(Path(path))


def read_jsonl(path: Path, max_row_bytes: int | None = None) -> Iterator[dict]:
    """One JSON object a line, read line by line; a line over `max_row_bytes` is refused before it is read."""
    cap = max_row_bytes or MAX_ROW_BYTES
    # Binary lines, decoded one by one, so a bad byte is reported with its line number.
    with open(path, "rb") as fh:
        number = 0
        while raw := fh.readline(cap + 1):
            number += 1
            if len(raw) > cap and not raw.endswith(b"\n"):
                raise DistillError(f"{path}:{number}: {_too_long(cap)}")
            try:
                # utf-8-sig on the first line: editors on Windows start files with a byte order mark
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DistillError(f"{path}:{number}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # columns then count within the line as shown
            except (ValueError, RecursionError) as exc:
                raise DistillError(f"{path}:{number}: not valid JSON ({_json_problem(exc, one_line=True)})") from None
            if not isinstance(row, dict):
                raise DistillError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_json(path: Path) -> Iterator[dict]:
    """A JSON list of objects (or {"data": [...]}). JSON has no rows to stream, so it is parsed whole: files over
    MAX_JSON_BYTES are refused with a pointer to JSONL, which is read line by line."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DistillError(
            f"{path} is {size / 2**20:.0f} MiB: a .json file is read whole, so one over {MAX_JSON_BYTES // 2**20} "
            "MiB is refused; write it as .jsonl (one object a line), which is read line by line"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte order mark is allowed
    except UnicodeDecodeError as exc:
        raise DistillError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise DistillError(f"{path}: not valid JSON ({_json_problem(exc)})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} and similar wrappers
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DistillError(f"{path}: expected a JSON list of objects")
    yield from data


def _too_long(cap: int) -> str:
    return (
        f"a row over {cap // 2**20} MiB, longer than any prompt a model takes; it was not read: "
        "remove or shorten that row"
    )


def _json_problem(exc: Exception, one_line: bool = False) -> str:
    """What is wrong with a JSON text, in words: the parser's own message, or the two limits Python sets.
    `one_line`: the text is a JSONL line, whose number the caller gives; only the column is news."""
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"{exc.msg} at column {exc.pos + 1}" if one_line else f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"a number with more than {sys.get_int_max_str_digits()} digits"  # int() refuses longer ones


def _first_line(exc: Exception) -> str:
    """A library's error message for ours: its first line (some are many), or its type when it has none."""
    lines = str(exc).strip().splitlines()
    return shown(lines[0] if lines else type(exc).__name__, limit=200)


def read_parquet(path: Path) -> Iterator[dict]:
    """Rows in batches of BATCH_ROWS (pyarrow's iter_batches): one row group in memory at a time."""
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield from batch.to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def read_csv(path: Path) -> Iterator[dict]:
    """Rows by the csv module, line by line (not pyarrow's CSV reader: it infers types, so an id `007` would become
    the number 7 and every prompt id would change). A line or field over MAX_ROW_BYTES is refused unread."""
    cap = MAX_ROW_BYTES
    try:
        # utf-8-sig: a byte order mark (Excel writes one) would otherwise become part of the first column's name
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(_capped_lines(fh, path, cap))
            for row in _with_field_limit(reader, cap):
                if None in row:  # DictReader files the fields past the header under the key None
                    raise DistillError(
                        f"{path}:{reader.line_num}: more fields than the header's {len(reader.fieldnames)}: "
                        "quote values that hold commas"
                    )
                yield row
    except UnicodeDecodeError as exc:
        raise DistillError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise DistillError(f"{path}:{reader.line_num}: {_too_long(cap)}") from None
        raise DistillError(f"{path}: not a readable CSV file ({exc})") from None


def _with_field_limit(reader, cap: int) -> Iterator[dict]:
    """csv's field limit is global: set it only while this reader takes a row (the default 128 KiB refuses long
    prompts, which are no error), so another reader in between sees its own."""
    while True:
        limit = csv.field_size_limit(cap)
        try:
            row = next(reader, None)
        finally:
            csv.field_size_limit(limit)
        if row is None:
            return
        yield row


def _capped_lines(fh, path: Path, cap: int) -> Iterator[str]:
    number = 0
    while line := fh.readline(cap + 1):
        number += 1
        if len(line) > cap and not line.endswith(("\n", "\r")):
            raise DistillError(f"{path}:{number}: {_too_long(cap)}")
        yield line


def _read_dataset(config, local: bool) -> Iterator[dict]:
    try:
        import datasets  # ~2 s to import; only for datasets folders and hub ids
    except ImportError as exc:
        raise MissingDependency("datasets", "pip install datasets") from exc
    source = config.source
    saved = Path(source, "dataset_info.json").exists() or Path(source, "dataset_dict.json").exists()
    if local and not saved:
        check_json_files(Path(source))
    try:
        if local and saved:
            ds = datasets.load_from_disk(source)  # a folder written by save_to_disk
            if isinstance(ds, datasets.DatasetDict):
                if config.split not in ds:
                    raise DistillError(
                        f"split `{config.split}` not in {source} (splits: {', '.join(ds)}): fix --split"
                    )
                ds = ds[config.split]
        else:
            ds = datasets.load_dataset(source, split=config.split)
    except DistillError:
        raise
    except Exception as exc:  # datasets raises many types: missing split, no network, bad files
        where = "folder" if local else "dataset"
        raise DistillError(f"cannot load {where} {source} (split {config.split}): {_first_line(exc)}") from None
    return dataset_rows(ds)


def dataset_rows(ds) -> Iterator[dict]:
    """A `datasets.Dataset`'s rows, BATCH_ROWS at a time from its memory-mapped Arrow files."""
    for batch in ds.iter(batch_size=BATCH_ROWS):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield dict(zip(columns, values, strict=True))


def check_json_files(folder: Path) -> None:
    """Read a raw folder's JSON files with our readers before `datasets` does.

    pyarrow's JSON reader, which `datasets` uses, kills the process (a segmentation fault, pyarrow 26) on a file
    that starts with `null`; our readers refuse it, and anything else that is not rows of objects, with its line.
    """
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)
        if hidden or path.name.startswith("dataset_info") or not path.is_file():
            continue  # what `datasets` skips too, and its own metadata
        if path.suffix.lower() in (".jsonl", ".json"):
            for _ in read_file_rows(path):  # read and dropped: only the errors matter here
                pass


def _reasoning_gym_rows(config) -> Iterator[dict]:
    try:
        import reasoning_gym  # ~4 s to import; only for reasoning-gym sources
    except ImportError as exc:
        raise MissingDependency("reasoning-gym", "pip install reasoning-gym") from exc
    task = config.source[len(REASONING_GYM) :]
    size = config.num_prompts if config.num_prompts is not None else 100
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=config.seed, **config.source_options)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise DistillError(f"cannot build reasoning-gym task `{task}`: {exc}") from None
    for index, entry in enumerate(dataset):
        yield {
            "id": f"rg-{task}-{config.seed}-{index}",
            "problem": entry["question"],
            "answer": _as_text(entry["answer"]),
        }


FILE_READERS = {".jsonl": read_jsonl, ".json": read_json, ".parquet": read_parquet, ".csv": read_csv}
