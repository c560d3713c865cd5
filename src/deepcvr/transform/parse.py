"""Parse one chunk of raw Ali-CCP lines into 3NF frames, with every reject accounted for.

The hot path of deepcvr. Everything is columnar (NumPy for line boundaries, Polars for the rest):
no Python loop touches a row or a structure, except the rare invalid-UTF-8 line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from deepcvr.aliccp import FIELD_SEP, FIELDS, ITEM_SEP, VALUE_SEP

Kind = Literal["common", "skeleton"]

RAW_TEXT_LIMIT = 1000  # characters of raw text kept in a reject row
MAX_POSITION = 32767  # positions are SMALLINT in every target

_TOKEN = r"[^\x01\x02\x03]+"
_STRUCT = f"{_TOKEN}\x02{_TOKEN}\x03{_TOKEN}"
# A feature list whose every structure is well formed; lines failing it take the slow path.
WELL_FORMED_LIST = f"^{_STRUCT}(?:\x01{_STRUCT})*$"
WELL_FORMED_STRUCT = f"^{_STRUCT}$"
INDEX16 = r"^[0-9a-f]{16}$"

# Reason codes (the contract of the rejects table).
INVALID_UTF8 = "invalid_utf8"
TRUNCATED_LAST_LINE = "truncated_last_line"
WRONG_COLUMN_COUNT = "wrong_column_count"
BAD_SAMPLE_ID = "bad_sample_id"
BAD_LABEL = "bad_label"
LABEL_OUT_OF_RANGE = "label_out_of_range"
BAD_COMMON_INDEX = "bad_common_index"
BAD_FEATURE_NUM = "bad_feature_num"
EMPTY_FEATURE_LIST = "empty_feature_list"
TOO_MANY_STRUCTURES = "too_many_structures"
DUPLICATE_SAMPLE_ID = "duplicate_sample_id"
DUPLICATE_COMMON_INDEX = "duplicate_common_index"
ORPHAN_COMMON_INDEX = "orphan_common_index"
FEATURE_NUM_MISMATCH = "feature_num_mismatch"
MALFORMED_STRUCTURE = "malformed_structure"
UNKNOWN_FIELD = "unknown_field"
BAD_FEATURE_ID = "bad_feature_id"
BAD_VALUE = "bad_value"
FEATURE_FIELD_CONFLICT = "feature_field_conflict"

REJECTED = "rejected"
FLAGGED = "flagged"

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "rejects": {
        "split": pl.String(),
        "file": pl.String(),
        "line": pl.Int64(),
        "byte_offset": pl.Int64(),
        "position": pl.Int16(),
        "reason": pl.String(),
        "action": pl.String(),
        "structures": pl.Int32(),
        "detail": pl.String(),
        "raw": pl.String(),
    },
    "features": {"feature_id": pl.Int32(), "field_id": pl.String()},
}


@dataclass
class ChunkContext:
    """What a chunk is and what earlier passes decided about it."""

    split: str
    kind: Kind
    file_name: str
    first_line: int  # 1-based number of the chunk's first line
    byte_offset: int  # offset of the chunk's first byte in the file
    at_file_end: bool  # the chunk ends the file, so its last line may lack a newline
    common_indexes: pl.Series | None = None  # the split's group keys, for the orphan check
    reject_lines: dict[int, str] = field(default_factory=dict)  # line -> reason, from post-passes
    field_of: dict[int, str] = field(default_factory=dict)  # feature_id -> field, from post-passes


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
        invalid = _invalid_utf8_lines(data, offsets)
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
    # Length of the line without its terminator ("\n" or "\r\n"), in the (lossy) text.
    keep = np.diff(text_offsets) - has_newline - crlf
    return (
        pl.DataFrame(
            {
                "line": np.arange(ctx.first_line, ctx.first_line + n, dtype=np.int64),
                "byte_offset": offsets[:-1] + ctx.byte_offset,
                "text": pl.from_arrow(text),
                "keep": keep,
                "invalid_utf8": invalid,
                "has_newline": has_newline,
                "crlf": crlf,
            }
        )
        .with_columns(pl.col("text").str.slice(0, pl.col("keep")))
        .drop("keep")
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


def _invalid_utf8_lines(data: bytes, offsets: np.ndarray) -> np.ndarray:
    """Mark lines that are not UTF-8; loops over bad lines only, never over every row."""
    invalid = np.zeros(len(offsets) - 1, dtype=bool)
    pos = 0
    while pos < len(data):
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as err:
            bad = pos + err.start
            line = int(np.searchsorted(offsets, bad, side="right")) - 1
            invalid[line] = True
            pos = int(offsets[line + 1])
    return invalid


def raw_structures(text: pl.Expr) -> pl.Expr:
    """Structures a raw line holds: items between 0x01 separators, 0 if it has no separator."""
    has_any = text.str.contains(r"[\x01\x02\x03]")
    return pl.when(has_any).then(text.str.count_matches(ITEM_SEP, literal=True) + 1).otherwise(0)


def parse_chunk(data: bytes, ctx: ChunkContext) -> ChunkResult:
    """Parse whole raw lines of one file into the tables of its kind."""
    lines = split_lines(data, ctx)
    text = pl.col("text")
    lines = lines.with_columns(structures=raw_structures(text).cast(pl.Int32))
    ncols = 6 if ctx.kind == "skeleton" else 3
    names = (
        ["sample_id", "click", "conversion", "common_feature_index", "feature_num", "feature_list"]
        if ctx.kind == "skeleton"
        else ["common_feature_index", "feature_num", "feature_list"]
    )
    cols = lines.with_columns(
        text.str.splitn(",", ncols).struct.rename_fields(names).alias("cols")
    ).unnest("cols")
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
    cols = _mark_duplicates(cols, ctx)
    if ctx.kind == "skeleton" and ctx.common_indexes is not None:
        orphan = ~pl.col("common_feature_index").is_in(ctx.common_indexes.implode())
        cols = cols.with_columns(
            reason=pl.when(pl.col("reason").is_null() & orphan)
            .then(pl.lit(ORPHAN_COMMON_INDEX))
            .otherwise(pl.col("reason"))
        )

    good = cols.filter(pl.col("reason").is_null())
    bad = cols.filter(pl.col("reason").is_not_null())
    structures, struct_rejects = _parse_structures(good, ctx)

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
    features = feature_pairs(structures)
    rejected_lines = rejects.filter(
        (pl.col("action") == REJECTED) & pl.col("position").is_null()
    ).height
    stats = {
        "bytes": len(data),
        "lines": lines.height,
        "raw_structures": int(lines.get_column("structures").sum() or 0),
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


FIELD_ENUM = pl.Enum([f.field_id for f in FIELDS])


def _parse_structures(good: pl.DataFrame, ctx: ChunkContext) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Explode accepted lines into structures; return (valid structures, structure rejects)."""
    key = pl.col("sid") if ctx.kind == "skeleton" else pl.col("common_feature_index")
    base = good.select(
        key.alias("key"),
        "line",
        "byte_offset",
        pl.col("feature_list").str.contains(WELL_FORMED_LIST).alias("well_formed"),
        pl.col("feature_list").str.split(ITEM_SEP).alias("s"),
    )
    exploded = base.with_columns(
        position=pl.int_ranges(pl.col("s").list.len(), dtype=pl.Int16)
    ).explode("s", "position")
    s = pl.col("s")
    parsed = exploded.with_columns(
        p2=s.str.find(FIELD_SEP, literal=True), p3=s.str.find(VALUE_SEP, literal=True)
    ).with_columns(
        field=s.str.slice(0, pl.col("p2")).cast(FIELD_ENUM, strict=False),
        feature_id=s.str.slice(pl.col("p2") + 1, pl.col("p3") - pl.col("p2") - 1).cast(
            pl.Int32, strict=False
        ),
        value=s.str.slice(pl.col("p3") + 1).cast(pl.Float64, strict=False),
    )
    c = pl.col
    # Only structures of lines that failed the whole-list check need the per-structure check.
    shape_ok = pl.when(c("well_formed")).then(True).otherwise(s.str.contains(WELL_FORMED_STRUCT))
    if parsed.get_column("well_formed").all():
        shape_ok = pl.lit(True)
    reason = (
        pl.when(~shape_ok)
        .then(pl.lit(MALFORMED_STRUCTURE))
        .when(c("field").is_null())
        .then(pl.lit(UNKNOWN_FIELD))
        .when(c("feature_id").is_null() | (c("feature_id") <= 0))
        .then(pl.lit(BAD_FEATURE_ID))
        .when(c("value").is_null() | ~c("value").is_finite())
        .then(pl.lit(BAD_VALUE))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    parsed = _mark_field_conflicts(parsed.with_columns(reason=reason), ctx)
    valid = parsed.filter(c("reason").is_null()).select(
        "key", "position", "field", "feature_id", "value"
    )
    rejected = parsed.filter(c("reason").is_not_null())
    rejects = rejected.select(
        pl.lit(ctx.split).alias("split"),
        pl.lit(ctx.file_name).alias("file"),
        "line",
        "byte_offset",
        "position",
        "reason",
        pl.lit(REJECTED).alias("action"),
        pl.lit(1, dtype=pl.Int32).alias("structures"),
        pl.when(c("reason") == FEATURE_FIELD_CONFLICT)
        .then(pl.format("feature {} belongs to field {}", c("feature_id"), c("winner")))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("detail"),
        s.str.slice(0, RAW_TEXT_LIMIT).alias("raw"),
    ).cast(SCHEMAS["rejects"])  # type: ignore[arg-type]
    return valid, rejects


def feature_pairs(structures: pl.DataFrame) -> pl.DataFrame:
    """Distinct (feature_id, field_id) of valid structures, via one packed-integer unique."""
    packed = (
        structures.select(
            (pl.col("feature_id").cast(pl.Int64) * 32 + pl.col("field").to_physical()).alias("k")
        )
        .get_column("k")
        .unique()
        .sort()
    )
    return pl.DataFrame(
        {"feature_id": (packed // 32).cast(pl.Int32), "code": (packed % 32).cast(pl.UInt8)}
    ).select(
        "feature_id",
        field_id=pl.col("code").replace_strict(
            list(range(len(FIELDS))), [f.field_id for f in FIELDS], return_dtype=pl.String
        ),
    )


def _mark_field_conflicts(parsed: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    """A feature id belongs to one field: the post-pass verdict, else the first seen, wins.

    The full join runs only when this chunk really has a conflict (rare in real data)."""
    c = pl.col
    ok = parsed.filter(c("reason").is_null())
    pairs = feature_pairs(ok)
    conflicted = pairs.filter(c("feature_id").is_duplicated())
    decided = pl.DataFrame(
        {"feature_id": list(ctx.field_of), "winner": list(ctx.field_of.values())},
        schema={"feature_id": pl.Int32, "winner": pl.String},
    )
    overruled = pairs.join(decided, on="feature_id").filter(c("field_id") != c("winner"))
    if conflicted.is_empty() and overruled.is_empty():
        return parsed.with_columns(winner=pl.lit(None, dtype=pl.String))
    first_seen = (
        ok.filter(c("feature_id").is_in(conflicted.get_column("feature_id").implode()))
        .group_by("feature_id", maintain_order=True)
        .agg(winner=c("field").first().cast(pl.String))
    )
    winners = pl.concat(
        [decided, first_seen.join(decided, on="feature_id", how="anti")], how="vertical"
    )
    parsed = parsed.join(winners, on="feature_id", how="left", maintain_order="left")
    conflict = (
        c("reason").is_null()
        & c("winner").is_not_null()
        & (c("field").cast(pl.String) != c("winner"))
    )
    return parsed.with_columns(
        reason=pl.when(conflict).then(pl.lit(FEATURE_FIELD_CONFLICT)).otherwise(c("reason"))
    )


def _line_rejects(bad: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    return bad.select(
        pl.lit(ctx.split).alias("split"),
        pl.lit(ctx.file_name).alias("file"),
        "line",
        "byte_offset",
        pl.lit(None, dtype=pl.Int16).alias("position"),
        "reason",
        pl.lit(REJECTED).alias("action"),
        "structures",
        pl.lit(None, dtype=pl.String).alias("detail"),
        pl.col("text").str.slice(0, RAW_TEXT_LIMIT).alias("raw"),
    ).cast(SCHEMAS["rejects"])  # type: ignore[arg-type]


def _mismatch_flags(good: pl.DataFrame, ctx: ChunkContext) -> pl.DataFrame:
    """Declared feature_num differs from the structures present: keep the row, flag it."""
    flagged = good.filter(pl.col("num") != pl.col("items"))
    return flagged.select(
        pl.lit(ctx.split).alias("split"),
        pl.lit(ctx.file_name).alias("file"),
        "line",
        "byte_offset",
        pl.lit(None, dtype=pl.Int16).alias("position"),
        pl.lit(FEATURE_NUM_MISMATCH).alias("reason"),
        pl.lit(FLAGGED).alias("action"),
        pl.lit(0, dtype=pl.Int32).alias("structures"),
        pl.format("declared {} structures, found {}", pl.col("num"), pl.col("items")).alias(
            "detail"
        ),
        pl.col("text").str.slice(0, RAW_TEXT_LIMIT).alias("raw"),
    ).cast(SCHEMAS["rejects"])  # type: ignore[arg-type]
