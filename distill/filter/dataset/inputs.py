"""Anyone's traces as filter input: reads Parquet, JSONL, JSON, CSV files, `datasets` folders and cached hub ids,
and turns each layout into rows shaped like a `distill generate` output (GENERATE_SCHEMA) plus `origin`.

Layouts (`--input-format`):
- distill: our own generate output; columns are cast to the schema (an int64 `sample_index` is fine).
- messages: TRL conversational rows, a `messages` column whose last assistant turn holds `<think>…</think>` then the
  answer; the turns before it are the prompt.
- sharegpt: `conversations` of `{from, value}` turns (`human`/`user`, `gpt`/`assistant`) and an optional `system`
  column (OpenThoughts-114k, Bespoke-Stratos-17k; the latter's `<|begin_of_thought|>` markers become `<think>`).
- openr1: one row per problem with list columns `generations` and `finish_reasons` and the gold in `answer`
  (OpenR1-Math-220k), expanded to one row per generation.
- columns: any table, its columns named with `--map FIELD=COLUMN`; a table with conventional names (`problem`/
  `question`/`prompt`/`instruction`, `response`/`completion`/`generation`/`output`, `answer`/`gold`/`solution`/
  `ground_truth`; a chain of thought kept apart in `reasoning`/`reasoning_content`/`thinking` beside `content`)
  needs no `--map`: what was guessed is printed, and two candidates for one field are refused. A completion
  column holding a list of samples gives one row per sample (`sample_index`, `file:row#k`).

`--map` composes with every layout: `--map gold=answer` on a `messages` file keeps the layout and reads the gold
from `answer`; mapping a trace field (problem, completion, reasoning, answer) means `columns`.

The domain comes from the source's label; without one, a row with `tests` is code, a row with a gold answer or a
`\\boxed{}` answer is math (a gold is what the math verifier checks: a GSM8K file without boxes is math, not
general), anything else general.

Where the source has no ids, a prompt's id is a hash of its prompt text and a sample's id a hash of its prompt id,
index and completion, so a rerun gives the same ids. Every row keeps `origin`: `file:row` (and `#generation`).
"""

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

from distill.errors import DistillError, near_hint
from distill.generate.parse import THINK_CLOSE, THINK_OPEN, parse_trace, truncated_from_text
from distill.io import check_inside, write_batches_atomic
from distill.schema import GENERATE_SCHEMA

FORMATS = ("auto", "distill", "messages", "sharegpt", "openr1", "columns")
MAP_FIELDS = ("problem", "completion", "reasoning", "answer", "gold", "tests", "domain", "id")
SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
IMPORTED_TEACHER = "imported"
# Bespoke-Stratos / OpenThoughts (early) write the chain of thought between these markers instead of think tags.
STRATOS_MARKERS = (
    ("<|begin_of_thought|>", THINK_OPEN), ("<|end_of_thought|>", THINK_CLOSE),
    ("<|begin_of_solution|>", ""), ("<|end_of_solution|>", ""),
)  # fmt: skip
# Conventional column names of plain files, read without --map (in this order of preference when one is present).
GUESSED = {
    "problem": ("problem", "question", "prompt", "instruction"),
    "completion": ("response", "completion", "generation", "output"),
    "gold": ("answer", "gold", "solution", "ground_truth"),
}
# API dumps keep the chain of thought apart (DeepSeek's `reasoning_content`): with one of these beside the answer
# text (a completion name above, or `content`), the two are read as reasoning + answer, so no thought is lost.
GUESSED_REASONING = ("reasoning", "reasoning_content", "thinking")
TRACE_FIELDS = ("problem", "completion", "reasoning", "answer")  # mapping one of these means the `columns` layout
USER_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
BATCH = 1000
BATCH_BYTES = 32 << 20  # text per batch of normalized rows: what an import holds in memory besides its input
PART_BYTES = 512 << 20  # text per normalized file (a shard of the Ray backend)


