"""Parquet shards that survive crashes: written under a temporary name and renamed when complete.

Files are named like the Hub's, `data/train-{shard:05d}-of-{num_shards:05d}-part-{seq:05d}.parquet`, where
`shard` is the host's `--shard-index`: hosts of one scale-out run write disjoint files into one folder.
"""

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.errors import DistillError


def shard_prefix(shard_index: int, num_shards: int) -> str:
    return f"train-{shard_index:05d}-of-{num_shards:05d}"


def data_files(data_dir: Path, prefix: str | None = None) -> list[Path]:
    """Finished shard files (temporary files start with a dot and are never listed)."""
    if not data_dir.is_dir():
        return []
    files = sorted(p for p in data_dir.glob("*.parquet") if not p.name.startswith("."))
    if prefix is not None:
        files = [p for p in files if p.name.startswith(prefix + "-part-")]
    return files


class ShardWriter:
    """Appends row batches to a folder as numbered Parquet files `{prefix}-part-{seq:05d}.parquet`,
    one atomic rename per file. Numbering continues after the files already there (resume)."""

    def __init__(self, data_dir: Path, prefix: str, schema: pa.Schema):
        self.data_dir = data_dir
        self.prefix = prefix
        self.schema = schema
        data_dir.mkdir(parents=True, exist_ok=True)
        # Temporary files of our own prefix are leftovers of a killed run (no other host writes this prefix).
        for stale in data_dir.glob(f".{prefix}-part-*.tmp"):
            stale.unlink(missing_ok=True)
        seqs = [int(p.name[len(prefix) + 6 : len(prefix) + 11]) for p in data_files(data_dir, prefix)]
        self.next_seq = max(seqs, default=-1) + 1
        # pyarrow imports pandas on the first from_pylist (~0.3 s): pay it now, not in the middle of a timed run.
        pa.Table.from_pylist([], schema=schema)

    def write(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        final = self.data_dir / f"{self.prefix}-part-{self.next_seq:05d}.parquet"
        write_atomic(pa.Table.from_pylist(rows, schema=self.schema), final)
        self.next_seq += 1
        return final


def write_atomic(table: pa.Table, final: Path) -> None:
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())  # the data is on disk before the name says the file is complete
    os.replace(tmp, final)
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path} is unreadable ({exc}): delete it and rerun with --resume") from None


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
            write_atomic(ok, path)
        else:
            path.unlink()
            fsync_dir(path.parent)
    return dropped
