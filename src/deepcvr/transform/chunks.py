"""Cut raw files into line-aligned chunks, and turn one chunk into Parquet parts.

A chunk is a byte range holding whole lines; its parts are written under temp names and renamed,
and its manifest is written last, so a chunk with a manifest is complete (resume relies on it).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from deepcvr.fsutil import atomic_file
from deepcvr.rawio import RangeReader, SharedBytes, SharedSlots, read_bytes
from deepcvr.schema import TABLES
from deepcvr.transform.parse import ChunkContext, Kind, parse_chunk, sorted_index_numbers

SCAN_BLOCK = 1 << 20  # how far to read past a chunk's nominal end to find a newline
# DuckDB's own row-group size: each Parquet row group fills one storage row group when loaded
# (left to itself, Polars writes uneven groups, down to a single row).
ROW_GROUP_ROWS = 122_880


@dataclass(frozen=True)
class RawSource:
    """A raw CSV: a file on disk, or a member of an archive read as a stream (stage_raw off)."""

    path: str
    member: str | None = None

    @property
    def name(self) -> str:
        return self.member or os.path.basename(self.path)

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.member is None:
            with open(self.path, "rb") as f:
                yield f
        else:
            from deepcvr.extract.members import open_member

            with open_member(Path(self.path), self.member) as reader:
                yield reader  # type: ignore[misc]

    def fingerprint(self) -> dict[str, Any]:
        st = os.stat(self.path)
        return {
            "path": os.path.abspath(self.path),
            "member": self.member,
            "bytes": st.st_size,
            "mtime": st.st_mtime,
        }


@dataclass(frozen=True)
class ChunkSpec:
    split: str
    kind: Kind
    path: str
    member: str | None
    seq: int
    start: int
    length: int
    first_line: int
    at_file_end: bool

    @property
    def name(self) -> str:
        return f"{self.kind[0]}{self.seq:05d}"

    @property
    def source(self) -> RawSource:
        return RawSource(self.path, self.member)


@dataclass
class ChunkVerdicts:
    """Decisions of the cross-chunk post-passes that a re-parse of the chunk must apply."""

    reject_lines: dict[int, str] = field(default_factory=dict)
    field_of: dict[int, str] = field(default_factory=dict)


def plan_chunks(
    source: RawSource,
    split: str,
    kind: Kind,
    chunk_bytes: int,
    slots: SharedSlots | None = None,
) -> Iterator[tuple[ChunkSpec, bytes | SharedBytes | None]]:
    """Yield line-aligned chunks of about `chunk_bytes`, in file order.

    A chunk ends after the last newline within its first `chunk_bytes` bytes (a longer line makes
    a longer chunk); the file's end closes the last one. Counting newlines on the way gives
    every chunk the number of its first line. A file on disk yields no bytes (None): the worker
    reads its own range, so chunks are not copied through the parent process; or, with `slots`,
    the slot the planner read the chunk into (given back by the caller once the chunk is done).
    An archive member can only be read as one stream, so its chunks come with their bytes.
    """
    if source.member is None:
        yield from _plan_file(source, split, kind, chunk_bytes, slots)
        return
    with source.open() as f:
        yield from _plan_stream(f, source, split, kind, chunk_bytes)


def _plan_file(
    source: RawSource, split: str, kind: Kind, chunk_bytes: int, slots: SharedSlots | None
) -> Iterator[tuple[ChunkSpec, SharedBytes | None]]:
    size = os.path.getsize(source.path)
    is_newline = np.empty(min(chunk_bytes, size), dtype=bool)  # reused: no fresh pages per chunk
    line, seq, pos = 1, 0, 0
    # Read past the page cache, into a slot a worker copies the chunk from, or else into one
    # buffer (the worker then reads its chunk again).
    with RangeReader(source.path, min(chunk_bytes, size)) as reader:
        own = reader.buffer
        while pos < size:
            slot = slots.take() if slots is not None else None
            reader.buffer = slot[1] if slot is not None else own
            buf, off, n = reader.read(pos, min(chunk_bytes, size - pos))
            block = np.frombuffer(buf, dtype=np.uint8, count=n, offset=off)
            # Counts 2.5x faster than bytes.count.
            newlines = int(np.count_nonzero(np.equal(block, 10, out=is_newline[:n])))
            del block  # the buffer may be replaced by the next read
            if pos + n >= size:
                end = size
                last_is_newline = n > 0 and buf[off + n - 1] == 10
            else:
                cut = buf.rfind(b"\n", off, off + n)
                last_is_newline = cut != -1
                end = pos + cut - off + 1 if last_is_newline else pos + n
                while not last_is_newline and end < size:  # a line longer than a chunk
                    more, at, got = reader.read(end, SCAN_BLOCK)
                    cut = more.find(b"\n", at, at + got)
                    last_is_newline = cut != -1
                    end += cut - at + 1 if last_is_newline else got
                    newlines += last_is_newline
                    if not got:
                        break
            shared = None
            if slot is None:
                own = reader.buffer  # grown, for a long line
            else:
                assert slots is not None  # a slot came from them
                # A chunk longer than the read (its last line went on) is not all in the slot,
                # nor one read into a larger buffer than the slot.
                if end - pos <= n and buf is slot[1]:
                    shared = slots.share(slot[0], off, end - pos)
                else:
                    slots.give_back(slot[0])
            yield (
                ChunkSpec(split, kind, source.path, None, seq, pos, end - pos, line, end == size),
                shared,
            )
            line += newlines + (0 if last_is_newline else 1)
            pos = end
            seq += 1


def _plan_stream(
    f: BinaryIO, source: RawSource, split: str, kind: Kind, chunk_bytes: int
) -> Iterator[tuple[ChunkSpec, bytes]]:
    line, seq, pos = 1, 0, 0
    buf = b""  # bytes read but not yet handed out start at buf[off]
    off = 0
    eof = False

    def fill(size: int) -> None:
        nonlocal buf, off, eof
        # In SCAN_BLOCK reads: an archive member's larger reads make tarfile join and slice
        # fresh buffers, whose page faults cost more than the decompression.
        parts = [buf[off:]]  # compact only when reading, so slicing chunks stays cheap
        while size > 0 and (more := f.read(min(size, SCAN_BLOCK))):
            parts.append(more)
            size -= len(more)
        eof = size > 0
        buf = b"".join(parts)
        off = 0

    while True:
        while not eof and len(buf) - off < chunk_bytes:
            fill(max(chunk_bytes - (len(buf) - off), SCAN_BLOCK))
        if len(buf) == off:
            return
        if eof and len(buf) - off <= chunk_bytes:
            end = len(buf)
        else:
            cut = buf.rfind(b"\n", off, off + chunk_bytes)
            searched = off + chunk_bytes
            while cut == -1:  # a line longer than a chunk: extend to its end
                cut = buf.find(b"\n", searched)
                if cut != -1 or eof:
                    cut = len(buf) - 1 if cut == -1 else cut
                    break
                searched = len(buf) - off  # fill() compacts: off becomes 0
                fill(SCAN_BLOCK)
            end = cut + 1
        data = buf[off:end]
        off = end
        if len(buf) == off and not eof:  # know whether this chunk ends the file
            fill(SCAN_BLOCK)
        at_end = eof and len(buf) == off
        yield (
            ChunkSpec(split, kind, source.path, source.member, seq, pos, len(data), line, at_end),
            data,
        )
        line += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        pos += len(data)
        seq += 1


def read_range(spec: ChunkSpec) -> bytes:
    """A chunk's bytes (read by its worker); an archive member is streamed to the range."""
    if spec.member is None:
        return read_bytes(spec.path, spec.start, spec.length)
    with spec.source.open() as f:
        skip = spec.start
        while skip:
            skip -= len(f.read(min(skip, 1 << 24)))
        return f.read(spec.length)


