"""Cut raw files into line-aligned chunks, and turn one chunk into Parquet parts.

A chunk is a byte range holding whole lines; its parts are written under temp names and renamed,
and its manifest is written last, so a chunk with a manifest is complete (resume relies on it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from deepcvr.fsutil import atomic_file
from deepcvr.transform.parse import ChunkContext, Kind, parse_chunk

SCAN_BLOCK = 1 << 20  # how far to read past a chunk's nominal end to find a newline


@dataclass(frozen=True)
class ChunkSpec:
    split: str
    kind: Kind
    path: str
    seq: int
    start: int
    length: int
    first_line: int
    at_file_end: bool

    @property
    def name(self) -> str:
        return f"{self.kind[0]}{self.seq:05d}"


@dataclass
class ChunkVerdicts:
    """Decisions of the cross-chunk post-passes that a re-parse of the chunk must apply."""

    reject_lines: dict[int, str] = field(default_factory=dict)
    field_of: dict[int, str] = field(default_factory=dict)


def plan_chunks(path: Path, split: str, kind: Kind, chunk_bytes: int) -> Iterator[ChunkSpec]:
    """Yield line-aligned chunks of about `chunk_bytes`; a longer line makes a longer chunk.

    Reads the file once sequentially to find boundaries and count lines (cheap next to parsing),
    so every chunk knows the number of its first line.
    """
    size = path.stat().st_size
    pos, line, seq = 0, 1, 0
    with path.open("rb") as f:
        while pos < size:
            f.seek(pos)
            block = f.read(chunk_bytes)
            while pos + len(block) < size and block.rfind(b"\n") == -1:
                block += f.read(SCAN_BLOCK)  # a line longer than a chunk: extend to its end
            length = size - pos if pos + len(block) >= size else block.rfind(b"\n") + 1
            lines = block.count(b"\n", 0, length)
            at_end = pos + length >= size
            if at_end and not block[:length].endswith(b"\n"):
                lines += 1  # a final line without a newline is still a line
            yield ChunkSpec(split, kind, str(path), seq, pos, length, line, at_end)
            pos += length
            line += lines
            seq += 1


def part_path(out_split: Path, table: str, spec: ChunkSpec) -> Path:
    return out_split / table / f"part-{spec.name}.parquet"


def manifest_path(out_split: Path, spec: ChunkSpec) -> Path:
    return out_split / "_chunks" / f"{spec.name}.json"


SIDE_TABLES = {"keys": "_keys", "features": "_features"}


def run_chunk(
    spec: ChunkSpec,
    out_split: str,
    common_index_file: str | None = None,
    verdicts: ChunkVerdicts | None = None,
    compression: str = "zstd",
) -> dict[str, Any]:
    """Parse one chunk and write its parts; returns the chunk's accounting stats."""
    out = Path(out_split)
    with open(spec.path, "rb") as f:
        f.seek(spec.start)
        data = f.read(spec.length)
    common_indexes = None
    if common_index_file is not None:
        common_indexes = pl.read_parquet(common_index_file).get_column("key")
    verdicts = verdicts or ChunkVerdicts()
    ctx = ChunkContext(
        split=spec.split,
        kind=spec.kind,
        file_name=os.path.basename(spec.path),
        first_line=spec.first_line,
        byte_offset=spec.start,
        at_file_end=spec.at_file_end,
        common_indexes=common_indexes,
        reject_lines=verdicts.reject_lines,
        field_of=verdicts.field_of,
    )
    result = parse_chunk(data, ctx)
    del data
    for table, frame in result.tables.items():
        if table == "rejects" and frame.is_empty():
            # No file for an empty rejects part, but remove one a previous parse left behind.
            part_path(out, table, spec).unlink(missing_ok=True)
            continue
        target = part_path(out, SIDE_TABLES.get(table, table), spec)
        with atomic_file(target) as tmp:
            frame.write_parquet(tmp, compression=compression, statistics=True)
    manifest = {"spec": asdict(spec), "stats": result.stats}
    with atomic_file(manifest_path(out, spec)) as tmp:
        tmp.write_text(json.dumps(manifest))
    return result.stats


def read_manifest(out_split: Path, spec: ChunkSpec) -> dict[str, Any] | None:
    """Stats of a chunk completed earlier with the same boundaries, else None."""
    path = manifest_path(out_split, spec)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest["stats"] if manifest.get("spec") == asdict(spec) else None