@dataclass(slots=True)
class Source:
    """One input: a file (`kind` parquet/jsonl/json/csv), a `datasets` folder or a hub id in the local cache."""

    name: str  # as written in `origin`
    kind: str  # parquet | jsonl | json | csv | datasets | hub
    path: Path | None = None


def parse_map(items: list[str] | dict | None) -> dict[str, str]:
    """`--map problem=question` items (or a recipe's mapping) as {field: column}; unknown fields are errors."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_map(item) for item in items]
    mapping = {}
    for field, column in pairs:
        if field not in MAP_FIELDS:
            raise DistillError(
                f"unknown --map field `{field}`{near_hint(field, MAP_FIELDS)}: map one of {', '.join(MAP_FIELDS)}"
            )
        mapping[field] = str(column)
    return mapping


def _split_map(item: str) -> tuple[str, str]:
    field, sep, column = item.partition("=")
    if not sep or not field.strip() or not column.strip():
        raise DistillError(f"--map takes FIELD=COLUMN, got `{item}` (e.g. --map problem=question)")
    return field.strip(), column.strip()


def find_sources(inputs: list[str]) -> list[Source]:
    """The files behind each input: files, folders (a generate output's data/, or a folder of files), `datasets`
    folders saved with save_to_disk, or hub ids already in the local cache."""
    sources: list[Source] = []
    for name in inputs:
        path = Path(name)
        if path.is_file():
            sources.append(Source(str(path), _kind(path), path))
        elif path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                sources.append(Source(str(path), "datasets", path))
                continue
            folder = path / "data" if (path / "data").is_dir() else path
            found = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("."))
            if not found:
                raise DistillError(f"no Parquet, JSONL, JSON or CSV files in {name}: pass trace files or folders")
            for file in found:
                check_inside(file, path, "the input file")
            sources += [Source(str(p), _kind(p), p) for p in found]
        elif re.fullmatch(r"[\w.-]+/[\w.-]+", name):
            sources.append(Source(name, "hub"))
        else:
            raise DistillError(f"input not found: {name}")
    return sources


def _kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DistillError(f"{path}: cannot read `{path.suffix}` files; give Parquet, JSONL, JSON or CSV")
    return kind


def read_source(source: Source) -> pa.Table:
    """The whole table of one source (imported sets are read once; generate outputs stream, see run.py)."""
    try:
        if source.kind == "parquet":
            return pq.read_table(source.path)
        if source.kind == "csv":
            return pyarrow.csv.read_csv(source.path)
        if source.kind in ("jsonl", "json"):
            rows = _json_rows(source)
            try:
                return pa.Table.from_pylist(rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                _name_the_odd_row(rows, source.name)  # one line naming the row and the column, when it can
                raise
    except DistillError:
        raise
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(
            f"{source.name} is not a readable {source.kind} file ({str(exc).splitlines()[0]})"
        ) from None
    import datasets  # ~2 s to import; only for datasets folders and hub ids

    if source.kind == "datasets":
        loaded = datasets.load_from_disk(str(source.path))
    else:
        try:
            loaded = datasets.load_dataset(source.name, download_mode="reuse_dataset_if_exists")
        except Exception as exc:  # noqa: BLE001 - offline, missing or private: one message
            raise DistillError(
                f"cannot load the hub dataset {source.name} ({str(exc).splitlines()[0][:200]}): download it first "
                "(`huggingface-cli download --repo-type dataset NAME`) or pass a local file"
            ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    return loaded.data.table


def _json_rows(source: Source) -> list[dict]:
    text = source.path.read_text(encoding="utf-8")
    if source.kind == "json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise DistillError(f"{source.name} line {number}: not JSON ({exc})") from None
    if not all(isinstance(row, dict) for row in rows):
        raise DistillError(f"{source.name}: every record must be a JSON object")
    return rows


def _shape(value) -> str:
    if isinstance(value, list):
        inner = {_shape(v) for v in value if v is not None}
        return f"a list of {inner.pop()}s" if len(inner) == 1 else "a list of mixed values" if inner else "a list"
    return {dict: "mapping", str: "text", bool: "boolean", int: "number", float: "number"}.get(type(value), "value")


def _name_the_odd_row(rows: list[dict], where: str) -> None:
    """Records whose values Arrow cannot put in one column (turns that are mappings in one row, numbers in the
    next): raise the error naming the first row whose column differs in shape from the rows before it."""
    seen: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows):
        for column, value in row.items():
            if value is None:
                continue
            shape = _shape(value)
            if shape == "a list of mixed values":
                raise DistillError(f"{where}:{number}: column `{column}` mixes values of different kinds")
            first = seen.setdefault(column, (shape, number))
            if first[0] != shape:
                raise DistillError(
                    f"{where}:{number}: column `{column}` holds {shape}, where row {first[1]} holds {first[0]}"
                )


def detect_format(names: list[str], requested: str, mapping: dict, where: str) -> str:
    """The layout of a table with these columns; an unknown one is an error naming the columns and the flag."""
    return plan_layout(names, requested, mapping, where)[0]


def plan_layout(names: list[str], requested: str, mapping: dict, where: str) -> tuple[str, dict, dict]:
    """(layout, mapping, guessed): the layout of a table with these columns, the --map it is read with (the user's,
    plus conventional column names guessed for a plain table), and what was guessed."""
    if requested not in FORMATS:
        raise DistillError(
            f"unknown --input-format `{requested}`{near_hint(requested, FORMATS)}: use {', '.join(FORMATS)}"
        )
    guessed: dict[str, str] = {}
    if requested == "columns" or (requested == "auto" and _maps_trace(mapping)):
        guessed = _guess_columns(names, mapping, where)
        mapping = {**mapping, **guessed}
        requested = "columns"
    if requested != "auto":
        needed = {
            "distill": [f.name for f in GENERATE_SCHEMA if not f.nullable],
            "messages": ["messages"],
            "sharegpt": ["conversations"],
            "openr1": ["problem", "generations"],
            "columns": [],
        }[requested] + list(mapping.values())
        missing = [c for c in dict.fromkeys(needed) if c not in names]
        if requested == "columns" and ("problem" not in mapping or not {"completion", "answer"} & mapping.keys()):
            raise DistillError(
                f"{where} (columns: {', '.join(names[:20])}): --input-format columns needs --map problem=COLUMN and "
                "--map completion=COLUMN (or --map reasoning=COLUMN --map answer=COLUMN)"
            )
        if missing:
            raise DistillError(f"{where} lacks column(s) {', '.join(missing)} of --input-format {requested} / --map")
        return requested, mapping, guessed
    if all(f.name in names for f in GENERATE_SCHEMA if not f.nullable):
        return plan_layout(names, "distill", mapping, where)
    for layout, column in (("openr1", "generations"), ("sharegpt", "conversations"), ("messages", "messages")):
        if column in names:
            return plan_layout(names, layout, mapping, where)
    guessed = _guess_columns(names, mapping, where)
    if "problem" in guessed and ("completion" in guessed or "answer" in guessed):
        return plan_layout(names, "columns", {**mapping, **guessed}, where)[:2] + (guessed,)
    raise DistillError(
        f"{where}: unknown layout (columns: {', '.join(names[:20])}); pass --input-format columns "
        "--map problem=COLUMN --map completion=COLUMN (or reasoning=/answer=, gold=, id=, domain=)"
    )


def _maps_trace(mapping: dict) -> bool:
    return any(field in mapping for field in TRACE_FIELDS)


def _guess_columns(names: list[str], mapping: dict, where: str) -> dict[str, str]:
    """Conventional column names for the fields --map left out; two candidates for one field are refused."""
    taken = set(mapping.values())
    guessed = {}
    candidates_of = dict(GUESSED)
    if not {"completion", "answer", "reasoning"} & mapping.keys():
        thought = _one_of(GUESSED_REASONING, names, taken, "reasoning", where)
        if thought is not None:
            answer = _one_of(GUESSED["completion"] + ("content",), names, taken | {thought}, "answer", where)
            if answer is not None:
                guessed.update(reasoning=thought, answer=answer)
                taken |= {thought, answer}
                candidates_of.pop("completion")
    for field, candidates in candidates_of.items():
        if field in mapping or (field == "completion" and "answer" in mapping):
            continue
        present = [c for c in candidates if c in names and c not in taken]
        if len(present) > 1:
            raise DistillError(
                f"{where}: columns {' and '.join(f'`{c}`' for c in present)} could each be the {field}: "
                f"pass --map {field}=COLUMN"
            )
        if present:
            guessed[field] = present[0]
            taken.add(present[0])
    return guessed


def _one_of(candidates: tuple[str, ...], names: list[str], taken: set, field: str, where: str) -> str | None:
    present = [c for c in candidates if c in names and c not in taken]
    if len(present) > 1:
        raise DistillError(
            f"{where}: columns {' and '.join(f'`{c}`' for c in present)} could each be the {field}: "
            f"pass --map {field}=COLUMN"
        )
    return present[0] if present else None


def gold_hint(names: list[str], layout: str, mapping: dict) -> str | None:
    """A column that looks like the gold answer while the layout reads none: the --map that would read it."""
    read = mapping.get("gold", "answer" if layout == "openr1" else "gold")
    if read in names:
        return None
    unread = [c for c in GUESSED["gold"] if c in names and c not in mapping.values()]
    if not unread:
        return None
    return f"column `{unread[0]}` looks like the gold answer but no gold is read: pass --map gold={unread[0]}"


def is_exact_distill(schema: pa.Schema) -> bool:
    """A generate output with the exact column types: read as it is, streamed, no conversion."""
    return all(f.name in schema.names and schema.field(f.name).type.equals(f.type) for f in GENERATE_SCHEMA)


def normalize(table: pa.Table, layout: str, mapping: dict, where: str):
    """Generate-shaped rows (with `origin`) of one table, in batches of dicts of at most BATCH rows and about
    BATCH_BYTES of text, however many rows one record expands to."""
    per_prompt: dict[str, int] = {}  # samples seen per prompt id, for sample_index where the source has none
    offset = 0
    out, size = [], 0
    for batch in table.to_batches(max_chunksize=BATCH):
        for i, record in enumerate(batch.to_pylist()):
            origin = f"{where}:{offset + i}"
            if layout == "distill":
                rows = (_from_distill({**record, **{f: record.get(c) for f, c in mapping.items()}}, origin),)
            elif layout == "openr1":
                rows = _from_openr1(record, origin, per_prompt, mapping)
            elif layout == "columns":
                rows = (
                    _finish(part, record, mapping, part.pop("origin"), per_prompt)
                    for part in _from_columns(record, mapping, origin)
                )
            else:
                row = {"messages": _from_messages, "sharegpt": _from_sharegpt}[layout](record, mapping, origin)
                rows = (_finish(row, record, mapping, origin, per_prompt),)
            for row in rows:
                out.append(row)
                size += sum(len(v) for v in row.values() if isinstance(v, str))
                if len(out) >= BATCH or size >= BATCH_BYTES:
                    yield out
                    out, size = [], 0
        offset += batch.num_rows
    if out:
        yield out


def _from_distill(record: dict, origin: str) -> dict:
    row = {f.name: record.get(f.name) for f in GENERATE_SCHEMA}
    for field in ("sample_index", "prompt_tokens", "completion_tokens"):
        if row[field] is not None:
            value = int(row[field])
            if not -(2**31) <= value < 2**31:
                raise DistillError(f"{origin}: `{field}` {value} does not fit int32")
            row[field] = value
    for field in ("id", "prompt_id", "domain", "source", "problem", "prompt_messages", "teacher", "sampling"):
        if row[field] is None:
            raise DistillError(f"{origin}: `{field}` is null; a distill generate row always has one")
        row[field] = str(row[field])
    if row["truncated"] is None:  # from the text only where the finish reason is unknown too
        reason = row["finish_reason"]
        row["truncated"] = reason == "length" or (reason is None and truncated_from_text(row["completion"] or ""))
    row["origin"] = origin
    return row


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # s1K keeps its thinking as a list of trajectories
        return "\n\n".join(str(v) for v in value if v is not None)
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)


def _turns(messages, where: str, role_key: str = "role", content_key: str = "content", column: str = "messages"):
    """The {role, content} turns of a conversation column; a shape error is one line naming the row and column."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            raise DistillError(
                f"{where}: column `{column}` is text that is not JSON: expected a list of turns"
            ) from None
    if not isinstance(messages, list):
        raise DistillError(f"{where}: column `{column}`: expected a list of turns, got {type(messages).__name__}")
    turns = []
    for number, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise DistillError(
                f"{where}: column `{column}`, turn {number} is a {type(turn).__name__}: expected a mapping with "
                f"`{role_key}` and `{content_key}`"
            )
        role = USER_ROLES.get(str(turn.get(role_key, "")).lower())
        if role is None:
            raise DistillError(
                f"{where}: unknown turn role `{turn.get(role_key)}` (expected user/human, assistant/gpt)"
            )
        turns.append({"role": role, "content": _text(turn.get(content_key)) or ""})
    return turns


