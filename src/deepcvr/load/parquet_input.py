"""What a transform left in a Parquet directory, checked before any target is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from deepcvr.aliccp import SPLITS
from deepcvr.errors import DataError
from deepcvr.schema import MODEL, REJECTS, Table

MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class TableInput:
    table: Table
    files: tuple[Path, ...]
    rows: int

    @property
    def glob(self) -> list[str]:
        return [str(p) for p in self.files]


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
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
        tables[table.name] = TableInput(table, files, rows)
    return ParquetInput(root, splits, tables)
