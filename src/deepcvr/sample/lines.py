"""Raw lines of one chunk: the few columns sampling needs, parsed columnar, and verbatim output.

Selected lines are copied byte for byte (terminators included) through a NumPy byte mask, so
the sample's lines are the input's lines, not a re-serialisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from deepcvr.aliccp import FIELD_SEP, FIELDS, ITEM_SEP, VALUE_SEP
from deepcvr.errors import ConfigError
from deepcvr.sample.keys import ABSENT
from deepcvr.transform.parse import invalid_utf8_lines

# --by takes a field that occurs once per impression, so each impression has one value.
BY_FIELDS: tuple[str, ...] = tuple(
    f.field_id for f in FIELDS if f.entity != "user" and not f.multi_valued
)
INDEX16 = r"^[0-9a-f]{16}$"
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def by_column(field_id: str) -> str:
    return f"by_{field_id}"


def check_by(fields: list[str]) -> list[str]:
    out = list(dict.fromkeys(f.strip() for f in fields))
    bad = [f for f in out if f not in BY_FIELDS]
    if bad:
        raise ConfigError(
            f"--by {bad[0]}: not a single-valued impression field; choose from "
            f"{', '.join(BY_FIELDS)}"
        )
    return out


def iter_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """Line-aligned pieces of about `chunk_bytes` (a longer line makes a longer piece), read
    sequentially, each byte once; a final line without a newline ends the last piece."""
    rest = b""
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            data = rest + block if rest else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: keep reading
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut] if rest else data
    if rest:
        yield rest


def line_offsets(data: bytes) -> np.ndarray:
    """Start of every line plus len(data) at the end (a final line may lack its newline)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero(buf == 10) + 1
    starts = starts[starts < len(data)]
    if not len(data):
        return np.zeros(1, dtype=np.int64)
    return np.concatenate(([0], starts, [len(data)])).astype(np.int64)


def gather(data: bytes, offsets: np.ndarray, rows: np.ndarray) -> bytes:
    """The bytes of lines `rows` (sorted), terminators included, in their order."""
    if not len(rows):
        return b""
    mask = np.zeros(len(offsets) - 1, dtype=bool)
    mask[rows] = True
    if mask.all():
        return data
    keep = np.repeat(mask, np.diff(offsets))
    return np.frombuffer(data, dtype=np.uint8)[keep].tobytes()


def _text(data: bytes, offsets: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """One row per line: `text` without its terminator (empty for a line that is not UTF-8),
    and whether the line is usable at all (UTF-8 and ends with a newline)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    lengths = np.diff(offsets)
    ends = offsets[1:]
    newline = (lengths > 0) & (buf[np.maximum(ends - 1, 0)] == 10)
    crlf = newline & (lengths > 1) & (buf[np.maximum(ends - 2, 0)] == 13)
    invalid = invalid_utf8_lines(data, offsets)
    payload, text_lengths = data, lengths
    if invalid.any():  # Arrow needs valid UTF-8: drop the bytes of the bad lines
        payload = gather(data, offsets, np.flatnonzero(~invalid))
        text_lengths = np.where(invalid, 0, lengths)
    text_offsets = np.concatenate(([0], np.cumsum(text_lengths))).astype(np.int64)
    n = len(lengths)
    arrow = pa.LargeStringArray.from_buffers(n, pa.py_buffer(text_offsets), pa.py_buffer(payload))
    keep = np.where(invalid, 0, lengths - newline - crlf)
    frame = pl.DataFrame({"text": pl.from_arrow(arrow), "keep": keep}).select(
        pl.col("text").str.slice(0, pl.col("keep"))
    )
    return frame, newline & ~invalid


def skeleton_frame(data: bytes, by: list[str]) -> tuple[pl.DataFrame, int]:
    """Valid impressions of a chunk: row (line number in the chunk), sample_id, click,
    conversion, common_feature_index, by_<field>; and the number of lines left out.

    A line is left out when the transform would reject it whole (bad UTF-8, truncated last line,
    wrong column count, bad id, label, index or feature_num, empty list); such lines are not
    part of the population, so they are never sampled.
    """
    text, usable = _text(data, line_offsets(data))
    names = ["sample_id", "click", "conversion", "common_feature_index", "num", "feature_list"]
    c = pl.col
    cols = (
        text.with_columns(usable=pl.Series(usable))
        .with_row_index("row")
        .with_columns(c("text").str.splitn(",", 6).struct.rename_fields(names).alias("cols"))
        .unnest("cols")
        .with_columns(
            c("sample_id").cast(pl.Int64, strict=False),
            c("click").cast(pl.Int8, strict=False),
            c("conversion").cast(pl.Int8, strict=False),
            c("num").cast(pl.Int32, strict=False),
        )
    )
    valid = (
        c("usable")
        & c("feature_list").is_not_null()
        & ~c("feature_list").str.contains(",", literal=True)
        & (c("feature_list") != "")
        & (c("sample_id") > 0)
        & c("click").is_in([0, 1])
        & c("conversion").is_in([0, 1])
        & c("common_feature_index").str.contains(INDEX16)
        & (c("num") >= 0)
    ).fill_null(False)
    good = cols.filter(valid)
    extract = [
        c("feature_list")
        .str.extract(f"(?:^|{ITEM_SEP}){re.escape(f)}{FIELD_SEP}([0-9]+){VALUE_SEP}", 1)
        .cast(pl.Int64, strict=False)
        .fill_null(ABSENT)
        .alias(by_column(f))
        for f in by
    ]
    frame = good.select(
        c("row").cast(pl.Int64),
        "sample_id",
        "click",
        "conversion",
        "common_feature_index",
        *extract,
    )
    return frame, cols.height - good.height


def common_indexes(data: bytes, offsets: np.ndarray) -> tuple[np.ndarray, pl.Series]:
    """(rows, common_feature_index) of the valid common lines of a chunk: a 16-hex index, a
    comma, and a newline (a final line without one is truncated, as the transform decides)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    ok = (ends - starts) >= 18  # 16 hex + comma + newline at the very least
    ok &= buf[np.maximum(ends - 1, 0)] == 10
    rows = np.flatnonzero(ok)
    chars = buf[starts[rows][:, None] + np.arange(16)].reshape(-1, 16)
    good = np.isin(chars, _HEX).all(axis=1) & (buf[starts[rows] + 16] == ord(","))
    text = np.ascontiguousarray(chars[good]).view("S16").ravel().astype("U16")
    return rows[good], pl.Series("common_feature_index", text, dtype=pl.String)