def _split_conversation(turns: list[dict], where: str) -> dict:
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None or not any(t["role"] == "user" for t in turns[:last]):
        raise DistillError(f"{where}: the conversation needs a user turn followed by an assistant turn")
    prompt = turns[:last]
    problem = next(t["content"] for t in reversed(prompt) if t["role"] == "user")
    return {"problem": problem, "prompt": prompt, "completion": turns[last]["content"]}


def _from_messages(record: dict, mapping: dict, origin: str) -> dict:
    return _split_conversation(_turns(record["messages"], origin), origin)


def _from_sharegpt(record: dict, mapping: dict, origin: str) -> dict:
    turns = _turns(record["conversations"], origin, "from", "value", column="conversations")
    system = record.get("system")
    if system and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, {"role": "system", "content": str(system)})
    return _split_conversation(turns, origin)


def _from_columns(record: dict, mapping: dict, origin: str) -> list[dict]:
    """One part per sample: a completion (or answer) column holding a list of N samples gives N parts, each with its
    `sample_index` and origin `file:row#k`; lists anywhere else that cannot be paired with them are refused rather
    than joined into one text (eight answers glued together are one wrong row)."""
    problem = record.get(mapping["problem"])
    prompt = _prompt_turns(problem, origin)
    if prompt is None:
        problem = _single(problem, "problem", mapping["problem"], origin)
        if problem is None:
            raise DistillError(f"{origin}: the problem column `{mapping['problem']}` is null")
        prompt = [{"role": "user", "content": problem}]
    elif not any(t["role"] == "user" for t in prompt):
        raise DistillError(f"{origin}: the prompt turns in `{mapping['problem']}` have no user turn")
    else:
        problem = next(t["content"] for t in reversed(prompt) if t["role"] == "user")
    if "completion" in mapping:
        samples = _samples(record.get(mapping["completion"]), origin)
        completions = [text or "" for text in samples]
    else:
        answers = _samples(record.get(mapping["answer"]), origin)
        reasoning = record.get(mapping["reasoning"]) if "reasoning" in mapping else None
        if isinstance(reasoning, list) and len(reasoning) == len(answers) > 1:
            thoughts = [_text(r) for r in reasoning]  # one chain of thought per answer
        else:
            thoughts = [_single(reasoning, "reasoning", mapping.get("reasoning", ""), origin)] * len(answers)
        completions = [
            f"{THINK_OPEN}\n{r.strip()}\n{THINK_CLOSE}\n\n{(a or '').strip()}" if r else (a or "")
            for r, a in zip(thoughts, answers, strict=True)
        ]
    parts = [{"problem": problem, "prompt": prompt, "completion": c, "origin": origin} for c in completions]
    if len(parts) > 1:
        for k, part in enumerate(parts):
            part["sample_index"], part["origin"] = k, f"{origin}#{k}"
    return parts