# The long tables (a row per structure: nearly all the bytes) are written with encodings that
# fit their columns, and no compression on top: a key repeated down a sample's structures and a
# position counting up are deltas of 0 and 1, and values are few (log counts) and go in a
# dictionary. Against snappy over plain pages, per 8 MB chunk (CPU ms, median of 21 runs): a
# sample_feature part takes 17.7 ms to write against 19.2 and 7.8 ms for DuckDB to read against
# 9.7, and is 9 % smaller; a common_feature part 13.6 and 5.1 ms against 13.9 and 5.5, 27 %
# smaller.
DELTA = "DELTA_BINARY_PACKED"
LONG_TABLES: dict[str, dict[str, str]] = {
    "sample_feature": {"sample_id": DELTA, "position": DELTA},
    "common_feature": {"position": DELTA},
}
DICTIONARY_NUMBERS = ("value",)


def write_frame(frame: pl.DataFrame, table: str, path: Path, compression: str) -> None:
    """Write a part; a table of the model gets exactly its schema from `deepcvr.schema` (the one
    definition the loaders' DDL also comes from), side tables keep Polars' types."""
    if table not in TABLES:
        frame.write_parquet(
            path, compression=compression, statistics=True, row_group_size=ROW_GROUP_ROWS
        )
        return
    data = _arrow_table(frame, TABLES[table].arrow_schema())
    if table in LONG_TABLES:
        write_arrow(data, path, "none", LONG_TABLES[table], DICTIONARY_NUMBERS)
    else:
        write_arrow(data, path, compression)


