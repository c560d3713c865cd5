"""Feature lists -> structures (position, feature id, value), with per-structure rejects.

Two paths give the same rows. The fast one turns a chunk's clean feature lists into CSV (one
structure per line) for Polars' typed CSV reader, which parses ids and values straight from the
bytes; it is taken only when the separators prove every structure well formed and the reader
finds nothing to reject. Anything else (rare in real data) takes the exact path: one Polars
pass that explodes the lists and says what is wrong with each structure.
Feature ids seen under two fields are resolved here for the chunk: the first occurrence wins,
unless a cross-chunk verdict says otherwise.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from deepcvr.aliccp import FIELD_SEP, FIELDS, ITEM_SEP, VALUE_SEP
from deepcvr.transform.reasons import (
    BAD_FEATURE_ID,
    BAD_VALUE,
    FEATURE_FIELD_CONFLICT,
    MALFORMED_STRUCTURE,
    RAW_TEXT_LIMIT,
    REJECTED,
    SCHEMAS,
    UNKNOWN_FIELD,
    WELL_FORMED_LIST,
    WELL_FORMED_STRUCT,
    ChunkContext,
)

FIELD_IDS = [f.field_id for f in FIELDS]
FIELD_ENUM = pl.Enum(FIELD_IDS)
CODE_OF = {f: i for i, f in enumerate(FIELD_IDS)}


def parse_structures(
    good: pl.DataFrame, ctx: ChunkContext
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Structures of accepted lines: (valid structures, structure rejects, feature pairs)."""
    key = "sid" if ctx.kind == "skeleton" else "common_feature_index"
    lines = good.with_columns(pl.col(key).alias("key"))
    fast = _explode_fast(lines)
    if fast is not None:
        pairs = feature_pairs(fast)
        conflicted, overruled = _conflicts(pairs, _decided(ctx))
        if conflicted.is_empty() and overruled.is_empty():
            return fast, pl.DataFrame(schema=SCHEMAS["rejects"]), pairs
    parsed = _explode(lines)
    parsed, pairs = _mark_field_conflicts(parsed, ctx)
    c = pl.col
    valid = parsed.filter(c("reason").is_null()).select(
        "key", "position", "field_code", "feature_id", "value"
    )
    rejects = (
        parsed.filter(c("reason").is_not_null())
        .select(
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
            c("s").str.slice(0, RAW_TEXT_LIMIT).alias("raw"),
        )
        .cast(SCHEMAS["rejects"])  # type: ignore[arg-type]
    )
    return valid, rejects, pairs


# Structures as CSV rows: 0x01 ends a row, 0x02 and 0x03 separate its three fields.
_AS_CSV = bytes.maketrans(f"{ITEM_SEP}{FIELD_SEP}{VALUE_SEP}".encode(), b"\n,,")
# The reader builds the field codes itself: a field it does not know is an error, so the exact
# path says which. (Read as text and cast after, the field took 2 % of a worker's time.)
_CSV_SCHEMA = {"field": FIELD_ENUM, "feature_id": pl.Int32(), "value": pl.Float64()}
# Bytes the typed CSV reader reads differently from the casts of _explode: it skips leading
# blanks (" 7" is a bad id for the cast), and a CR may end a row.
_READER_QUIRKS = (b" ", b"\t", b"\r")
_NOT_SEPARATORS = bytes(range(11, 256))
_NEWLINE_AS_ITEM_SEP = bytes.maketrans(b"\n", ITEM_SEP.encode())
_SEPARATOR_ORDER = f"{FIELD_SEP}{VALUE_SEP}{ITEM_SEP}".encode()


def _explode_fast(lines: pl.DataFrame) -> pl.DataFrame | None:
    """The valid structures of `lines` when every one is valid, else None (nothing is kept).

    A well-formed list is `token 0x02 token 0x03 token` joined by 0x01, tokens non-empty: the
    separators must come in exactly that order, and empty tokens come back null."""
    if lines.is_empty():
        return None
    raw = lines.select(pl.col("feature_list").str.join("\n").cast(pl.Binary)).item()
    if not raw.isascii() or any(q in raw for q in _READER_QUIRKS):
        return None
    # Only separators, newlines and other control bytes remain, newlines read as 0x01: a
    # well-formed chunk leaves exactly 02 03 01 02 03 01 ... 02 03.
    seps = raw.translate(_NEWLINE_AS_ITEM_SEP, _NOT_SEPARATORS)
    count = (len(seps) + 1) // 3
    if not count or seps != (_SEPARATOR_ORDER * count)[:-1]:
        return None
    try:
        parsed = pl.read_csv(
            raw.translate(_AS_CSV),
            has_header=False,
            new_columns=list(_CSV_SCHEMA),
            schema=_CSV_SCHEMA,
            quote_char=None,
        )
    except pl.exceptions.PolarsError:
        return None  # a token the typed reader refuses: the exact path says which and why
    if parsed.height != count:
        return None
    # Each structure's line and place in it, by repeating per-line values: NumPy's fancy
    # indexing and an int64 index for the gather (converted and bounds-checked) took 3x longer.
    items = lines.get_column("items").to_numpy()
    line_of = np.repeat(np.arange(len(items), dtype=np.uint32), items)
    position = np.arange(count, dtype=np.int32)
    position -= np.repeat((np.cumsum(items) - items).astype(np.int32), items)
    out = parsed.select(
        lines.get_column("key").gather(pl.Series(line_of)).alias("key"),
        pl.Series("position", position, dtype=pl.Int16),
        pl.col("field").to_physical().alias("field_code"),
        "feature_id",
        "value",
    )
    # An empty token reads as null, and all() skips nulls: they must count as failures.
    clean = out.select(
        pl.col("field_code").is_not_null().all()
        & (pl.col("feature_id").fill_null(0) > 0).all()
        & pl.col("value").is_finite().fill_null(False).all()
    ).item()
    return out if clean else None


