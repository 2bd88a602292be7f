"""Prompt sources: local JSONL/JSON/Parquet/CSV files, `datasets` folders and hub ids, and reasoning-gym.

Every source becomes a list of `Prompt`s with a stable `prompt_id`, a `domain`, the chat `messages` sent to
the teacher, and the gold answer and code tests when the source has them.
"""

import csv
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import shown
from distill.errors import DistillError, MissingDependency

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


@dataclass(slots=True)
class Prompt:
    prompt_id: str
    problem: str
    messages: list[dict]
    domain: str
    source: str
    gold: str | None = None
    tests: str | None = None


def load_prompts(config) -> list[Prompt]:
    """Read the configured source and turn its rows into prompts (all of them; sharding comes later)."""
    if config.source.startswith(REASONING_GYM):
        rows, label = _reasoning_gym_rows(config), config.source
        default_domain = "math"
    else:
        rows, label = _read_rows(config), _source_label(config.source)
        default_domain = "math"
    if config.num_prompts is not None:
        if config.num_prompts < 1:  # a negative count would slice from the end and drop rows silently
            raise DistillError(f"--num-prompts must be at least 1, got {config.num_prompts}")
        rows = rows[: config.num_prompts]
    if not rows:
        raise DistillError(f"source {config.source} holds no rows")
    return _to_prompts(rows, config, label, default_domain)


def shard_of(prompt_id: str, num_shards: int) -> int:
    """Which of `num_shards` hosts owns a prompt: a hash, so it does not depend on row order."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) % num_shards


def apply_template(template: str, problem: str) -> str:
    # str.replace, not str.format: templates hold literal braces such as \boxed{}.
    return template.replace("{problem}", problem)


def _source_label(source: str) -> str:
    path = Path(source)
    return path.name if path.exists() else source


def _to_prompts(rows: list[dict], config, label: str, default_domain: str) -> list[Prompt]:
    columns = list(rows[0].keys())
    prompt_col = _pick_column(columns, config.prompt_column, PROMPT_COLUMNS, "--prompt-column", required=True)
    answer_col = _pick_column(columns, config.answer_column, ANSWER_COLUMNS, "--answer-column")
    id_col = _pick_column(columns, config.id_column, ("id",), "--id-column")
    if config.domain is not None and config.domain not in DOMAINS:
        raise DistillError(f"unknown domain `{shown(config.domain)}`: choose one of {', '.join(DOMAINS)}")
    for flag, text in (("--system-prompt", config.system_prompt), ("--prompt-template", config.prompt_template)):
        if text is not None and not _is_unicode(text):
            raise DistillError(f"{flag} is not valid UTF-8 text: fix its value")

    prompts, seen = [], {}
    for number, row in enumerate(rows, start=1):
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
            if prompt_id in seen:
                raise DistillError(
                    f"row {number} of {label} repeats id `{shown(prompt_id)}` (first at row {seen[prompt_id]})"
                )
            seen[prompt_id] = number
        else:
            digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
            # The same prompt twice in one file still gets two distinct, stable ids.
            count = seen.get(digest, 0)
            seen[digest] = count + 1
            prompt_id = digest if count == 0 else f"{digest}-{count}"
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
        prompts.append(prompt)
    return prompts


def _is_unicode(text: str | None) -> bool:
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _pick_column(columns: list[str], wanted: str | None, candidates, flag: str, required: bool = False):
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


def _read_rows(config) -> list[dict]:
    path = Path(config.source)
    if path.is_file():
        suffix = "".join(path.suffixes[-1:]).lower()
        readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
        if suffix not in readers:
            raise DistillError(f"cannot read {path}: use a .jsonl, .json, .parquet or .csv file")
        return readers[suffix](path)
    if path.is_dir():
        return _read_dataset(config, local=True)
    if path.suffix or config.source.startswith((".", "/", "~")):
        raise DistillError(f"source not found: {config.source}")
    return _read_dataset(config, local=False)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    # Binary lines, decoded one by one, so a bad byte is reported with its line number.
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
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
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
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
    return data


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


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def _read_csv(path: Path) -> list[dict]:
    # The csv module refuses fields over 128 KiB, but a long prompt is no error: lift the limit while reading.
    limit = csv.field_size_limit(2**31 - 1)
    try:
        # utf-8-sig: a byte order mark (Excel writes one) would otherwise become part of the first column's name
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = []
            for row in reader:
                if None in row:  # DictReader files the fields past the header under the key None
                    raise DistillError(
                        f"{path}:{reader.line_num}: more fields than the header's {len(reader.fieldnames)}: "
                        "quote values that hold commas"
                    )
                rows.append(row)
            return rows
    except UnicodeDecodeError as exc:
        raise DistillError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        raise DistillError(f"{path}: not a readable CSV file ({exc})") from None
    finally:
        csv.field_size_limit(limit)


def _read_dataset(config, local: bool) -> list[dict]:
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependency("datasets", "pip install datasets") from exc
    source = config.source
    saved = Path(source, "dataset_info.json").exists() or Path(source, "dataset_dict.json").exists()
    if local and not saved:
        _check_json_files(Path(source))
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
    return ds.to_list()


def _check_json_files(folder: Path) -> None:
    """Read a raw folder's JSON files with our readers before `datasets` does.

    pyarrow's JSON reader, which `datasets` uses, kills the process (a segmentation fault, pyarrow 26) on a file
    that starts with `null`; our readers refuse it, and anything else that is not rows of objects, with its line.
    """
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)
        if hidden or path.name.startswith("dataset_info") or not path.is_file():
            continue  # what `datasets` skips too, and its own metadata
        if path.suffix.lower() == ".jsonl":
            _read_jsonl(path)
        elif path.suffix.lower() == ".json":
            _read_json(path)


def _reasoning_gym_rows(config) -> list[dict]:
    try:
        import reasoning_gym
    except ImportError as exc:
        raise MissingDependency("reasoning-gym", "pip install reasoning-gym") from exc
    task = config.source[len(REASONING_GYM) :]
    size = config.num_prompts if config.num_prompts is not None else 100
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=config.seed, **config.source_options)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise DistillError(f"cannot build reasoning-gym task `{task}`: {exc}") from None
    return [
        {
            "id": f"rg-{task}-{config.seed}-{index}",
            "problem": entry["question"],
            "answer": _as_text(entry["answer"]),
        }
        for index, entry in enumerate(dataset)
    ]
