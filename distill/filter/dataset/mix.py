"""Mix several filtered datasets into one, by counts or ratios (R1: 600k reasoning + 200k general = 800k).

Each input is a folder holding `data/*.parquet` (the output of `distill filter`, or any rows with at least `id`
and `messages`) and a weight:

- an int: exactly that many rows, sampled without replacement (asking more than the folder holds is an error);
- a float in (0, 1]: that share of `total`. Shares are rounded by largest remainder, so 0.5 + 0.5 of 1001
  gives 501 + 500. When `total` is given, all counts must add up to it.

The output is `out/data/train-SSSSS-of-NNNNN.parquet` (Hub layout, `rows_per_file` rows each, shuffled) and
`out/stats.json` (inputs, rows available and taken from each, seed, total), written last: its presence marks
the output complete. The same inputs and seed give the same rows in the same order; another seed another
sample and order (each input samples from its own random stream, so changing one weight does not change what
is taken from the others).

Schema: the union of the inputs' columns, in order of first appearance. Reasoning rows and general chat rows
of another shape are the point of mixing: keeping only the common columns would silently drop the gold answers
and verdicts of the reasoning rows, and refusing different columns would forbid R1's own mix. A column missing
from some input is null in its rows (and nullable in the output; null verdicts already mean "not checked").
A column present in two inputs with different types is an error.

Memory stays bounded: row counts come from Parquet metadata, only the `id` column is read to choose rows and
refuse duplicate ids, then each input file's chosen row groups are read once and spread, with their output
positions, into at most MAX_BUCKETS temporary Arrow files; each bucket is then sorted into its output shards.
"""

import math
import numbers
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DistillError
from distill.io import check_output, data_files, write_json_atomic, write_table_atomic

REQUIRED_COLUMNS = ("id", "messages")
POSITION = "__mix_position"  # the output position of a row, carried through the temporary buckets
MAX_BUCKETS = 256  # temporary files open at once while spreading rows
TMP_DIR = ".mix-tmp"


@dataclass(slots=True)
class _Input:
    folder: str
    weight: int | float
    files: list[Path]
    file_rows: list[int]  # rows in each file, from the Parquet footer
    schema: pa.Schema
    count: int = 0  # rows to take

    @property
    def available(self) -> int:
        return sum(self.file_rows)


def mix(
    inputs: list[tuple[str, float | int]],
    out: str,
    total: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    rows_per_file: int = 10_000,
) -> dict:
    """Write the mix to `out` and return what stats.json records."""
    if not inputs:
        raise DistillError("nothing to mix: pass at least one input folder with its count or ratio")
    if rows_per_file < 1:
        raise DistillError(f"rows per file must be at least 1, got {rows_per_file}")
    out_path = Path(out)
    # Before anything is read: the output may not be, hold or lie inside an input folder.
    check_output(out_path, inputs=[folder for folder, _ in inputs], overwrite=True)
    sources = [_open_input(folder, weight) for folder, weight in inputs]
    _assign_counts(sources, total)
    schema = _union_schema(sources)
    grand_total = sum(s.count for s in sources)
    if grand_total == 0:
        raise DistillError("the weights select no rows: give at least one input a positive count or ratio")

    # One random stream per input (which rows) and one for the order: see the module doc.
    streams = np.random.SeedSequence(seed).spawn(len(sources) + 1)
    picks = [
        np.sort(np.random.default_rng(stream).choice(src.available, size=src.count, replace=False))
        for src, stream in zip(sources, streams, strict=False)
    ]
    _refuse_duplicate_ids(sources, picks)
    # positions[j]: where the j-th chosen row (inputs in order, rows in file order) lands in the output.
    positions = np.random.default_rng(streams[-1]).permutation(grand_total)

    # Everything is checked: only now may an old output be replaced.
    _prepare_output(out_path, overwrite)
    num_files = math.ceil(grand_total / rows_per_file)
    tmp = out_path / TMP_DIR
    tmp.mkdir(parents=True)
    _spread(sources, picks, positions, schema, tmp, rows_per_file, num_files)
    _write_shards(tmp, out_path / "data", rows_per_file, num_files)
    shutil.rmtree(tmp)

    stats = {
        "inputs": [
            {"folder": s.folder, "weight": s.weight, "available": s.available, "taken": s.count} for s in sources
        ],
        "seed": seed,
        "total": grand_total,
        "rows_per_file": rows_per_file,
        "files": num_files,
        "columns": schema.names,
    }
    write_json_atomic(stats, out_path / "stats.json")
    return stats


