"""Mixing filtered folders by counts and ratios: exact counts, determinism per seed, Hub layout, stats."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.errors import DistillError
from distill.filter.dataset.mix import mix
from distill.schema import MESSAGES_TYPE, VERDICT_TYPE

REASONING_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("messages", MESSAGES_TYPE),
        pa.field("verdict_math", VERDICT_TYPE),
    ]
)
GENERAL_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("messages", MESSAGES_TYPE)])


def make_folder(path: Path, prefix: str, rows: int, schema: pa.Schema = REASONING_SCHEMA, files: int = 3) -> str:
    """A filter-like output: data/ with `files` Parquet files, small row groups, ids `{prefix}-{i}`."""
    data = path / "data"
    data.mkdir(parents=True)
    per_file = -(-rows // files)
    for number, start in enumerate(range(0, rows, per_file)):
        batch = []
        for i in range(start, min(rows, start + per_file)):
            row = {
                "id": f"{prefix}-{i}",
                "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            }
            if "problem" in schema.names:
                row |= {"problem": f"problem {i}", "verdict_math": {"passed": True, "reason": "ok"}}
            batch.append(row)
        table = pa.Table.from_pylist(batch, schema=schema)
        pq.write_table(table, data / f"train-00000-of-00001-part-{number:05d}.parquet", row_group_size=7)
    (path / "stats.json").write_text("{}")
    return str(path)


def read_ids(out: Path) -> list[str]:
    files = sorted((out / "data").glob("*.parquet"))
    return [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


@pytest.fixture()
def folders(tmp_path):
    return (
        make_folder(tmp_path / "reasoning", "r", 120),
        make_folder(tmp_path / "general", "g", 50, GENERAL_SCHEMA, files=2),
    )


def test_counts_are_exact_and_rows_shuffled(folders, tmp_path):
    reasoning, general = folders
    out = tmp_path / "mix"
    stats = mix([(reasoning, 60), (general, 20)], str(out), seed=0, rows_per_file=25)
    ids = read_ids(out)
    assert len(ids) == len(set(ids)) == 80
    assert sum(i.startswith("r-") for i in ids) == 60 and sum(i.startswith("g-") for i in ids) == 20
    assert not all(i.startswith("r-") for i in ids[:60])  # mixed, not concatenated
    names = sorted(p.name for p in (out / "data").iterdir())
    assert names == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    assert [pq.read_metadata(out / "data" / n).num_rows for n in names] == [25, 25, 25, 5]
    assert not (out / ".mix-tmp").exists()

    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk == stats
    assert on_disk["seed"] == 0 and on_disk["total"] == 80 and on_disk["files"] == 4
    assert on_disk["inputs"] == [
        {"folder": reasoning, "weight": 60, "available": 120, "taken": 60},
        {"folder": general, "weight": 20, "available": 50, "taken": 20},
    ]


def test_ratios_of_a_total(folders, tmp_path):
    reasoning, general = folders
    stats = mix([(reasoning, 0.75), (general, 0.25)], str(tmp_path / "a"), total=80, seed=3)
    assert [i["taken"] for i in stats["inputs"]] == [60, 20]
    # Largest remainder: 0.5 + 0.5 of 101 is 51 + 50, summing to the total.
    stats = mix([(reasoning, 0.5), (general, 0.5)], str(tmp_path / "b"), total=101, seed=3)
    assert [i["taken"] for i in stats["inputs"]] == [51, 50]
    # A count and a ratio together (R1: 600k reasoning + 200k general = 800k, here /10^4).
    stats = mix([(reasoning, 60), (general, 0.25)], str(tmp_path / "c"), total=80, seed=3)
    assert [i["taken"] for i in stats["inputs"]] == [60, 20]
    assert len(read_ids(tmp_path / "c")) == 80


def test_deterministic_per_seed(folders, tmp_path):
    reasoning, general = folders
    inputs = [(reasoning, 50), (general, 30)]
    mix(inputs, str(tmp_path / "one"), seed=7, rows_per_file=30)
    mix(inputs, str(tmp_path / "two"), seed=7, rows_per_file=30)
    mix(inputs, str(tmp_path / "other"), seed=8, rows_per_file=30)
    assert read_ids(tmp_path / "one") == read_ids(tmp_path / "two")
    for name in ("train-00000-of-00003.parquet", "train-00002-of-00003.parquet"):
        assert (tmp_path / "one" / "data" / name).read_bytes() == (tmp_path / "two" / "data" / name).read_bytes()
    assert read_ids(tmp_path / "one") != read_ids(tmp_path / "other")
    assert set(read_ids(tmp_path / "one")) != set(read_ids(tmp_path / "other"))


def test_output_loads_with_datasets_and_keeps_all_columns(folders, tmp_path):
    datasets = pytest.importorskip("datasets")
    reasoning, general = folders
    out = tmp_path / "mix"
    mix([(reasoning, 40), (general, 10)], str(out), seed=1, rows_per_file=20)
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert ds.num_rows == 50
    assert ds.column_names == ["id", "problem", "messages", "verdict_math"]
    general_rows = [row for row in ds if row["id"].startswith("g-")]
    assert len(general_rows) == 10
    assert all(row["problem"] is None and row["verdict_math"] is None for row in general_rows)
    reasoning_row = next(row for row in ds if row["id"].startswith("r-"))
    n = reasoning_row["id"][2:]
    assert reasoning_row["messages"][1] == {"role": "assistant", "content": f"a{n}"}
    assert reasoning_row["problem"] == f"problem {n}"  # each row read whole, not mixed with another


def test_too_many_rows_and_other_user_errors(folders, tmp_path):
    reasoning, general = folders
    out = str(tmp_path / "mix")
    with pytest.raises(DistillError, match=f"{general} holds 50 rows, fewer than the 51 asked"):
        mix([(reasoning, 10), (general, 51)], out)
    with pytest.raises(DistillError, match="pass a total"):
        mix([(reasoning, 0.5)], out)
    with pytest.raises(DistillError, match="not the total 100"):
        mix([(reasoning, 10), (general, 0.5)], out, total=100)
    with pytest.raises(DistillError, match="ratio 1.5"):
        mix([(reasoning, 1.5)], out, total=10)
    with pytest.raises(DistillError, match="twice"):
        mix([(reasoning, 120), (reasoning, 1)], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="no data/"):
        mix([(str(tmp_path / "empty"), 1)], out)
    assert not Path(out).exists()  # nothing written by a refused mix

    mix([(reasoning, 5)], out)
    with pytest.raises(DistillError, match="--overwrite"):
        mix([(reasoning, 5)], out)
    stats = mix([(general, 7)], out, overwrite=True, rows_per_file=100)
    assert stats["total"] == 7 and read_ids(Path(out)) and len(read_ids(Path(out))) == 7

    clash = tmp_path / "clash"
    (clash / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["c-1"], "messages": ['[{"role": "user"}]']}), clash / "data" / "a.parquet")
    with pytest.raises(DistillError, match="column `messages` is list.* but string in .*clash"):
        mix([(reasoning, 5), (str(clash), 1)], str(tmp_path / "x"))