def _samples(value, origin: str) -> list:
    """A trace column's samples: a list of strings is one sample each; anything else is one sample."""
    if isinstance(value, list) and value and all(isinstance(v, str) or v is None for v in value):
        return value
    turns = _prompt_turns(value, origin)
    if turns is not None:  # TRL's conversational completion: [{"role": "assistant", "content": ...}]
        return ["\n\n".join(t["content"] for t in turns if t["role"] == "assistant")]
    return [_text(value)]


def _single(value, field: str, column: str, origin: str) -> str | None:
    """One text; a list of one is its item (s1K's thinking_trajectories), a longer list is refused."""
    if isinstance(value, list):
        if len(value) > 1:
            raise DistillError(
                f"{origin}: column `{column}` ({field}) holds a list of {len(value)}; one row takes one "
                f"{field}: map a single text, or put the samples in the completion column (one row per sample)"
            )
        value = value[0] if value else None
    return _text(value)


def _prompt_turns(value, origin: str) -> list[dict] | None:
    """A value that is a list of chat turns ({role, content}) as our turns; None for anything else."""
    if isinstance(value, list) and value and all(isinstance(t, dict) and "content" in t for t in value):
        return _turns(value, origin)
    return None


def _from_openr1(record: dict, origin: str, per_prompt: dict, mapping: dict | None = None):
    """One row per generation, made as they are read: a problem with 12,000 generations never sits in memory as
    12,000 rows that each copy it."""
    openr1_map = {"gold": "answer", "id": "uuid", "domain": "domain", **(mapping or {})}
    generations = record.get("generations") or []
    reasons = record.get("finish_reasons") or []
    for column, value in (("generations", generations), ("finish_reasons", reasons)):
        if not isinstance(value, list):
            raise DistillError(f"{origin}: column `{column}` is a {type(value).__name__}: expected a list")
    if not isinstance(record.get("problem"), str):
        raise DistillError(f"{origin}: column `problem` is {type(record.get('problem')).__name__}: expected text")
    for k, generation in enumerate(generations):
        if generation is None:
            continue
        if not isinstance(generation, str):
            raise DistillError(
                f"{origin}: column `generations`, item {k} is a {type(generation).__name__}: expected text"
            )
        part = {
            "problem": record["problem"],
            "prompt": [{"role": "user", "content": record["problem"]}],
            "completion": generation,
            "finish_reason": reasons[k] if k < len(reasons) else None,
            "sample_index": k,
        }
        yield _finish(part, record, openr1_map, f"{origin}#{k}", per_prompt)