def _open_input(folder: str, weight) -> _Input:
    # bool is an int in Python: refuse it rather than read True as a count of 1.
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise DistillError(f"weight {weight!r} for {folder}: use a row count (int) or a ratio in (0, 1] (float)")
    weight = int(weight) if isinstance(weight, numbers.Integral) else float(weight)  # numpy scalars too
    if isinstance(weight, int) and weight < 0:
        raise DistillError(f"count {weight} for {folder} is negative: use a row count of 0 or more")
    if isinstance(weight, float) and not 0 < weight <= 1:
        raise DistillError(f"ratio {weight} for {folder} is not in (0, 1]: use a ratio, or an int for a row count")
    files = data_files(Path(folder) / "data")
    if not files:
        raise DistillError(f"{folder} has no data/*.parquet files: pass an output folder of `distill filter`")
    rows, schema = [], None
    for path in files:
        try:
            meta = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DistillError(f"{path}: not a readable Parquet file ({exc}): remove or regenerate it") from None
        file_schema = meta.schema_arrow.remove_metadata()
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema):
            raise DistillError(f"{path} has another schema than {files[0]}: one folder must hold one dataset")
        rows.append(meta.metadata.num_rows)
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise DistillError(f"{folder} has no `{'`, `'.join(missing)}` column: pass an output folder of distill filter")
    return _Input(folder, weight, files, rows, schema)


def _prepare_output(out: Path, overwrite: bool) -> None:
    entries = [out / "data", out / "stats.json", out / TMP_DIR]
    check_output(out, overwrite=overwrite, holds="a dataset", can_resume=False, busy=any(e.exists() for e in entries))
    # Only what a mix writes: other files in the folder (a README, a recipe) stay.
    (out / "stats.json").unlink(missing_ok=True)  # first: the folder no longer claims to be complete
    for folder in (out / "data", out / TMP_DIR):
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _assign_counts(sources: list[_Input], total: int | None) -> None:
    """Counts for int weights as given, for ratios by largest remainder of ratio * total."""
    ratios = [s for s in sources if isinstance(s.weight, float)]
    if ratios and total is None:
        raise DistillError("ratio weights are shares of the total: pass a total number of rows")
    if total is not None and total < 1:
        raise DistillError(f"total must be at least 1, got {total}")
    for src in sources:
        if isinstance(src.weight, int):
            src.count = src.weight
    if ratios:
        exact = [Fraction(s.weight) * total for s in ratios]
        for src, count in zip(ratios, apportion(exact, round(sum(exact))), strict=True):
            src.count = count
    if total is not None and sum(s.count for s in sources) != total:
        taken = " + ".join(str(s.count) for s in sources)
        raise DistillError(f"the weights give {taken} = {sum(s.count for s in sources)} rows, not the total {total}")
    for src in sources:
        if src.count > src.available:
            raise DistillError(
                f"{src.folder} holds {src.available} rows, fewer than the {src.count} asked: lower its weight"
            )


def apportion(exact: list[Fraction], total: int) -> list[int]:
    """Whole counts adding up to `total` for the exact shares `exact` (which add up to about `total`): each share
    rounded down, and the rows lost to rounding given to the largest remainders (ties: input order). Python's
    round on each share would lose or add rows: 1:1 of 1001 rounds to 500 + 500, 1:1:1 of 100 to 33 x 3."""
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: -(exact[i] - counts[i]))[: max(0, total - sum(counts))]:
        counts[i] += 1
    return counts


def ratio_counts(ratio: dict[str, float], available: dict[str, int], total: int | None = None) -> dict[str, int]:
    """Rows to take from each named input for a mix with exactly `ratio`: `total` rows, or, when None, the most
    the inputs hold (`available` rows each). Exact arithmetic, so 1:1:1 of 3 available each gives 9, not 8."""
    shares = {name: Fraction(share) for name, share in ratio.items()}
    whole = sum(shares.values())
    if total is None:
        total = min(math.floor(available[n] * whole / shares[n]) for n in shares if shares[n] > 0)
    counts = dict(zip(shares, apportion([total * share / whole for share in shares.values()], total), strict=True))
    short = {n: (counts[n], available[n]) for n in counts if counts[n] > available[n]}
    if short:
        raise DistillError(
            f"mix: not enough kept rows for total {total}: "
            + ", ".join(f"{n} needs {need}, has {have}" for n, (need, have) in short.items())
        )
    return counts


def mix_ratio(
    ratio: dict[str, float], folders: dict[str, str | Path], out, total: int | None = None, seed: int = 0,
    overwrite: bool = False, rows_per_file: int = 10_000,
) -> dict:  # fmt: skip
    """A recipe's `mix:`: the named folders by `ratio`, `total` rows (None: the largest mix with exactly that
    ratio that the folders hold). Counts by largest remainder, so the mix has exactly `total` rows."""
    available = {name: _rows(Path(folders[name])) for name in ratio}
    counts = ratio_counts(ratio, available, total)
    if sum(counts.values()) == 0:
        raise DistillError("mix: the filters kept no rows, so there is nothing to mix")
    return mix(
        [(str(folders[n]), c) for n, c in counts.items() if c > 0],
        str(out),
        seed=seed,
        overwrite=overwrite,
        rows_per_file=rows_per_file,
    )


