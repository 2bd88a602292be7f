"""The I/O every stage shares: Parquet shards, atomic writes, and the checks on an output folder.

Shards are named like the Hub's, `data/train-{shard:05d}-of-{num_shards:05d}-part-{seq:05d}.parquet`, where
`shard` is the host's `--shard-index`: hosts of one scale-out run write disjoint files into one folder. Every
file is written under a temporary name and renamed when complete, so a reader (or a resumed run) never sees
half a file.

A stage never writes into, or deletes, its inputs: `check_output` refuses an output folder that is, holds or
lies inside an input (symlinks resolved) before anything is touched, and the other checks every stage makes on
its `--out` (a file, a dangling link, an existing output without --resume/--overwrite, files we did not write).
"""

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DistillError, shown

# --------------------------------------------------------------------------------------------------------------
# Parquet shards
# --------------------------------------------------------------------------------------------------------------


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
        write_table_atomic(pa.Table.from_pylist(rows, schema=self.schema), final)
        self.next_seq += 1
        return final


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path} is unreadable ({exc}): delete it and rerun with --resume") from None


# --------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------


def _tmp_for(final: Path) -> Path:
    """A fresh temporary name beside `final`. A leftover (or a planted link) is removed first: writing through
    a link named like our temporary file would write into whatever it points to."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    return tmp


def parquet_options(table: pa.Table) -> dict:
    """`pq.write_table` options for `table`: pyarrow's defaults, except when it holds log-probs.

    Log-probs are most of such a file (5 per token against about 4 characters of text), and random-looking floats
    are what dictionary encoding and snappy compress worst. Measured on SmolLM2's traces with --logprobs 5 (1,822
    tokens; benchmarks/RESULTS.md): 47.2 bytes a token (text included) with the defaults and float32, 32.6 with
    zstd and the floats byte-stream-split instead of dictionary-encoded, 25.0 with float16 values as well."""
    if "top_logprobs" not in table.column_names or table.column("top_logprobs").null_count == table.num_rows:
        return {}
    paths = _leaf_paths(table.schema)
    floats = [path for path in paths if path.startswith("top_logprobs.")]
    return {
        "compression": "zstd",
        "use_dictionary": [path for path in paths if path not in floats],
        "use_byte_stream_split": floats,
    }


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's dotted paths of the leaf columns (`top_logprobs.list.element.list.element`), which the per-column
    write options name."""

    def walk(name: str, kind: pa.DataType):
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            yield from walk(f"{name}.list.element", kind.value_type)
        elif pa.types.is_struct(kind):
            for child in kind:
                yield from walk(f"{name}.{child.name}", child.type)
        else:
            yield name

    return [path for field in schema for path in walk(field.name, field.type)]


