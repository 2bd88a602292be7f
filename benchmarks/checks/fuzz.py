"""Fuzzing (issue 6): hostile prompt files, recipes and stage configs end cleanly, never in a traceback; and
(issue 11) the verifiers' scans of model output run in linear time on hostile text (`check_runtime`).

The property, for every target: the input either loads, and what it loads is sane (unique prompt ids, text that
encodes as UTF-8, a known domain), or it is refused with a one-line DistillError, which the CLI prints as
`Error: ...` with exit status 1. Any other exception is a bug. The prompt readers skip no rows (only blank
JSONL lines): a bad row stops the load with an error naming the file and the row, so there is no skip count.

tests/test_fuzz.py imports the strategies and checks from here and runs fewer examples; `run()` runs many and
counts, for the reliability table. Nothing here starts a model: `generate` through the CLI stops where the
engine would start, and `distill run` is only planned (--dry-run).
"""

import datetime
import functools
import json
import shutil
import time
import types
import typing
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.checks import Outcome
from distill.errors import DistillError

# --------------------------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------------------------


class Crash(AssertionError):
    """An input ended in something other than a load or a clean DistillError: a bug."""


def clean(func, *args) -> str:
    """Run one input: "ok" when it loads, "error" for a clean DistillError; anything else raises Crash."""
    try:
        func(*args)
    except Crash:
        raise
    except DistillError as exc:
        message = str(exc)
        if not message.strip() or "\n" in message:
            raise Crash(f"a DistillError must be one line, got {message[:300]!r}") from exc
        return "error"
    except Exception as exc:  # the bug this module hunts: any other exception is a traceback for the user
        raise Crash(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    return "ok"


# --------------------------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"
HUGE = "x" * 5_000_000  # a 5 MB prompt: must load like any other
COLUMNS = ("problem", "prompt", "question", "instruction", "answer", "gold", "id", "domain", "tests", "extra")
NASTY_TEXT = [
    "",
    " ",
    "\t\r\n",
    "\x00",
    "a\x00b",
    "\ufeffBOM",
    "\ud800",  # a lone surrogate: valid in a JSON escape, not encodable as UTF-8
    "x\udfffy",
    "{problem}",
    "\\boxed{}",
    "null",
    "None",
    "1e-5",
    "\u202eright-to-left",
    "emoji \U0001f4a5",
    "a" * 2000,
    "line\nbreak",
    'quote " and , comma',
]


def chance(draw, percent: int) -> bool:
    """True in about `percent` % of draws (`integers(0, 9) == 0` is not 10 %: Hypothesis favours 0)."""
    return draw(st.integers(1, 100)) > 100 - percent


texts = st.one_of(st.text(max_size=20), st.sampled_from(NASTY_TEXT))
utf8_texts = st.text(st.characters(codec="utf-8"), max_size=20)  # what Arrow and YAML can hold
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    texts,
)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3), max_leaves=6
)
# A small pool, so duplicate ids are common; and ids of every wrong type.
ids = st.one_of(
    st.sampled_from(["p1", "p2", 1, 2, "1", None, "", 1.5, True, [1], {"a": 1}, "\ud800", "a\x00b"]),
    st.uuids().map(str),
)


@st.composite
def rows(draw) -> dict:
    """A prompt row: mostly with a text prompt (so the checks behind it run), any other column of any type."""
    row = draw(st.dictionaries(st.one_of(st.sampled_from(COLUMNS), texts), json_values, max_size=4))
    if chance(draw, 90):
        column = "problem" if chance(draw, 85) else draw(st.sampled_from(("prompt", "question", "instruction")))
        row[column] = draw(st.text(min_size=1, max_size=30)) if chance(draw, 90) else draw(json_values)
    if draw(st.booleans()):
        row["id"] = draw(ids)
    if chance(draw, 30):
        row["domain"] = draw(st.sampled_from(["math", "code", "science", "general", "poetry", "", None, 1]))
    return row


OPTION_VALUES = {
    "prompt_column": st.sampled_from([*COLUMNS, "missing", ""]),
    "answer_column": st.sampled_from([*COLUMNS, "missing"]),
    "id_column": st.sampled_from([*COLUMNS, "missing"]),
    "domain": st.sampled_from(["math", "code", "science", "general", "poetry", ""]),
    "system_prompt": texts,
    "prompt_template": st.one_of(texts, st.just("Q: {problem} {problem}")),
    "num_prompts": st.integers(-2, 5),
}
# Mostly no flags, so most inputs reach the rows; one or two flags otherwise.
prompt_options = st.one_of(
    st.just({}),
    st.just({}),
    st.lists(st.sampled_from(list(OPTION_VALUES)), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: OPTION_VALUES[key] for key in keys})
    ),
)

