import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.config import GenerateConfig
from distill.errors import DistillError
from distill.generate.sources import R1_INSTRUCTION, load_prompts, shard_of

ROWS = [
    {"id": "a", "problem": "What is 1 + 1?", "answer": 2},
    {"id": "b", "problem": "What is 2 + 2?", "answer": "4"},
]


def prompts(source, **kw):
    return load_prompts(GenerateConfig(source=str(source), out="unused", **kw))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv"])
def test_every_file_format_gives_the_same_prompts(tmp_path, fmt):
    path = tmp_path / f"p.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    elif fmt == "json":
        path.write_text(json.dumps({"data": ROWS}))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist([{**r, "answer": str(r["answer"])} for r in ROWS]), path)
    else:
        path.write_text("id,problem,answer\na,What is 1 + 1?,2\nb,What is 2 + 2?,4\n")
    got = prompts(path)
    assert [p.prompt_id for p in got] == ["a", "b"]
    assert [p.gold for p in got] == ["2", "4"]
    assert got[0].source == path.name
    # R1 style: no system prompt, the boxed instruction after the problem.
    assert got[0].messages == [{"role": "user", "content": "What is 1 + 1?\n" + R1_INSTRUCTION}]
    assert got[0].domain == "math"


def test_datasets_folders(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS[:1] * 3).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DistillError, match="repeats id `a`"):
        prompts(tmp_path / "saved")
    ds = datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question": "Q?", "gold": "1"}])})
    ds.save_to_disk(str(tmp_path / "dict"))
    got = prompts(tmp_path / "dict", split="test")
    assert got[0].problem == "Q?" and got[0].gold == "1"
    with pytest.raises(DistillError, match="split `train` not in"):
        prompts(tmp_path / "dict")
    (tmp_path / "raw").mkdir()
    write_jsonl(tmp_path / "raw" / "train.jsonl", ROWS)
    assert [p.prompt_id for p in prompts(tmp_path / "raw")] == ["a", "b"]


def test_columns_template_system_prompt_and_domain(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": "Write a haiku.", "ref": None, "domain": "general"}])
    got = prompts(path, prompt_column="q", answer_column="ref", system_prompt="Be brief.")
    assert got[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a haiku."},  # general prompts get no boxed instruction
    ]
    assert got[0].gold is None and got[0].domain == "general"
    got = prompts(path, prompt_column="q", prompt_template="Q: {problem} \\boxed{}", domain="science")
    assert got[0].messages[-1]["content"] == "Q: Write a haiku. \\boxed{}"
    assert got[0].domain == "science"


def test_code_prompts_carry_tests_as_json(tmp_path):
    tests = {"stdin_stdout": [{"input": "1\n", "output": "2\n"}]}
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Double it.", "tests": tests, "domain": "code"}])
    got = prompts(path)
    assert json.loads(got[0].tests) == tests
    assert got[0].messages[-1]["content"] == "Double it."


def test_ids_are_stable_hashes_and_duplicates_stay_distinct(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "Same?"}, {"problem": "Same?"}, {"problem": "Other"}])
    first, second = prompts(path), prompts(path)
    assert [p.prompt_id for p in first] == [p.prompt_id for p in second]
    assert len({p.prompt_id for p in first}) == 3
    assert first[1].prompt_id == first[0].prompt_id + "-1"