def write_arrow(
    data: pa.Table,
    path: Path,
    compression: str,
    encodings: dict[str, str] | None = None,
    dictionary: tuple[str, ...] = (),
) -> None:
    """Write a part already in the model's Arrow types; a text column may come dictionary-coded
    (its pages are then written from the dictionary, without hashing a value per row).
    `encodings`: column -> Parquet encoding; `dictionary`: other columns to dictionary-encode."""
    # Dictionary pages for the text columns (a split name or a group key repeats down a part);
    # numbers are written plain unless named: a dictionary attempt on every id and value made a
    # sample_feature part 40 % slower to write and 10 % larger.
    texts = [
        f.name for f in data.schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)
    ]
    pq.write_table(
        data,
        path,
        compression=compression,
        use_dictionary=[*texts, *dictionary],
        column_encoding=encodings,
        write_statistics=True,
        row_group_size=ROW_GROUP_ROWS,
        # The file's own (Parquet) types are the model's; no Arrow schema in the footer, so a
        # column written from a dictionary reads back as plain text.
        store_schema=False,
    )


def _arrow_table(frame: pl.DataFrame, schema: pa.Schema, constant: str = "split") -> pa.Table:
    """`frame` with the model's Arrow types. The `constant` column, when it holds one value
    all the way down (a part's split), becomes a one-entry dictionary: the writer then hashes
    nothing per row (a third of the time of writing a sample_feature part)."""
    values = frame.get_column(constant) if constant in schema.names else None
    first = values[0] if values is not None and len(values) else None
    if values is None or first is None or values.null_count() or not (values == first).all():
        return frame.select(schema.names).to_arrow().cast(schema)
    at = schema.get_field_index(constant)
    rest = pa.schema([f for f in schema if f.name != constant])
    data = frame.select(rest.names).to_arrow().cast(rest)
    # Built through Polars: pa.array() would import pandas (0.2 s per worker) to rule it out.
    # 8-bit indices: the writer's statistics look for the values used among the indices, which
    # Arrow does without hashing for 8-bit ones (3 % of the time to write a sample_feature part).
    one = pa.DictionaryArray.from_arrays(
        pl.zeros(frame.height, pl.Int8, eager=True).to_arrow(),
        pl.Series([first], dtype=pl.String).to_arrow().cast(pa.string()),
    )
    return data.add_column(at, schema.field(at).with_type(one.type), one)


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
    compression: str = "snappy",
    data: bytes | SharedBytes | None = None,
) -> dict[str, Any]:
    """Parse one chunk and write its parts; returns the chunk's accounting stats."""
    out = Path(out_split)
    if data is None:
        data = read_range(spec)
    elif isinstance(data, SharedBytes):
        data = data.read()
    common_indexes = None
    if common_index_file is not None:
        st = os.stat(common_index_file)
        common_indexes = _common_indexes(common_index_file, st.st_mtime_ns, st.st_size)
    verdicts = verdicts or ChunkVerdicts()
    ctx = ChunkContext(
        split=spec.split,
        kind=spec.kind,
        file_name=spec.source.name,
        first_line=spec.first_line,
        byte_offset=spec.start,
        common_indexes=common_indexes,
        reject_lines=verdicts.reject_lines,
        field_of=verdicts.field_of,
    )
    result = parse_chunk(data, ctx)
    del data
    parts = {}
    for table, frame in result.tables.items():
        if table == "rejects" and frame.is_empty():
            # No file for an empty rejects part, but remove one a previous parse left behind.
            part_path(out, table, spec).unlink(missing_ok=True)
            continue
        target = part_path(out, SIDE_TABLES.get(table, table), spec)
        with atomic_file(target) as tmp:
            write_frame(frame, table, tmp, compression)
        parts[str(target.relative_to(out))] = target.stat().st_size
    manifest = {"spec": asdict(spec), "stats": result.stats, "parts": parts}
    with atomic_file(manifest_path(out, spec)) as tmp:
        tmp.write_text(json.dumps(manifest))
    return result.stats


@functools.lru_cache(maxsize=2)
def _common_indexes(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """A split's group keys, read once per worker (it parses many chunks of the split)."""
    return sorted_index_numbers(pl.read_parquet(path).get_column("key"))


def read_manifest(out_split: Path, spec: ChunkSpec) -> dict[str, Any] | None:
    """Stats of a chunk completed earlier with the same boundaries, else None."""
    path = manifest_path(out_split, spec)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != asdict(spec):
        return None
    for rel, size in manifest.get("parts", {}).items():  # the parts must still be there, whole
        part = out_split / rel
        if not part.is_file() or part.stat().st_size != size:
            return None
    return manifest["stats"]
