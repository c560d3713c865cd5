"""What a transform left in a Parquet directory, checked before any target is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from deepcvr.aliccp import SPLITS
from deepcvr.errors import DataError
from deepcvr.schema import MANIFEST, MODEL, REJECTS, Table


@dataclass(frozen=True)
class TableInput:
    table: Table
    files: tuple[Path, ...]
    rows: int
    # Files whose `split` column the footers prove constant (every row group's statistics:
    # no null, min = max), with that value: a loader may write the constant instead of
    # reading and converting the column row by row.
    split_of: dict[Path, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParquetInput:
    root: Path
    splits: tuple[str, ...]
    tables: dict[str, TableInput]  # 3NF tables and rejects


def _files(directory: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(".")))


def inspect_parquet(root: Path) -> ParquetInput:
    """Find complete splits and every table's parts; one-line errors for anything missing."""
    if not root.is_dir():
        raise DataError(f"{root}: Parquet directory not found; run the transform step first")
    splits = tuple(s for s in SPLITS if (root / s).is_dir())
    if not splits:
        raise DataError(f"{root}: no split directory (train/ or test/); run the transform first")
    for split in splits:
        if not (root / split / MANIFEST).exists():
            raise DataError(
                f"{root / split}: transform output is incomplete (no {MANIFEST}); "
                "run the transform again to finish it"
            )
        json.loads((root / split / MANIFEST).read_text())
    tables: dict[str, TableInput] = {}
    for table in (*MODEL, REJECTS):
        dirs = (
            [root / table.name] if not table.per_split else [root / s / table.name for s in splits]
        )
        files: tuple[Path, ...] = ()
        for directory in dirs:
            found = _files(directory)
            if not found and table is not REJECTS:
                raise DataError(
                    f"{directory}: table {table.name} is missing from the Parquet directory; "
                    "run the transform again"
                )
            files += found
        rows, split_of = 0, {}
        for path in files:
            meta = pq.ParquetFile(path).metadata
            rows += meta.num_rows
            value = constant_split(meta) if "split" in table.column_names else None
            if value is not None:
                split_of[path] = value
        tables[table.name] = TableInput(table, files, rows, split_of)
    return ParquetInput(root, splits, tables)


def constant_split(meta: pq.FileMetaData) -> str | None:
    """The one value of a file's `split` column, a split name, if its statistics prove it."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if "split" not in names or meta.num_row_groups == 0:
        return None
    at = names.index("split")
    values = set()
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(at).statistics
        if group.num_rows == 0:
            continue
        if (
            stats is None
            or not stats.has_min_max
            or not stats.has_null_count
            or stats.null_count != 0
            or not isinstance(stats.min, str)
            or stats.min != stats.max
        ):
            return None
        values.add(stats.min)
    value = values.pop() if len(values) == 1 else None
    # Only a split's own name: statistics of a longer text could be cut short by the writer.
    return value if value in SPLITS else None
