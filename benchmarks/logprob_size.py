"""What `distill generate --logprobs K` costs on disk: bytes per completion token, text and log-probs, three ways.

    python benchmarks/logprob_size.py OUT          # a `distill generate --logprobs K` output folder

Reads the folder's rows and writes them again (in memory) with pyarrow's defaults and float32 values (snappy,
dictionary encoding everywhere), with zstd and the log-prob values byte-stream-split (float32), and as distill
writes them (float16 values, distill/io.py's parquet_options); prints bytes per token for each, and the text
columns alone for scale.
"""

import io
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from distill.io import data_files, parquet_options  # noqa: E402
from distill.schema import LOGPROB_COLUMNS  # noqa: E402


def size(table: pa.Table, **options) -> int:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.tell()


def values(table: pa.Table, kind: pa.DataType) -> pa.Table:
    """The table with its log-prob values cast to `kind`."""
    column = table.column("top_logprobs").cast(pa.list_(pa.list_(kind)))
    return table.set_column(table.schema.get_field_index("top_logprobs"), "top_logprobs", column)


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    table = pa.concat_tables([pq.read_table(f) for f in data_files(folder / "data")])
    tokens = sum(len(ids) for ids in table.column("token_ids").to_pylist() if ids)
    if not tokens:
        raise SystemExit(f"{folder} has no log-probs: generate with --logprobs K")
    k = len(next(top for top in table.column("top_token_ids").to_pylist() if top)[0])
    float32, float16 = (values(table, kind) for kind in (pa.float32(), pa.float16()))
    text = table.drop(list(LOGPROB_COLUMNS))
    rows = [
        ("text columns alone (defaults)", size(text)),
        ("pyarrow defaults, float32 values", size(float32)),
        ("zstd, values byte-stream-split, float32", size(float32, **parquet_options(float32))),
        ("as distill writes it: the same, float16 values", size(float16, **parquet_options(float16))),
    ]
    print(f"{folder}: {table.num_rows} rows, {tokens} completion tokens, top-{k}")
    for name, total in rows:
        print(f"  {name:<48} {total / tokens:6.1f} bytes/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