def _finish(part: dict, record: dict, mapping: dict, origin: str, per_prompt: dict) -> dict:
    """The generate-shaped row: ids, domain, gold and the trace split into reasoning and answer."""
    completion = part["completion"]
    for marker, replacement in STRATOS_MARKERS:
        completion = completion.replace(marker, replacement)
    problem = part["problem"]
    given_id = record.get(mapping.get("id", "id"))
    prompt_id = str(given_id) if given_id is not None else _hash(json.dumps(part["prompt"], ensure_ascii=False))
    index = part.get("sample_index")
    if index is None:
        index = per_prompt.get(prompt_id, 0)
    per_prompt[prompt_id] = max(per_prompt.get(prompt_id, 0), index + 1)
    trace = parse_trace(completion)
    finish_reason = part.get("finish_reason") or record.get("finish_reason")
    truncated = finish_reason == "length" or (finish_reason is None and truncated_from_text(completion))
    gold = _single(record.get(mapping.get("gold", "gold")), "gold", mapping.get("gold", "gold"), origin)
    tests = _text(record.get(mapping.get("tests", "tests")))
    domain = _domain(_text(record.get(mapping.get("domain", "domain"))), completion, gold, tests)
    return {
        "id": _hash(json.dumps([prompt_id, index, completion], ensure_ascii=False)),
        "prompt_id": prompt_id,
        "sample_index": index,
        "domain": domain,
        "source": str(record.get("source") or "imported"),
        "problem": problem,
        "prompt_messages": json.dumps(part["prompt"], ensure_ascii=False),
        "gold": gold,
        "tests": tests,
        "reasoning": trace.reasoning,
        "answer": trace.answer,
        "completion": completion,
        "finish_reason": finish_reason,
        "truncated": truncated,
        "prompt_tokens": None,
        "completion_tokens": None,
        "teacher": str(record.get("model") or record.get("teacher") or IMPORTED_TEACHER),
        "sampling": "{}",
        "error": None,
        "origin": origin,
    }