# --------------------------------------------------------------------------------------------------------------
# Prompt files
# --------------------------------------------------------------------------------------------------------------

GARBAGE = [
    b"",
    b"   ",
    b"\x00",
    b"\xff\xfe",
    b"{",
    b'{"problem": "x"',
    b"[1, 2]",
    b"null",
    b'"text"',
    b"42",
    b'{"problem": ' + b"9" * 5000 + b"}",  # more digits than Python converts to an int
    b"[" * 5000 + b"]" * 5000,  # deeper than the JSON parser recurses
    b'{"problem": NaN}',
    b"{'problem': 'x'}",
    b'{"problem": "x"}{"problem": "y"}',
    b'{"problem": "\\ud800"}',
    b'{"problem": "x", "problem": "y"}',
]
garbage = st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=30))


def _json_bytes(value, raw: bool) -> bytes:
    # raw: lone surrogates written as bytes, which makes the file invalid UTF-8 (a hostile input of its own)
    return json.dumps(value, ensure_ascii=not raw).encode("utf-8", "surrogatepass")


def _with_bom(strategy):
    return st.tuples(st.integers(0, 4), strategy).map(lambda pair: BOM + pair[1] if pair[0] == 0 else pair[1])


@st.composite
def jsonl_files(draw) -> bytes:
    """Rows as JSON lines; in a third of the files one bad line (garbage, or a row with raw surrogates) too."""
    lines = draw(st.lists(st.builds(_json_bytes, rows(), st.just(False)), max_size=5))
    if chance(draw, 33):
        bad = draw(st.one_of(garbage, st.builds(_json_bytes, rows(), st.just(True))))
        lines.insert(draw(st.integers(0, len(lines))), bad)
    data = draw(st.sampled_from([b"\n", b"\r\n"])).join(lines)
    return BOM + data if chance(draw, 20) else data


json_files = _with_bom(
    st.one_of(
        *[st.builds(_json_bytes, st.lists(rows(), max_size=5), st.just(False))] * 3,
        st.builds(_json_bytes, st.lists(rows(), max_size=5), st.just(True)),
        st.builds(
            lambda key, value: _json_bytes({key: value}, False),
            st.sampled_from(["data", "rows", "train", ""]),
            st.lists(rows(), max_size=4),
        ),
        st.builds(_json_bytes, json_values, st.booleans()),
        garbage,
    )
)
csv_cells = st.one_of(texts, st.sampled_from(["a,b", 'say "hi"', '"', "x\ny", "1", ""]))


@st.composite
def csv_files(draw) -> bytes:
    """Header and ragged rows, cells quoted or not (raw quotes and newlines break the structure on purpose)."""
    header = draw(st.lists(st.one_of(st.sampled_from(COLUMNS), texts), max_size=5))
    if chance(draw, 75):
        header = ["problem", *header]
    table = [header, *draw(st.lists(st.lists(csv_cells, max_size=6), max_size=5))]
    lines = []
    for cells in table:
        quoted = [draw(st.booleans()) for _ in cells]
        lines.append(
            ",".join('"' + c.replace('"', '""') + '"' if q else c for c, q in zip(cells, quoted, strict=True))
        )
    data = draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode("utf-8", "surrogatepass")
    if chance(draw, 20):
        data = BOM + data
    if chance(draw, 10):
        data += draw(garbage)
    return data


def _arrow_types():
    import pyarrow as pa

    times = st.datetimes(datetime.datetime(1970, 1, 1), datetime.datetime(2100, 1, 1))
    return {
        "string": (pa.string(), utf8_texts),
        "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        "float": (pa.float64(), st.floats()),
        "bool": (pa.bool_(), st.booleans()),
        "null": (pa.null(), st.none()),
        "list": (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=3)),
        "list of text": (pa.list_(pa.string()), st.lists(utf8_texts, max_size=3)),
        "struct": (pa.struct([("a", pa.string())]), st.fixed_dictionaries({"a": utf8_texts})),
        "map": (pa.map_(pa.string(), pa.int64()), st.lists(st.tuples(utf8_texts, st.integers(0, 9)), max_size=2)),
        "binary": (pa.binary(), st.binary(max_size=10)),
        "timestamp": (pa.timestamp("s"), times),
        "date": (pa.date32(), st.dates()),
        "decimal": (pa.decimal128(10, 2), st.decimals(-1000, 1000, places=2, allow_nan=False)),
    }


