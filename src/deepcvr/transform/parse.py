"""Parse one chunk of raw Ali-CCP lines into 3NF frames, with every reject accounted for.

The hot path of deepcvr. Everything is columnar (NumPy for line boundaries, Polars for the rest):
no Python loop touches a row or a structure, except the rare invalid-UTF-8 line.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from deepcvr.aliccp import COMMON_COLUMNS, ITEM_SEP, SKELETON_COLUMNS
from deepcvr.transform.reasons import *  # noqa: F403  (the reason codes are part of this API)
from deepcvr.transform.reasons import (
    BAD_COMMON_INDEX,
    BAD_FEATURE_NUM,
    BAD_LABEL,
    BAD_SAMPLE_ID,
    DUPLICATE_COMMON_INDEX,
    DUPLICATE_SAMPLE_ID,
    EMPTY_FEATURE_LIST,
    FEATURE_NUM_MISMATCH,
    FLAGGED,
    INDEX16,
    INVALID_UTF8,
    LABEL_OUT_OF_RANGE,
    MAX_POSITION,
    ORPHAN_COMMON_INDEX,
    RAW_TEXT_LIMIT,
    REJECTED,
    SCHEMAS,
    TOO_MANY_STRUCTURES,
    TRUNCATED_LAST_LINE,
    WRONG_COLUMN_COUNT,
    ChunkContext,
)
from deepcvr.transform.structures import parse_structures


@dataclass
class ChunkResult:
    tables: dict[str, pl.DataFrame]  # 3NF tables plus "rejects", "keys", "features"
    stats: dict[str, int | str | None]


def split_lines(data: bytes, ctx: ChunkContext) -> pl.DataFrame:
    """Lines of `data`: number, byte offset, text without terminator, and terminator facts."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    ends = newlines + 1
    if len(data) and (not len(newlines) or newlines[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # final line without a newline
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = ends
    n = len(ends)
    invalid = np.zeros(n, dtype=bool)
    if not data.isascii():
        invalid = invalid_utf8_lines(data, offsets)
    payload, text_offsets = data, offsets
    if invalid.any():
        payload, text_offsets = _lossy_payload(data, offsets, invalid)
    # Arrow views the chunk's bytes without copying.
    text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(text_offsets), pa.py_buffer(payload))
    has_newline = np.ones(n, dtype=bool)
    if n and ends[-1] == len(data) and (not len(newlines) or newlines[-1] != len(data) - 1):
        has_newline[-1] = False
    crlf = np.zeros(n, dtype=bool)
    if len(newlines):
        crlf[: len(newlines)] = buf[np.maximum(newlines - 1, 0)] == 13
        crlf[: len(newlines)] &= newlines > offsets[: len(newlines)]
    # Length of the line without its terminator ("\n" or "\r\n"), in the (lossy) text:
    # str.slice counts characters, so bytes serve only when the chunk is ASCII.
    drop = has_newline.astype(np.int64) + crlf
    keep = np.diff(text_offsets) - drop
    length = pl.col("keep") if data.isascii() else pl.col("text").str.len_chars() - pl.col("drop")
    return (
        pl.DataFrame(
            {
                "line": np.arange(ctx.first_line, ctx.first_line + n, dtype=np.int64),
                "byte_offset": offsets[:-1] + ctx.byte_offset,
                "text": pl.from_arrow(text),
                "keep": keep,
                "drop": drop,
                "invalid_utf8": invalid,
                "has_newline": has_newline,
                "crlf": crlf,
            }
        )
        .with_columns(pl.col("text").str.slice(0, length))
        .drop("keep", "drop")
    )


def _lossy_payload(
    data: bytes, offsets: np.ndarray, invalid: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """Re-encode invalid lines with U+FFFD so they can be shown; loops over bad lines only."""
    pieces: list[bytes] = []
    new_offsets = offsets.copy()
    prev = 0
    for i in np.flatnonzero(invalid):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        fixed = data[lo:hi].decode("utf-8", "replace").encode("utf-8")
        pieces += [data[prev:lo], fixed]
        prev = hi
        new_offsets[i + 1 :] += len(fixed) - (hi - lo)
    pieces.append(data[prev:])
    return b"".join(pieces), new_offsets


UTF8_WINDOW = 1 << 16


def invalid_utf8_lines(data: bytes, offsets: np.ndarray) -> np.ndarray:
    """Lines that are not UTF-8. Decodes in windows (incremental, so a character cut by a window
    edge is carried over): linear in the chunk however many lines are bad."""
    invalid = np.zeros(len(offsets) - 1, dtype=bool)
    if data.isascii():
        return invalid
    view = memoryview(data)
    pos, size = 0, len(data)
    while pos < size:
        end = min(pos + UTF8_WINDOW, size)
        try:
            _, consumed = codecs.utf_8_decode(view[pos:end], "strict", end == size)
        except UnicodeDecodeError as err:
            line = int(np.searchsorted(offsets, pos + err.start, side="right")) - 1
            invalid[line] = True
            pos = int(offsets[line + 1])  # go on with the next line
            continue
        pos += consumed or (end - pos)
    return invalid


def index_numbers(indexes: pl.Series) -> pl.Series:
    """16 hex characters are a 64-bit number; null for anything else."""
    return indexes.str.to_integer(base=16, dtype=pl.UInt64, strict=False)


def sorted_index_numbers(indexes: pl.Series) -> np.ndarray:
    return index_numbers(indexes).drop_nulls().sort().to_numpy()


def has_index(known: np.ndarray, indexes: pl.Series) -> pl.Series:
    """Which of `indexes` are in `known` (sorted numbers from sorted_index_numbers)."""
    numbers = index_numbers(indexes)
    values = numbers.fill_null(0).to_numpy()
    if not len(known):
        return pl.Series(np.zeros(len(values), dtype=bool))
    at = np.minimum(np.searchsorted(known, values), len(known) - 1)
    return pl.Series((known[at] == values) & numbers.is_not_null().to_numpy())


def raw_structures(text: pl.Expr) -> pl.Expr:
    """Structures a raw line holds: items between 0x01 separators, 0 if it has no separator."""
    has_any = text.str.contains(r"[\x01\x02\x03]")
    return pl.when(has_any).then(text.str.count_matches(ITEM_SEP, literal=True) + 1).otherwise(0)


def parse_chunk(data: bytes, ctx: ChunkContext) -> ChunkResult:
    """Parse whole raw lines of one file into the tables of its kind."""
    lines = split_lines(data, ctx)
    text = pl.col("text")
    lines = lines.with_columns(structures=raw_structures(text).cast(pl.Int32))
    names = list(SKELETON_COLUMNS if ctx.kind == "skeleton" else COMMON_COLUMNS)
    cols = lines.with_columns(
        text.str.splitn(",", len(names)).struct.rename_fields(names).alias("cols")
    ).unnest("cols")
    # A line without any separator still holds one structure when its feature list is one
    # token ("205": a malformed structure); raw_structures() alone counts it as 0.
    flist = pl.col("feature_list")
    lone = (pl.col("structures") == 0) & (flist != "") & ~flist.str.contains(",", literal=True)
    cols = cols.with_columns(
        structures=pl.when(lone).then(1).otherwise(pl.col("structures")).cast(pl.Int32)
    )
    cols = cols.with_columns(
        num=pl.col("feature_num").cast(pl.Int32, strict=False),
        items=pl.col("structures"),
    )
    if ctx.kind == "skeleton":
        cols = cols.with_columns(
            sid=pl.col("sample_id").cast(pl.Int64, strict=False),
            clk=pl.col("click").cast(pl.Int8, strict=False),
            cvr=pl.col("conversion").cast(pl.Int8, strict=False),
        )
    cols = cols.with_columns(reason=_line_reason(ctx))
    # Orphans before duplicates: an orphan line holds no key, in this chunk as across chunks
    # (the cross-chunk key index lists accepted lines only), so chunking cannot change the result.
    if ctx.kind == "skeleton" and ctx.common_indexes is not None:
        orphan = ~has_index(ctx.common_indexes, cols.get_column("common_feature_index"))
        cols = cols.with_columns(
            reason=pl.when(pl.col("reason").is_null() & orphan)
            .then(pl.lit(ORPHAN_COMMON_INDEX))
            .otherwise(pl.col("reason"))
        )
    cols = _mark_duplicates(cols, ctx)

    good = cols.filter(pl.col("reason").is_null())
    bad = cols.filter(pl.col("reason").is_not_null())
    structures, struct_rejects, features = parse_structures(good, ctx)

    split = pl.lit(ctx.split)
    if ctx.kind == "skeleton":
        rows = good.select(
            split.alias("split"),
            pl.col("sid").alias("sample_id"),
            pl.col("clk").alias("click"),
            pl.col("cvr").alias("conversion"),
            "common_feature_index",
            pl.col("num").alias("num_features"),
        )
        keys = good.select(pl.col("sid").alias("key"), "line")
        row_table, feat_table, key_col = "sample", "sample_feature", "sample_id"
    else:
        rows = good.select(
            split.alias("split"), "common_feature_index", pl.col("num").alias("num_features")
        )
        keys = good.select(pl.col("common_feature_index").alias("key"), "line")
        row_table, feat_table, key_col = (
            "common_feature_group",
            "common_feature",
            ("common_feature_index"),
        )
    feats = structures.select(
        split.alias("split"), pl.col("key").alias(key_col), "position", "feature_id", "value"
    )
    rejects = pl.concat(
        [
            _line_rejects(bad, ctx),
            _mismatch_flags(good, ctx),
            struct_rejects,
        ],
        how="vertical",
    )
    rejected_lines = rejects.filter(
        (pl.col("action") == REJECTED) & pl.col("position").is_null()
    ).height
    stats = {
        "bytes": len(data),
        "lines": lines.height,
        "raw_structures": int(cols.get_column("structures").sum() or 0),
        "loaded_lines": rows.height,
        "loaded_structures": feats.height,
        "rejected_lines": rejected_lines,
        "rejected_structures": int(
            rejects.filter(pl.col("action") == REJECTED).get_column("structures").sum() or 0
        ),
        "flagged_lines": rejects.filter(pl.col("action") == FLAGGED).height,
        "crlf_lines": int(lines.get_column("crlf").sum()),
        # Key range of the chunk: chunks whose ranges do not overlap cannot share a key, so the
        # cross-chunk duplicate check can be skipped for sorted files (Ali-CCP's are).
        "key_min": keys.get_column("key").min(),
        "key_max": keys.get_column("key").max(),
    }
    return ChunkResult(
        tables={
            row_table: rows,
            feat_table: feats,
            "rejects": rejects,
            "keys": keys,
            "features": features,
        },
        stats=stats,
    )


def _line_reason(ctx: ChunkContext) -> pl.Expr:
    """The first line-level problem of each line, or null; the order decides the reported reason."""
    c = pl.col
    last = c("feature_list")
    checks: list[tuple[pl.Expr, str]] = [
        (c("invalid_utf8"), INVALID_UTF8),
        (~c("has_newline"), TRUNCATED_LAST_LINE),
        (last.is_null() | last.str.contains(",", literal=True), WRONG_COLUMN_COUNT),
    ]
    if ctx.kind == "skeleton":
        checks += [
            (c("sid").is_null() | (c("sid") <= 0), BAD_SAMPLE_ID),
            (c("clk").is_null() | c("cvr").is_null(), BAD_LABEL),
            (~c("clk").is_in([0, 1]) | ~c("cvr").is_in([0, 1]), LABEL_OUT_OF_RANGE),
        ]
    checks += [
        (~c("common_feature_index").str.contains(INDEX16), BAD_COMMON_INDEX),
        (c("num").is_null() | (c("num") < 0), BAD_FEATURE_NUM),
        (last == "", EMPTY_FEATURE_LIST),
        (c("items") > MAX_POSITION + 1, TOO_MANY_STRUCTURES),
    ]
    if ctx.reject_lines:
        verdicts = pl.DataFrame(
            {"line": list(ctx.reject_lines), "reason": list(ctx.reject_lines.values())},
            schema={"line": pl.Int64, "reason": pl.String},
        )
        verdict = c("line").replace_strict(
            verdicts["line"], verdicts["reason"], default=None, return_dtype=pl.String
        )
        checks.append((verdict.is_not_null(), verdict))  # type: ignore[arg-type]
    expr: pl.Expr | None = None
    for cond, reason in checks:
        value = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
        expr = pl.when(cond).then(value) if expr is None else expr.when(cond).then(value)
    assert expr is not None
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _mark_duplicates(cols: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    """Reject the second and later lines with the same key inside this chunk (first one wins)."""
    key = "sid" if ctx.kind == "skeleton" else "common_feature_index"
    reason = DUPLICATE_SAMPLE_ID if ctx.kind == "skeleton" else DUPLICATE_COMMON_INDEX
    ok = pl.col("reason").is_null()
    first = pl.col(key).is_first_distinct().over(ok)
    return cols.with_columns(
        reason=pl.when(ok & ~first).then(pl.lit(reason)).otherwise(pl.col("reason"))
    )


def _line_rows(
    lines: pl.DataFrame,
    ctx: ChunkContext,
    reason: pl.Expr,
    action: str,
    structures: pl.Expr,
    detail: pl.Expr,
) -> pl.DataFrame:
    """Rows of the rejects table for whole lines (no structure position)."""
    return lines.select(
        pl.lit(ctx.split).alias("split"),
        pl.lit(ctx.file_name).alias("file"),
        "line",
        "byte_offset",
        pl.lit(None, dtype=pl.Int16).alias("position"),
        reason.alias("reason"),
        pl.lit(action).alias("action"),
        structures.alias("structures"),
        detail.alias("detail"),
        pl.col("text").str.slice(0, RAW_TEXT_LIMIT).alias("raw"),
    ).cast(SCHEMAS["rejects"])  # type: ignore[arg-type]


def _line_rejects(bad: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    return _line_rows(
        bad, ctx, pl.col("reason"), REJECTED, pl.col("structures"), pl.lit(None, dtype=pl.String)
    )


def _mismatch_flags(good: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    """Declared feature_num differs from the structures present: keep the row, flag it."""
    return _line_rows(
        good.filter(pl.col("num") != pl.col("items")),
        ctx,
        pl.lit(FEATURE_NUM_MISMATCH),
        FLAGGED,
        pl.lit(0, dtype=pl.Int32),
        pl.format("declared {} structures, found {}", pl.col("num"), pl.col("items")),
    )