def _domain(value: str | None, completion: str, gold: str | None = None, tests: str | None = None) -> str:
    """Our four domains from a source's label. Without one: tests say code; a gold answer or a boxed answer says
    math (the gold is what the math verifier checks: a GSM8K-style file whose answers carry no box is math, and
    calling it general let `--verifiers math` keep every row unchecked); anything else is general."""
    if value:
        label = value.strip().lower()
        if label in ("math", "code", "science", "general"):
            return label
        if label in ("biology", "chemistry", "physics", "science"):
            return "science"
        if label in ("coding", "programming", "python"):
            return "code"
        return "math" if "math" in label else "general"
    if tests and tests.strip():
        return "code"
    if (gold and gold.strip()) or "\\boxed" in completion:
        return "math"
    return "general"


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _up_to(batches, limit: int):
    """Batches from `batches` until they hold `limit` bytes of text (the rest stays for the next call)."""
    size = 0
    for batch in batches:
        yield batch
        size += sum(len(v) for row in batch for v in row.values() if isinstance(v, str))
        if size >= limit:
            return


INPUT_SCHEMA = pa.schema(list(GENERATE_SCHEMA) + [pa.field("origin", pa.string())])


def prepare_inputs(inputs: list[str], requested: str, mapping: dict) -> list[tuple]:
    """Each source with its layout, checked before anything is written: (source, layout, table or None, the --map
    it is read with: the user's plus the conventional column names guessed for it, printed in one line).

    A generate output with the exact schema is streamed from its file later (table None); others are read now.
    """
    plans = []
    for source in find_sources(inputs):
        if source.kind == "parquet" and requested in ("auto", "distill") and not mapping:
            try:
                schema = pq.read_schema(source.path)
            except Exception as exc:  # pyarrow raises several types for damaged files
                raise DistillError(f"{source.path} is not a readable Parquet file ({exc})") from None
            if is_exact_distill(schema):
                plans.append((source, "distill", None, mapping))
                continue
        table = read_source(source)
        layout, mapped, guessed = plan_layout(table.column_names, requested, mapping, source.name)
        if guessed:
            said = ", ".join(f"{field}={guessed[field]}" for field in MAP_FIELDS if field in guessed)
            print(f"{source.name}: read as columns: {said} (--map FIELD=COLUMN to change)", file=sys.stderr)
        hint = gold_hint(table.column_names, layout, mapped)
        if hint:
            print(f"warning: {source.name}: {hint}", file=sys.stderr)
        plans.append((source, layout, table, mapped))
    return plans


def write_normalized(plans: list, mapping: dict, folder: Path) -> list[Path]:
    """The Parquet files filter reads: exact generate outputs as they are, the others normalized into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, (source, layout, table, mapped) in enumerate(plans):
        if table is None:
            files.append(source.path)
            continue
        # Streamed, batch by batch: an 8 KB OpenR1 file (a 200 KB problem, 12,000 generations) needed 13 GB
        # when its rows were all made before writing. A source that expands past PART_BYTES of text goes into
        # several files: each is a shard the Ray backend holds whole while it writes its outputs.
        batches = normalize(table, layout, mapped, source.name)
        part = 0
        while True:
            name = f"input-{number:05d}.parquet" if part == 0 else f"input-{number:05d}-part-{part:05d}.parquet"
            if not write_batches_atomic(_up_to(batches, PART_BYTES), INPUT_SCHEMA, folder / name):
                break
            files.append(folder / name)
            part += 1
        if part == 0:
            raise DistillError(f"{source.name} has no traces to filter")
    return files