@st.composite
def parquet_files(draw) -> bytes:
    """A table whose columns have any Arrow type (or none), a truncated file, or garbage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = draw(st.sampled_from(["table"] * 8 + ["truncated", "garbage"]))
    if kind == "garbage":
        return draw(st.one_of(garbage, st.binary(max_size=30).map(lambda b: b"PAR1" + b + b"PAR1")))
    types = _arrow_types()
    names = draw(st.lists(st.one_of(st.sampled_from(COLUMNS), utf8_texts), max_size=4, unique=True))
    if chance(draw, 75) and "problem" not in names:
        names.insert(0, "problem")
    count = draw(st.integers(1, 4)) if chance(draw, 90) else 0
    columns = {}
    for name in names:
        arrow_type, values = types[
            "string" if name == "problem" and draw(st.booleans()) else draw(st.sampled_from(list(types)))
        ]
        cells = [None if chance(draw, 15) else draw(values) for _ in range(count)]
        columns[name] = pa.array(cells, type=arrow_type)
    table = pa.table(columns) if columns else pa.table({"": pa.array([], pa.null())}).drop_columns([""])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@dataclass(slots=True)
class DatasetCase:
    kind: str  # save_to_disk, splits, raw (a folder of data files), broken (save_to_disk, then damaged)
    rows: list[dict]
    split: str
    files: dict[str, bytes]


@st.composite
def dataset_folders(draw) -> DatasetCase:
    kind = draw(st.sampled_from(["save_to_disk", "splits", "raw", "broken"]))
    # One type per column: `datasets` refuses mixed columns while building, which is not what is fuzzed here.
    template = draw(st.fixed_dictionaries({}, optional={"id": st.just("id"), "answer": st.just(0)}))
    rows_ = []
    for index in range(draw(st.integers(0, 4))):
        row = {"problem": draw(st.one_of(st.text(max_size=10), st.sampled_from(NASTY_TEXT[:7])))}
        row["problem"] = row["problem"].encode("utf-8", "replace").decode()
        if "id" in template:
            row["id"] = draw(st.sampled_from([f"p{index}", "same"]))
        if "answer" in template:
            row["answer"] = draw(st.integers(-5, 5))
        rows_.append(row)
    files = {}
    if kind == "raw":
        for _ in range(draw(st.integers(0, 2))):
            suffix = draw(st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt", ".bin"]))
            files[f"data{len(files)}{suffix}"] = draw(PROMPT_FILES.get(suffix, garbage))
    split = draw(st.sampled_from(["train", "test", "nope"]))
    return DatasetCase(kind, rows_, split, files)


def check_prompt_file(case: tuple[bytes, str, dict], work: Path) -> str:
    """Write the bytes as a prompt file and load it as `distill generate` does."""
    data, suffix, options = case
    path = work / f"prompts{suffix}"
    path.write_bytes(data)
    return clean(load_and_inspect, str(path), options)


def check_dataset_folder(case: DatasetCase, work: Path) -> str:
    import datasets

    # Keep thousands of progress bars and warnings about damaged files off the terminal, for this check only.
    bars, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return _check_dataset_folder(case, work)
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _check_dataset_folder(case: DatasetCase, work: Path) -> str:
    import datasets

    folder = work / "dataset"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if case.kind == "raw":
        for name, data in case.files.items():
            (folder / name).write_bytes(data)
    else:
        ds = datasets.Dataset.from_list(case.rows) if case.rows else datasets.Dataset.from_dict({"problem": []})
        if case.kind == "splits":
            ds = datasets.DatasetDict({"train": ds, "test": ds})
        ds.save_to_disk(str(folder))
        if case.kind == "broken":
            for arrow in folder.glob("*.arrow"):
                arrow.write_bytes(arrow.read_bytes()[:20])
    # Folders of raw files are built into an Arrow cache: keep it under `work`, not in the user's home.
    with mock.patch.object(datasets.config, "HF_DATASETS_CACHE", str(work / "hf-cache")):
        return clean(load_and_inspect, str(folder), {"split": case.split})


def load_and_inspect(source: str, options: dict) -> None:
    """What `distill generate` does with a source before the engine starts, then the invariants of the result."""
    from distill.config import GenerateConfig
    from distill.generate.sources import DOMAINS, load_prompts, shard_of

    config = GenerateConfig(source=source, out="unused", **options)
    config.validate()
    prompts = load_prompts(config)
    if not prompts:
        raise Crash("load_prompts returned no prompts instead of an error")
    ids_seen = set()
    for prompt in prompts:
        texts_ = [prompt.prompt_id, prompt.problem, prompt.domain, prompt.source, prompt.gold, prompt.tests]
        texts_ += [m["content"] for m in prompt.messages]
        for text in texts_:
            if text is not None and not isinstance(text, str):
                raise Crash(f"prompt {prompt.prompt_id!r} holds a {type(text).__name__} where text belongs")
            try:
                (text or "").encode("utf-8")
            except UnicodeEncodeError:
                raise Crash(
                    f"prompt {prompt.prompt_id!r} holds text that is not valid Unicode: {text!r:.80}"
                ) from None
        if not prompt.prompt_id or prompt.prompt_id in ids_seen:
            raise Crash(f"prompt id {prompt.prompt_id!r} is empty or repeated")
        ids_seen.add(prompt.prompt_id)
        if prompt.domain not in DOMAINS or not prompt.problem.strip():
            raise Crash(f"prompt {prompt.prompt_id!r} has domain {prompt.domain!r} or an empty problem")
        shard_of(prompt.prompt_id, 3)


# --------------------------------------------------------------------------------------------------------------
# Recipes and stage configs
# --------------------------------------------------------------------------------------------------------------

THIS_FILE = str(Path(__file__).resolve())  # a path that exists and is a file (not a folder): a hostile `out`
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    texts,
    st.dates(),
    st.sampled_from(["1e-5", "yes", "~", THIS_FILE]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.one_of(texts, st.integers(), st.none()), kids, max_size=3)
    ),
    max_leaves=6,
)
# Values that get past the first checks, so the later ones run too.
FIELD_VALUES = {
    "source": st.sampled_from(
        [
            THIS_FILE,
            "missing.jsonl",
            "/nonexistent/p.csv",
            "reasoning-gym:basic_arithmetic",
            "reasoning-gym:",
            "",
            "x/y",
        ]
    ),
    "engine": st.sampled_from(["transformers", "vllm", "openai", "tensorflow"]),
    "out": st.sampled_from([THIS_FILE, "runs/fuzz-out", "", "a\x00b", "/"]),
    "inputs": st.one_of(st.sampled_from([[], "math", ["math", "x"], [THIS_FILE], [1], [[]], [{}]]), yaml_values),
    "verifiers": st.sampled_from(
        [
            "math",
            "math,format",
            ["math", "nope"],
            {"math": {}, "format": None},
            {"nope": {}},
            {"math": {"x": 1}},
            {"math": {"extraction": "lenient"}},
            {1: {}},
            {"math": 5},
            {"math": [1]},
            [1],
            [[1]],
            {},
            [],
        ]
    ),
    "ratio": st.sampled_from(
        [{"math": 3, "general": 1}, {"math": 0}, {"math": -1}, {"math": float("nan")}, {}, {1: 1}]
    ),
    "data": st.sampled_from([[], "x", ["a", 1], None]),
    "models": st.sampled_from([[None, "x"], "x", None, [], [1]]),
    "labels": st.sampled_from([["a"], "a", [1], ["a", "b", "c"]]),
    "name": st.one_of(st.sampled_from(["math", "general", "math", 1, None, "", "../x", True]), texts),
}


def _typed_values(annotation) -> st.SearchStrategy:
    """Values of the type a config field declares (the strategy for well-typed input)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return yaml_values
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_typed_values(a) for a in args])
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-3, 10)
    if annotation is float:
        return st.one_of(st.floats(-1, 2), st.integers(-1, 3))
    if annotation is str:
        return texts
    if origin is list:
        return st.lists(_typed_values(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(_typed_values(args[0]), _typed_values(args[1]), max_size=2)
    if annotation is dict:
        return st.dictionaries(texts, yaml_values, max_size=2)
    return yaml_values


def config_classes() -> dict[str, type]:
    """The class behind each recipe section."""
    from distill.config import EvalConfig, FilterConfig, GenerateConfig, MixConfig, PublishConfig, TrainConfig

    return {
        "generate": GenerateConfig,
        "filter": FilterConfig,
        "mix": MixConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "publish": PublishConfig,
    }


@st.composite
def sections(draw, cls: type, named: bool = False) -> dict:
    """A mapping of a few of the class's keys: well-typed values mostly, any value sometimes, a bad key rarely."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    if "source" in names and "source" not in chosen and chance(draw, 75):
        chosen.append("source")
    section = {}
    for name in chosen:
        good = FIELD_VALUES.get(name, _typed_values(hints[name]))
        section[name] = draw(st.one_of(good, good, good, yaml_values))
    if named or chance(draw, 10):
        section["name"] = draw(FIELD_VALUES["name"])
    if chance(draw, 10):
        section[draw(st.one_of(st.sampled_from(["sourc", "modle", 1, None, True, 2.5, ""]), texts))] = 1
    return section


@st.composite
def recipes(draw) -> dict:
    classes = config_classes()
    recipe = {}
    for key in draw(st.lists(st.sampled_from(list(classes)[:6] + ["out", "description"]), max_size=4, unique=True)):
        if key in ("out", "description"):
            recipe[key] = draw(st.one_of(FIELD_VALUES["out"], yaml_values))
        elif key in ("generate", "filter"):
            recipe[key] = draw(
                st.one_of(
                    sections(classes[key]), st.lists(sections(classes[key], named=True), max_size=3), yaml_values
                )
            )
        else:
            recipe[key] = draw(st.one_of(sections(classes[key]), sections(classes[key]), yaml_values))
    if chance(draw, 10):
        recipe[draw(st.one_of(st.sampled_from(["generat", "trian", 1, None, ("a",)]), texts))] = draw(yaml_values)
    return recipe


def _yaml_dump(value) -> bytes:
    import yaml

    try:
        return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")
    except Exception:  # a value YAML cannot write (a tuple key): its repr is hostile input too
        return repr(value).encode("utf-8", "surrogatepass")


YAML_FRAGMENTS = [
    "generate:",
    "  source: prompts.jsonl",
    "\tsource: x",  # a tab indent
    "out: runs/fuzz",
    f"out: {THIS_FILE}",
    "- a",
    "- name: math",
    "filter: &f {verifiers: [math]}",
    "eval: *f",
    "train: &t [*t]",  # a list that holds itself
    "a: *undefined",
    "<<: {generate: {}}",
    "train: !!python/object/apply:os.system [echo]",
    "out: " + "9" * 5000,
    "[" * 2000,
    "? [1, 2]\n: x",
    "1: 2",
    "null: x",
    "true: x",
    "~",
    "--- a\n--- b",
    "%YAML 1.1\n---",
    "\x00",
    "\ufeff",
    'out: "\\ud800"',
    "generate: [1, 2, 3]",
    "generate: {source: reasoning-gym:basic_arithmetic, num_prompts: 1e-5}",
    "generate:\n  - name: a\n  - name: a",
    "mix: {ratio: {a: .nan}}",
    "mix: {ratio: {default: 0}}",
    "train: {max_steps: .inf, learning_rate: 1e-5}",
    "filter: {verifiers: {math: {extraction: [1]}}}",
    "filter: {inputs: {a: b}}",
    "eval: {source: x.jsonl, models: 5}",
    "publish: {dataset: 5, model: [x]}",
    "{",
    "]",
    "'",
    "- - - -",
]
yaml_texts = st.one_of(
    st.builds(_yaml_dump, recipes()),
    st.builds(_yaml_dump, recipes()),
    st.lists(st.one_of(st.sampled_from(YAML_FRAGMENTS), texts), max_size=6).map(
        lambda parts: "\n".join(parts).encode("utf-8", "surrogatepass")
    ),
    st.builds(_yaml_dump, yaml_values),
    garbage,
)
set_keys = st.one_of(
    st.tuples(
        st.sampled_from(["generate", "filter", "mix", "train", "eval", "publish"]),
        st.lists(st.sampled_from(["math", "general", "verifiers", "math", "ratio"]), max_size=2),
        st.sampled_from(["source", "num_prompts", "max_steps", "extraction", "total", "nope", ""]),
    ).map(lambda parts: ".".join([parts[0], *parts[1], parts[2]])),
    st.lists(st.sampled_from(["generate", "train", "math", "x", ""]), max_size=4).map(".".join),
)
set_values = st.one_of(
    yaml_scalars.map(lambda value: json.dumps(value, default=str)),  # JSON is YAML
    st.sampled_from(["[", "{a", "null", "- x", "!!python/name:os.system", "", "'", "9" * 5000, "a: b", "*x"]),
    texts,
)
set_args = st.one_of(
    st.just([]),
    st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", set_keys, set_values), texts), max_size=3),
)


def check_recipe(case: tuple[dict, list[str]], work: Path) -> str:
    """A recipe as `distill run --dry-run` sees it after loading: --set applied, then every step planned."""
    from distill.pipeline import plan
    from distill.recipe import apply_sets

    recipe, sets = case
    return clean(lambda: plan(apply_sets(recipe, tuple(sets)), str(work / "fuzz.yaml")))


def check_recipe_file(case: bytes, work: Path) -> str:
    from distill.pipeline import plan
    from distill.recipe import load_recipe

    path = work / "recipe.yaml"
    path.write_bytes(case)
    return clean(lambda: plan(load_recipe(str(path)), str(path)))


@st.composite
def stage_configs(draw) -> tuple[str, object, dict]:
    """A stage's `--config` mapping (or anything a YAML file can hold) and the flags typed next to it."""
    classes = config_classes()
    stage = draw(st.sampled_from(list(classes)))
    recipe = draw(st.one_of(sections(classes[stage]), sections(classes[stage]), yaml_values))
    overrides = draw(st.one_of(st.just({}), sections(classes[stage])))
    return stage, recipe, overrides


def check_stage_config(case: tuple[str, object, dict], work: Path) -> str:
    """`distill <stage> --config FILE`: the file's mapping, the flags over it, the stage's own checks."""
    from distill.settings import build_config

    stage, recipe, overrides = case
    overrides = {k: v for k, v in overrides.items() if isinstance(k, str)}  # flags are always named

    def build():
        config = build_config(config_classes()[stage], recipe, overrides, "fuzz.yaml")
        if hasattr(config, "validate"):
            config.validate()

    return clean(build)


# --------------------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------------------

ENGINE_STOP = "fuzz: the prompts loaded; the engine is not started"


@st.composite
def cli_cases(draw) -> tuple[str, bytes, list[str]]:
    kind = draw(st.sampled_from(["run", "generate --config", "generate --source"]))
    if kind == "run":
        return kind, draw(yaml_texts), [f"--set={s}" for s in draw(set_args)]
    if kind == "generate --config":
        data = draw(st.one_of(yaml_texts, st.builds(_yaml_dump, sections(config_classes()["generate"]))))
        return kind, data, []
    suffix, strategy = draw(st.sampled_from(list(PROMPT_FILES.items())))
    flags = draw(
        st.lists(
            st.sampled_from(
                [
                    ["--source-option", "a=["],
                    ["--source-option", "=1"],
                    ["--num-prompts", "-1"],
                    ["--num-prompts", "0"],
                    ["--domain", "poetry"],
                    ["--prompt-column", "question"],
                    ["--id-column", "gold"],
                    ["--prompt-template", "{problem}\x01"],
                    ["--config", THIS_FILE],
                ]
            ),
            max_size=2,
        )
    )
    return kind + suffix, draw(strategy), [a for flag in flags for a in flag]


def check_cli(case: tuple[str, bytes, list[str]], work: Path) -> str:
    """Exit 0, 1 (our error) or 2 (click's usage error), with `Error:` and no traceback: never a crash."""
    from click.testing import CliRunner

    from distill.cli import main

    kind, data, extra = case
    out = str(work / "generate-out")
    if kind == "run":
        path = work / "recipe.yaml"
        args = ["run", str(path), "--dry-run", *extra]
    elif kind == "generate --config":
        path = work / "generate.yaml"
        args = ["generate", "--config", str(path), "--out", out]
    else:
        path = work / f"prompts{kind[len('generate --source') :]}"
        args = ["generate", "--source", str(path), "--out", out, "-q", *extra]
    path.write_bytes(data)
    with mock.patch("distill.generate.run.make_engine", side_effect=DistillError(ENGINE_STOP)):
        result = CliRunner().invoke(main, args, env={"DISTILL_DEBUG": None})
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        raise Crash(f"{type(exc).__name__}: {str(exc)[:300]} (distill {' '.join(args[:2])})") from exc
    if "Traceback" in output or result.exit_code not in (0, 1, 2):
        raise Crash(f"exit {result.exit_code} with {output[-300:]!r}")
    if result.exit_code and "Error:" not in output:
        raise Crash(f"exit {result.exit_code} without an `Error:` line: {output[-300:]!r}")
    return "ok" if result.exit_code == 0 or ENGINE_STOP in output else "error"


# --------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------------------
# Run time of the verifiers' scans on hostile model output (issue 11, point 6)
# --------------------------------------------------------------------------------------------------------------

# Pieces a hostile answer repeats: openers without closers, closers without openers, tags, fences, letters of
# each of the language verifier's paths. A unit is a few of them (or a little random text), repeated.
HOSTILE_PIECES = [
    "\\boxed{", "\\fbox{", "{", "}", "\\[", "\\]", "\\(", "\\)", "\\begin{x}", "\\end{x}", "\\end{y}", "$", "$$",
    "`", "```", "```python\n", "<think>", "</think>", "####", "\\frac{", "a_", "x1", "f(", "a.b", "é", "中", "ア",
    " ", "\n", "the ", ".", "http://a",
]  # fmt: skip
hostile_units = (
    st.lists(st.sampled_from(HOSTILE_PIECES) | st.text(max_size=3), min_size=1, max_size=6).map("".join).filter(bool)
)
RUNTIME_SIZE = 32_000  # and twice that: linear code takes milliseconds, a quadratic scan seconds
RUNTIME_BOUND = 0.25  # seconds of CPU at RUNTIME_SIZE: ~50x what the linear scans take on this machine


@functools.cache
def extractors() -> dict[str, typing.Callable[[str], object]]:
    """Every scan of model output in the rule verifiers, by name: each a function of one text."""
    from distill.filter.verifiers import language, math, multibox, rules
    from distill.filter.verifiers.code import extract_code
    from distill.filter.verifiers.registry import build_verifier
    from distill.generate.parse import parse_trace, truncation_from_text
    from distill.testing import example_row

    def verifier(name: str, **options):
        built = build_verifier(name, options)
        return lambda text: built.verify(example_row(reasoning=text[: len(text) // 2], answer=text))

    return {
        "math.last_boxed": math.last_boxed,
        "math.gold_for_parsing": math.gold_for_parsing,
        "math.lenient_tail": math.lenient_tail,
        "math.check_math (no math-verify)": lambda text: math.check_math(
            "5", text + "\\boxed{" + "x" * 1001 + "}", "boxed", 1
        ),  # fmt: skip
        "language.strip_non_prose": language.strip_non_prose,
        "language.target_share": lambda text: language.target_share(text, {"latin"}),
        "language.detect_language": language.detect_language,
        "language.english_stopword_share": language.english_stopword_share,
        "rules.repetition_ratio": rules.repetition_ratio,
        "parse_trace": parse_trace,
        "parse.truncation_from_text": truncation_from_text,
        "multibox.last_group": multibox.last_group,
        "format": verifier("format"),
        "language": verifier("language"),
        "repetition": verifier("repetition"),
        "length": verifier("length"),
        "code.extract_code": extract_code,
    }


def _cpu_seconds(func, text: str) -> float:
    started = time.process_time()  # this process only: other load on the machine does not count
    func(text)
    return time.process_time() - started


def check_runtime(case: tuple[str, str], work: Path) -> str:
    """A scan takes at most RUNTIME_BOUND on RUNTIME_SIZE characters of a repeated hostile unit, and at most about
    twice that (3x plus 50 ms of slack) on twice the size. Anything slower is a Crash: superlinear."""
    unit, name = case
    func = extractors()[name]
    text = (unit * (2 * RUNTIME_SIZE // len(unit) + 1))[: 2 * RUNTIME_SIZE]
    small = _cpu_seconds(func, text[:RUNTIME_SIZE])
    if small > RUNTIME_BOUND:
        raise Crash(f"{name}: {small:.2f} s on {RUNTIME_SIZE:,} characters of {unit[:40]!r} repeated")
    big = _cpu_seconds(func, text)
    if big > 3 * small + 0.05:
        raise Crash(f"{name}: superlinear on {unit[:40]!r} repeated: {small:.3f} s at {RUNTIME_SIZE:,} characters, "
                    f"{big:.3f} s at twice that")  # fmt: skip
    return "ok"


def runtime_cases(names: list[str] | None = None) -> st.SearchStrategy:
    return st.tuples(hostile_units, st.sampled_from(names or sorted(extractors())))


PROMPT_FILES = {".jsonl": jsonl_files(), ".json": json_files, ".csv": csv_files(), ".parquet": parquet_files()}


def _prompt_file_cases(suffix: str):
    return st.tuples(PROMPT_FILES[suffix], st.just(suffix), prompt_options)


@dataclass(slots=True)
class Target:
    case: str  # the line of the reliability table
    strategy: st.SearchStrategy
    check: typing.Callable  # check(case, work) -> "ok" | "error", raises Crash
    quick: int = 300
    full: int = 3000
    examples: tuple = ()  # hand-picked inputs, run before the generated ones


def _huge_csv() -> bytes:
    return b"problem,answer\n" + HUGE.encode() + b",1\n"


PROMPT_EXAMPLES = {
    ".jsonl": (
        (json.dumps({"problem": HUGE}).encode(), ".jsonl", {}),
        (b"", ".jsonl", {}),
        (b" \n\t\n", ".jsonl", {}),
        (BOM + b'{"problem": "x"}', ".jsonl", {}),
        (b'{"problem": "a\\u0000b"}', ".jsonl", {}),
        (b'{"id": 1, "problem": "a"}\n{"id": "1", "problem": "b"}', ".jsonl", {}),
        (b'{"id": 1, "problem": "a"}\n{"problem": "b"}', ".jsonl", {}),
        (b'{"problem": "a", "answer": [1, {"b": null}], "tests": {"x": 1}}', ".jsonl", {}),
    ),
    ".json": (
        (json.dumps([{"problem": HUGE}]).encode(), ".json", {}),
        (b"", ".json", {}),
        (BOM + b'[{"problem": "x"}]', ".json", {}),
    ),
    ".csv": (
        (_huge_csv(), ".csv", {}),
        (b"", ".csv", {}),
        (b"  \n  \n", ".csv", {}),
        (BOM + b"problem\nx\n", ".csv", {}),
        (b"problem\na,b,c\n", ".csv", {"prompt_column": "missing"}),
        (b"problem,id\nx\n", ".csv", {}),
        (b"problem\nx\x00y\n", ".csv", {}),
    ),
    ".parquet": (),
}


def targets() -> list[Target]:
    return [
        *[
            Target(
                f"prompt readers ({suffix[1:]})",
                _prompt_file_cases(suffix),
                check_prompt_file,
                examples=PROMPT_EXAMPLES[suffix],
            )
            for suffix in PROMPT_FILES
        ],
        Target("prompt readers (datasets folder)", dataset_folders(), check_dataset_folder),
        Target("recipe files (load + plan)", yaml_texts, check_recipe_file),
        Target("recipes and --set (plan)", st.tuples(recipes(), set_args), check_recipe),
        Target("stage --config (build + validate)", stage_configs(), check_stage_config),
        Target("CLI (run --dry-run, generate)", cli_cases(), check_cli),
        Target(
            "verifier scans (run time on hostile text)",
            runtime_cases(),
            check_runtime,
            quick=150,
            full=1000,
            examples=tuple(
                (unit, name)
                for unit in ("\\boxed{", "\\[", "\\begin{x}", "```python\n")
                for name in sorted(extractors())
            ),
        ),
    ]


@dataclass(slots=True)
class Tally:
    tried: int = 0
    crashes: int = 0
    first_crash: str = ""
    outcomes: Counter = None


def tally(target: Target, examples: int, work: Path) -> Tally:
    """Run the hand-picked inputs and `examples` generated ones; count outcomes, never stop at a crash."""
    result = Tally(outcomes=Counter())

    def one(case):
        result.tried += 1
        try:
            result.outcomes[target.check(case, work)] += 1
        except Crash as exc:
            result.crashes += 1
            result.first_crash = result.first_crash or str(exc)

    for case in target.examples:
        one(case)
    run_all = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same inputs on every run, so two runs of the table compare
        suppress_health_check=list(HealthCheck),
    )(given(target.strategy)(one))
    run_all()
    return result


def run(work: Path, quick: bool) -> list[Outcome]:
    outcomes = []
    for target in targets():
        folder = work / target.case.replace(" ", "-").replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            counts = tally(target, target.quick if quick else target.full, folder)
        except Exception as exc:  # the harness itself failed: report it as a line, never raise
            outcomes.append(Outcome("fuzz", target.case, 1, 0, note=f"harness failed: {type(exc).__name__}: {exc}"))
            continue
        note = f"{counts.outcomes['ok']} loaded, {counts.outcomes['error']} clean errors, 0 rows skipped"
        note += f", {time.monotonic() - started:.0f} s"
        if counts.crashes:
            note += f"; {counts.crashes} crashes, first: {counts.first_crash}"
        outcomes.append(Outcome("fuzz", target.case, counts.tried, counts.tried - counts.crashes, note=note))
    return outcomes
