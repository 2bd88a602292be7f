"""Prompt sources: local JSONL/JSON/Parquet/CSV files, `datasets` folders and hub ids, and reasoning-gym.

Every source becomes a list of `Prompt`s with a stable `prompt_id`, a `domain`, the chat `messages` sent to
the teacher, and the gold answer and code tests when the source has them.
"""

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        raise DistillError(f"unknown domain `{config.domain}`: choose one of {', '.join(DOMAINS)}")

    prompts, seen = [], {}
    for number, row in enumerate(rows, start=1):
        problem = row.get(prompt_col)
        if not isinstance(problem, str) or not problem.strip():
            raise DistillError(f"row {number} of {label} has an empty or non-text prompt in column `{prompt_col}`")
        domain = config.domain or row.get("domain") or default_domain
        if domain not in DOMAINS:
            raise DistillError(f"row {number} of {label} has unknown domain `{domain}`: use {', '.join(DOMAINS)}")
        messages = []
        if config.system_prompt:
            messages.append({"role": "system", "content": config.system_prompt})
        template = config.prompt_template or DEFAULT_TEMPLATES[domain]
        messages.append({"role": "user", "content": apply_template(template, problem)})

        if id_col is not None:
            prompt_id = str(row[id_col])
            if prompt_id in seen:
                raise DistillError(
                    f"row {number} of {label} repeats id `{prompt_id}` (first at row {seen[prompt_id]})"
                )
            seen[prompt_id] = number
        else:
            digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
            # The same prompt twice in one file still gets two distinct, stable ids.
            count = seen.get(digest, 0)
            seen[digest] = count + 1
            prompt_id = digest if count == 0 else f"{digest}-{count}"
        prompts.append(
            Prompt(
                prompt_id=prompt_id,
                problem=problem,
                messages=messages,
                domain=domain,
                source=label,
                gold=_as_text(row.get(answer_col)) if answer_col else None,
                tests=_as_json_text(row.get("tests")),
            )
        )
    return prompts


def _pick_column(columns: list[str], wanted: str | None, candidates, flag: str, required: bool = False):
    if wanted is not None:
        if wanted not in columns:
            raise DistillError(f"column `{wanted}` not found (columns: {', '.join(columns)}): fix {flag}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DistillError(f"no prompt column among {', '.join(columns)}: pass {flag}")
    return None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _as_json_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


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
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DistillError(f"{path}:{number}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DistillError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DistillError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DistillError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} and similar wrappers
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DistillError(f"{path}: expected a JSON list of objects")
    return data


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DistillError(f"{path}: not a readable CSV file ({exc})") from None


def _read_dataset(config, local: bool) -> list[dict]:
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependency("datasets", "pip install datasets") from exc
    source = config.source
    try:
        if local and (Path(source, "dataset_info.json").exists() or Path(source, "dataset_dict.json").exists()):
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
        raise DistillError(
            f"cannot load {where} {source} (split {config.split}): {str(exc).splitlines()[0]}"
        ) from None
    return ds.to_list()


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