def write_table_atomic(table: pa.Table, final: Path) -> None:
    """A Parquet file that is either complete and on disk under its name, or not there at all."""
    tmp = _tmp_for(final)
    pq.write_table(table, tmp, **parquet_options(table))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())  # the data is on disk before the name says the file is complete
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_batches_atomic(batches: Iterable[list[dict]], schema: pa.Schema, final: Path) -> int:
    """Rows arriving in batches, streamed into one Parquet file that appears complete under its name or not at all
    (memory: one batch). The number of rows written; no file when there were none."""
    tmp = _tmp_for(final)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                if batch:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows += len(batch)
        if not rows:
            return 0
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return rows
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, final: Path, durable: bool = True) -> None:
    """A text file written under a temporary name and renamed: readers see the old or the new file, never half.

    `durable` also syncs the data and the folder, for records a resumed run relies on (progress, markers).
    """
    final = Path(final)
    tmp = _tmp_for(final)
    with open(tmp, "x", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    if durable:
        fsync_dir(final.parent)


def write_json_atomic(data, final: Path, indent: int | None = 2, durable: bool = True) -> None:
    write_text_atomic(json.dumps(data, indent=indent, default=str) + "\n", final, durable=durable)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------------------------


def local_paths(names: Iterable) -> list[Path]:
    """The names that are paths on this machine (a hub id or an alias is not, unless a folder of that name exists)."""
    return [Path(n) for n in names if n and isinstance(n, str | os.PathLike) and Path(n).exists()]


def check_not_input(out, inputs: Iterable, flag: str = "--out") -> None:
    """Refuse an output folder that is, holds or lies inside one of `inputs` (paths; symlinks resolved), so no
    stage can write into or delete what it reads. Inputs that do not exist are skipped.

    An input folder's own files and subfolders are resolved too: a Parquet file of the input that is a link into
    the output folder was deleted by --overwrite (5 input rows lost) when only the folder was resolved.
    """
    target = _resolved(out, flag)
    for name in inputs:
        if not name:
            continue
        source = _resolved(name, "the input")
        relation = _relation(target, source)
        if relation is None:
            if os.path.isdir(name):
                for link, resolved in links_in(Path(name)):
                    if _relation(target, resolved) is not None:
                        raise DistillError(
                            f"{flag} {shown(str(out), 200)} holds {shown(str(resolved), 200)}, which the input "
                            f"{shown(str(name), 200)} reads through its link {shown(str(link), 200)}: a stage never "
                            "writes into its inputs, give another folder"
                        )
            continue
        raise DistillError(
            f"{flag} {shown(str(out), 200)} {relation} the input {shown(str(name), 200)}: a stage never writes into "
            "its inputs, give another folder"
        )


def _relation(target: Path, source: Path) -> str | None:
    if target == source:
        return "is"
    if source.is_relative_to(target):
        return "holds"
    if target.is_relative_to(source):
        return "lies inside"
    return None


def links_in(folder: Path):
    """(link, what it resolves to) for every symbolic link under `folder`, not following them."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                yield path, path.resolve()


# Hugging Face's cache keeps a repo's files as links from snapshots/<revision>/ into the repo's own blobs/.
HUB_CACHE_BLOBS = "blobs"


def check_inside(path: Path, folder: Path, what: str) -> None:
    """Refuse a file of `folder` that resolves outside it (a cloned dataset repo's data file linked to a key or a
    token file would be read, then published): only links within the folder, or from a Hugging Face cache snapshot
    into its repo's blobs, are followed."""
    resolved, root = path.resolve(), folder.resolve()
    if resolved.is_relative_to(root):
        return
    snapshot = next((p for p in [root, *root.parents] if p.parent.name == "snapshots"), None)
    if snapshot is not None and resolved.is_relative_to(snapshot.parent.parent / HUB_CACHE_BLOBS):
        return
    raise DistillError(
        f"{what} {shown(str(path), 200)} is a link to {shown(str(resolved), 200)}, outside {shown(str(folder), 200)}: "
        "copy the file into the folder if it is really data, or remove the link"
    )


def _resolved(path, what: str) -> Path:
    try:
        return Path(path).resolve()
    except ValueError:  # a NUL character: no file system takes it
        raise DistillError(f"{what} {shown(str(path), 200)} is not a path (it holds a NUL character)") from None


def check_output(
    out,
    *,
    inputs: Iterable = (),
    resume: bool = False,
    overwrite: bool = False,
    holds: str = "an output",
    can_resume: bool = True,
    ours: Callable[[Path], bool] | None = None,
    busy: bool | None = None,
) -> bool:
    """Check an output folder before anything is read into it or deleted from it; True when it holds something.

    `busy` says whether the folder already holds this run's kind of output (default: anything in it); `ours`
    tells the entries a stage writes, and the folder is refused when it holds anything else, so --overwrite
    never deletes a user's files.
    """
    out = Path(out)
    check_not_input(out, inputs)
    if out.is_symlink() and not out.exists():
        raise DistillError(
            f"--out {shown(str(out), 200)} is a link to {shown(os.readlink(out), 200)}, which does not exist: create "
            "that folder or give another"
        )
    if out.exists() and not out.is_dir():
        raise DistillError(f"--out {shown(str(out), 200)} is a file: give a folder")
    if busy is None:
        busy = out.is_dir() and any(out.iterdir())
    if busy and not ((resume and can_resume) or overwrite):
        flags = "--resume or --overwrite" if can_resume else "--overwrite to replace it"
        raise DistillError(f"output folder {shown(str(out), 200)} already holds {holds}: pass {flags}")
    if busy and ours is not None:
        strangers = sorted(p.name for p in out.iterdir() if not ours(p))
        if strangers:
            raise DistillError(
                f"refusing to {'overwrite' if overwrite else 'write into'} {shown(str(out), 200)}: it holds files "
                f"distill did not write ({', '.join(shown(n, 80) for n in strangers[:3])})"
            )
    return busy


def clear_folder(out: Path) -> None:
    """Delete what a folder holds, but not the folder: `--out` may be a link, which stays a link to it."""
    out = Path(out)
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