@pytest.mark.parametrize(
    "content, kw, message",
    [
        ('{"problem": "ok"}\n{"problem": broken}\n', {}, r"p.jsonl:2: not valid JSON"),
        ('{"problem": "ok"}\n[1, 2]\n', {}, r"p.jsonl:2: expected a JSON object"),
        ('{"problem": "  "}\n', {}, r"row 1 .* empty or non-text prompt"),
        ('{"problem": 5}\n', {}, r"row 1 .* empty or non-text prompt"),
        ('{"text": "x"}\n', {}, r"no prompt column among text: pass --prompt-column"),
        ('{"problem": "x"}\n', {"answer_column": "sol"}, r"column `sol` not found \(columns: problem\)"),
        ('{"problem": "x", "domain": "poetry"}\n', {}, r"unknown domain `poetry`"),
        ("", {}, r"holds no rows"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, content, kw, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(DistillError, match=message):
        prompts(path, **kw)


def test_invalid_utf8_and_missing_files(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"problem": "ok"}\n{"problem": "\xff\xfe"}\n')
    with pytest.raises(DistillError, match="p.jsonl:2: not valid UTF-8"):
        prompts(path)
    with pytest.raises(DistillError, match="source not found"):
        prompts(tmp_path / "nope.jsonl")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DistillError, match="use a .jsonl, .json, .parquet or .csv"):
        prompts(tmp_path / "p.txt")


def test_reasoning_gym_with_options():
    got = prompts(
        "reasoning-gym:basic_arithmetic",
        num_prompts=5,
        seed=3,
        source_options={"max_terms": 2, "min_terms": 2, "max_digits": 1},
    )
    assert len(got) == 5
    assert got[0].prompt_id == "rg-basic_arithmetic-3-0"
    assert all(p.gold is not None and p.domain == "math" for p in got)
    again = prompts(
        "reasoning-gym:basic_arithmetic",
        num_prompts=5,
        seed=3,
        source_options={"max_terms": 2, "min_terms": 2, "max_digits": 1},
    )
    assert [p.problem for p in again] == [p.problem for p in got]
    with pytest.raises(DistillError, match="cannot build reasoning-gym task `no_such_task`"):
        prompts("reasoning-gym:no_such_task", num_prompts=2)


def test_shards_partition_prompts():
    ids = [f"p{i}" for i in range(200)]
    owners = [shard_of(i, 3) for i in ids]
    assert owners == [shard_of(i, 3) for i in ids]  # deterministic
    assert set(owners) == {0, 1, 2}
    assert all(shard_of(i, 1) == 0 for i in ids)


def _peak_bytes(source, rows: int, **kw) -> int:
    import tracemalloc

    from distill.generate.sources import iter_prompts

    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_prompts(GenerateConfig(source=str(source), out="unused", **kw)))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert count == rows


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_memory_does_not_grow_with_the_file(tmp_path, fmt):
    # 2k vs 20k rows of 4 KB prompts (8 MB vs 80 MB): read whole, the peak grows by the text (~4 KB a row and
    # more); streamed, only the duplicate check's hash set grows (under 250 bytes a row), never with the text.
    peaks = {}
    for rows in (2_000, 20_000):
        path = tmp_path / f"p{rows}.{fmt}"
        data = [{"id": str(i), "problem": f"{i} " + "x" * 4000} for i in range(rows)]
        if fmt == "jsonl":
            write_jsonl(path, data)
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(data), path, row_group_size=1000)
        else:
            path.write_text("id,problem\n" + "".join(f"{r['id']},{r['problem']}\n" for r in data))
        del data
        peaks[rows] = _peak_bytes(path, rows)
    assert (peaks[20_000] - peaks[2_000]) / 18_000 < 250, peaks
    assert peaks[20_000] < 8 * 2**20  # a tenth of the 80 MB file


def test_a_shard_keeps_only_its_own_prompts(tmp_path):
    from distill.generate.sources import iter_prompts

    path = write_jsonl(tmp_path / "p.jsonl", [{"id": str(i), "problem": f"Q{i}"} for i in range(200)])
    config = GenerateConfig(source=str(path), out="unused")
    shards = [[p.prompt_id for p in iter_prompts(config, (3, i))] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(str(i) for i in range(200))
    assert all(shard_of(pid, 3) == i for i, ids in enumerate(shards) for pid in ids)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_huge_line_is_refused_unread(tmp_path, monkeypatch, fmt):
    import tracemalloc

    from distill.generate import sources

    monkeypatch.setattr(sources, "MAX_ROW_BYTES", 2**20)  # 1 MiB cap, a 20 MiB line: same code as 16 MiB / 100 MB
    path = tmp_path / f"p.{fmt}"
    head = '{"problem": "ok"}\n' if fmt == "jsonl" else "problem\nok\n"
    with open(path, "w") as fh:
        fh.write(head)
        fh.write('{"problem": "' + "x" * (20 * 2**20) + '"}\n' if fmt == "jsonl" else "x" * (20 * 2**20) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(DistillError, match=rf"{path.name}:\d: a row over 1 MiB.*not read") as err:
            prompts(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert peak < 5 * 2**20  # never held the 20 MiB line


def test_a_big_json_file_is_refused_naming_jsonl(tmp_path, monkeypatch):
    from distill.generate import sources

    monkeypatch.setattr(sources, "MAX_JSON_BYTES", 1000)
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"problem": "x" * 100}] * 20))
    with pytest.raises(DistillError, match=r"p.json is 0 MiB: .*write it as .jsonl"):
        prompts(path)


def test_readers_are_lazy(tmp_path):
    from distill.generate.sources import read_file_rows

    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "a"}])
    with open(path, "a") as fh:
        fh.write("not json\n")
    rows = read_file_rows(path)
    assert next(rows) == {"problem": "a"}  # the bad second line is not read until asked for
    with pytest.raises(DistillError, match=":2: not valid JSON"):
        next(rows)