def _rows(folder: Path) -> int:
    """Rows in a folder's data/*.parquet, from the Parquet footers (nothing else is read)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in data_files(folder / "data"))


def _union_schema(sources: list[_Input]) -> pa.Schema:
    fields: dict[str, pa.Field] = {}
    first_in: dict[str, str] = {}
    for src in sources:
        for field in src.schema:
            if field.name not in fields:
                fields[field.name], first_in[field.name] = field, src.folder
            elif not field.type.equals(fields[field.name].type):
                raise DistillError(
                    f"column `{field.name}` is {fields[field.name].type} in {first_in[field.name]} but {field.type} "
                    f"in {src.folder}: convert one of them before mixing"
                )
            elif field.nullable:
                fields[field.name] = fields[field.name].with_nullable(True)
    # A column some input lacks is null in that input's rows.
    for name in fields:
        if any(name not in src.schema.names for src in sources):
            fields[name] = fields[name].with_nullable(True)
    return pa.schema(list(fields.values()))


def _refuse_duplicate_ids(sources: list[_Input], picks: list[np.ndarray]) -> None:
    """The same id twice would make two training rows of one sample (e.g. a folder given twice)."""
    seen: dict[str, str] = {}
    for src, chosen in zip(sources, picks, strict=True):
        ids = pa.concat_arrays(
            [pq.read_table(path, columns=["id"]).column("id").combine_chunks() for path in src.files]
        )
        for sample_id in ids.take(pa.array(chosen, type=pa.int64())).to_pylist():
            if sample_id in seen:
                where = "twice" if seen[sample_id] == src.folder else f"and in {seen[sample_id]}"
                raise DistillError(f"id `{sample_id}` is in {src.folder} {where}: mix each dataset once")
            seen[sample_id] = src.folder


def _spread(sources, picks, positions, schema, tmp: Path, rows_per_file: int, num_files: int) -> None:
    """Read each file's chosen rows once and append them to the bucket of their output shard."""
    per_bucket = math.ceil(num_files / MAX_BUCKETS)  # output shards per bucket
    position_field = pa.field(POSITION, pa.int64(), nullable=False)
    bucket_schema = schema.append(position_field)
    # Temporary, but as large as the output: compress it when this pyarrow build can.
    options = pa.ipc.IpcWriteOptions(compression="zstd" if pa.Codec.is_available("zstd") else None)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    done = 0  # chosen rows handled so far: index into positions
    try:
        for src, chosen in zip(sources, picks, strict=True):
            bounds = np.cumsum([0] + src.file_rows)
            for index, path in enumerate(src.files):
                lo, hi = np.searchsorted(chosen, bounds[index : index + 2])
                rows = chosen[lo:hi] - bounds[index]
                if not len(rows):
                    continue
                table = _conform(_read_rows(path, rows), schema)
                where = positions[done : done + len(rows)]
                done += len(rows)
                table = table.append_column(position_field, pa.array(where, type=pa.int64()))
                buckets = where // rows_per_file // per_bucket
                for bucket in np.unique(buckets).tolist():
                    if bucket not in writers:
                        sink = tmp / f"bucket-{bucket:05d}.arrow"
                        writers[bucket] = pa.ipc.new_file(sink, bucket_schema, options=options)
                    writers[bucket].write_table(table.filter(pa.array(buckets == bucket)))
    finally:
        for writer in writers.values():
            writer.close()


def _read_rows(path: Path, rows: np.ndarray) -> pa.Table:
    """Rows (sorted indices in the file) reading only the row groups that hold them."""
    meta = pq.ParquetFile(path)
    sizes = [meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups)]
    starts = np.cumsum([0] + sizes[:-1])
    groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
    table = meta.read_row_groups(groups.tolist())
    # Where each chosen row lies in the concatenation of the groups read.
    offset_of_group = dict(zip(groups.tolist(), np.cumsum([0] + [sizes[g] for g in groups[:-1]]), strict=True))
    group_of_row = np.searchsorted(starts, rows, side="right") - 1
    local = rows - starts[group_of_row] + np.array([offset_of_group[g] for g in group_of_row.tolist()])
    return table.take(pa.array(local, type=pa.int64()))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table in the output schema: columns reordered, missing ones null."""
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _write_shards(tmp: Path, data_dir: Path, rows_per_file: int, num_files: int) -> None:
    """Each bucket, sorted by output position, cut into its shards: written under a temp name, then renamed."""
    data_dir.mkdir(parents=True)
    for sink in sorted(tmp.glob("bucket-*.arrow")):
        with pa.memory_map(str(sink)) as source:
            bucket = pa.ipc.open_file(source).read_all()
        bucket = bucket.sort_by(POSITION)
        first_position = bucket.column(POSITION)[0].as_py()
        bucket = bucket.drop_columns([POSITION])
        for start in range(0, bucket.num_rows, rows_per_file):
            shard = (first_position + start) // rows_per_file
            final = data_dir / f"train-{shard:05d}-of-{num_files:05d}.parquet"
            write_table_atomic(bucket.slice(start, rows_per_file), final)
        sink.unlink()
