"""Parquet -> the text format of the server bulk paths, one record batch at a time.

MySQL's `LOAD DATA` (with its default FIELDS/LINES options) and PostgreSQL's `COPY` text format
read the same encoding: tab-separated fields, one row per line, backslash escapes, \\N for NULL.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from deepcvr.errors import DataError
from deepcvr.schema import Table

BATCH_ROWS = 65_536  # ~2 MB of TSV per batch: bounded memory, still few round trips

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_NEEDS_ESCAPE = r"[\\\t\n\r]"


def parquet_batches(
    files: Sequence[Path], table: Table, batch_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of `table`'s columns, in schema order, file after file (key order)."""
    for path in files:
        try:
            yield from pq.ParquetFile(path).iter_batches(
                batch_size=batch_rows or BATCH_ROWS, columns=table.column_names
            )
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot read {table.name} rows ({err})") from None


def to_tsv(batch: pa.RecordBatch) -> bytes:
    """Tab-separated rows, backslash escapes, \\N for NULL; booleans as 1/0 (MySQL's BOOLEAN
    is a TINYINT); floats in shortest round-trip form, so no digit is lost."""
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    fixes = []
    for name, dtype in df.schema.items():
        if dtype == pl.Boolean:
            fixes.append(pl.col(name).cast(pl.Int8))
        elif dtype == pl.String and df[name].str.contains(_NEEDS_ESCAPE).any() is True:
            expr = pl.col(name)
            for raw, escaped in _ESCAPES:
                expr = expr.str.replace_all(raw, escaped, literal=True)
            fixes.append(expr)
    if fixes:
        df = df.with_columns(fixes)
    buf = io.BytesIO()
    df.write_csv(buf, include_header=False, separator="\t", quote_style="never", null_value="\\N")
    return buf.getvalue()


def tsv_chunks(files: Sequence[Path], table: Table) -> Iterator[tuple[bytes, int]]:
    """(TSV bytes, rows) per record batch; `to_tsv` is looked up at call time (tests patch it)."""
    for batch in parquet_batches(files, table):
        yield to_tsv(batch), batch.num_rows