def _explode(lines: pl.DataFrame) -> pl.DataFrame:
    """One row per structure with its parsed parts and the first thing wrong with it, if any."""
    base = lines.select(
        "key", "line", "byte_offset", pl.col("feature_list").str.split(ITEM_SEP).alias("s")
    )
    exploded = base.with_columns(
        position=pl.int_ranges(pl.col("s").list.len(), dtype=pl.Int16)
    ).explode("s", "position")
    s = pl.col("s")
    c = pl.col
    parsed = exploded.with_columns(
        p2=s.str.find(FIELD_SEP, literal=True), p3=s.str.find(VALUE_SEP, literal=True)
    ).with_columns(
        field_code=s.str.slice(0, c("p2")).cast(FIELD_ENUM, strict=False).to_physical(),
        feature_id=s.str.slice(c("p2") + 1, c("p3") - c("p2") - 1).cast(pl.Int32, strict=False),
        value=s.str.slice(c("p3") + 1).cast(pl.Float64, strict=False),
    )
    # The shape regex runs only on lines whose whole list failed the cheap line-level check.
    well_formed = lines.get_column("feature_list").str.contains(WELL_FORMED_LIST).all()
    shape_ok = pl.lit(True) if well_formed else s.str.contains(WELL_FORMED_STRUCT)
    reason = (
        pl.when(~shape_ok)
        .then(pl.lit(MALFORMED_STRUCTURE))
        .when(c("field_code").is_null())
        .then(pl.lit(UNKNOWN_FIELD))
        .when(c("feature_id").is_null() | (c("feature_id") <= 0))
        .then(pl.lit(BAD_FEATURE_ID))
        .when(c("value").is_null() | ~c("value").is_finite())
        .then(pl.lit(BAD_VALUE))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return parsed.with_columns(reason=reason).drop("p2", "p3")


def feature_pairs(structures: pl.DataFrame) -> pl.DataFrame:
    """Distinct (feature_id, field_code) of valid structures (no nulls), sorted, via one packed
    integer per structure; the code is the field's index in FIELDS (the registry works on codes,
    not names). A sort and a neighbour comparison, faster than a hash unique and a sort of what
    it leaves. Polars sorts: NumPy's AVX-512 sort is slow on AMD Zen 4, whose compress-store
    instruction it relies on is microcoded (20 ms against 5 ms for an 8 MB chunk's 0.43 M)."""
    ids = structures.get_column("feature_id").cast(pl.Int64)
    packed = (ids * 32 + structures.get_column("field_code")).sort()
    packed = packed.filter(packed.diff().fill_null(1) != 0)
    return pl.DataFrame(
        {
            "feature_id": (packed // 32).cast(pl.Int32),
            "field_code": (packed % 32).cast(pl.UInt8),
        }
    )


def _field_name(code: pl.Expr) -> pl.Expr:
    return code.replace_strict(list(range(len(FIELD_IDS))), FIELD_IDS, return_dtype=pl.String)


def _conflicts(pairs: pl.DataFrame, decided: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(feature ids under two fields in this chunk, pairs a cross-chunk verdict overrules)."""
    c = pl.col
    # Pairs are sorted by feature id, so a repeated id sits next to itself: no hashing needed.
    repeated = c("feature_id").diff().fill_null(1) == 0
    conflicted = pairs.filter(repeated | repeated.shift(-1).fill_null(False))
    overruled = pairs.join(decided, on="feature_id").filter(c("field_code") != c("winner_code"))
    return conflicted, overruled


def _decided(ctx: ChunkContext) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "feature_id": list(ctx.field_of),
            "winner_code": [CODE_OF[f] for f in ctx.field_of.values()],
        },
        schema={"feature_id": pl.Int32, "winner_code": pl.UInt8},
    )


def _mark_field_conflicts(
    parsed: pl.DataFrame, ctx: ChunkContext
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A feature id belongs to one field: the post-pass verdict, else the first seen, wins.

    The join runs only when this chunk really has a conflict (rare in real data)."""
    c = pl.col
    ok = parsed.filter(c("reason").is_null())
    pairs = feature_pairs(ok)
    decided = _decided(ctx)
    conflicted, overruled = _conflicts(pairs, decided)
    if conflicted.is_empty() and overruled.is_empty():
        return parsed.with_columns(winner=pl.lit(None, dtype=pl.String)), pairs
    first_seen = (
        ok.filter(c("feature_id").is_in(conflicted.get_column("feature_id").implode()))
        .group_by("feature_id", maintain_order=True)
        .agg(winner_code=c("field_code").first())
    )
    winners = pl.concat(
        [decided, first_seen.join(decided, on="feature_id", how="anti")], how="vertical"
    )
    parsed = parsed.join(winners, on="feature_id", how="left", maintain_order="left")
    conflict = (
        c("reason").is_null()
        & c("winner_code").is_not_null()
        & (c("field_code") != c("winner_code"))
    )
    parsed = parsed.with_columns(
        reason=pl.when(conflict).then(pl.lit(FEATURE_FIELD_CONFLICT)).otherwise(c("reason")),
        winner=_field_name(c("winner_code")),
    ).drop("winner_code")
    return parsed, feature_pairs(parsed.filter(c("reason").is_null()))
