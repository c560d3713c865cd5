"""Feature lists as Spark SQL: structures and their rejects (spark_fields.py decides fields).

The semantics of structures.py: a structure is checked for shape, field, id and value in that
order; a valid structure whose feature id another field owns is rejected as a conflict.
Fields travel as a tinyint code (the order of aliccp.FIELDS) so the aggregations stay on
primitive keys.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from deepcvr.aliccp import FIELD_SEP, FIELDS, ITEM_SEP, VALUE_SEP
from deepcvr.transform import reasons as P
from deepcvr.transform.spark_sql import KEY, ends_with_any, feature_list, int_ok

FIELD_ORDER = [f.field_id for f in FIELDS]  # code = index, as the local FeatureRegistry
STRUCTURE_REASONS = [P.MALFORMED_STRUCTURE, P.UNKNOWN_FIELD, P.BAD_FEATURE_ID, P.BAD_VALUE]


def _names() -> Column:
    return F.array(*(F.lit(f) for f in FIELD_ORDER))


# Most frequent first in each file (ALICCP.md: ~250 110_14, ~154 127_14, ~136 150_14, ~69
# 109_14 per common row; ~6 210 and ~1.4 853 per impression, the other item, combination and
# context fields once): a field id is found after a comparison or two, not a scan of all 23
# names. The skeleton's own order saves ~6 comparisons per impression structure.
_COMMON_FIRST = ["110_14", "127_14", "150_14", "109_14"]
_SKELETON_FIRST = ["210", "853", "205", "206", "207", "216", "508", "509", "702", "301"]
BY_FREQUENCY = {
    "common": _COMMON_FIRST + [f for f in FIELD_ORDER if f not in _COMMON_FIRST],
    "skeleton": _SKELETON_FIRST + [f for f in FIELD_ORDER if f not in _SKELETON_FIRST],
}


def _code_by_frequency(matches: Callable[[str], Column], order: list[str]) -> Column:
    """0-based code of the first field name (in `order`) that `matches`, else -1."""
    expr = None
    for name in order:
        test, code = matches(name), FIELD_ORDER.index(name)
        expr = F.when(test, code) if expr is None else expr.when(test, code)
    assert expr is not None
    return expr.otherwise(-1).cast("tinyint")


def field_code(field: Column) -> Column:
    """0-based code of a field id, -1 when it is not one of the 23 fields (a feature table's
    `field_id`; structures use `_leading_field_code`, which needs no copy of their field)."""
    return _code_by_frequency(lambda name: field == F.lit(name), BY_FREQUENCY["common"])


def _leading_field_code(structure: Column, kind: str) -> Column:
    """The field code of a structure that starts with a field name and 0x02, else -1: a
    `startswith` per name, with no copy of the field part (as `field_code` of that part
    wherever the structure has a 0x02, i.e. wherever its shape can be valid)."""
    return _code_by_frequency(
        lambda name: structure.startswith(name + FIELD_SEP), BY_FREQUENCY[kind]
    )


def _name_sizes() -> Column:
    return F.array(*(F.lit(len(f.encode())) for f in FIELD_ORDER))


def field_name(code: Column) -> Column:
    return F.element_at(_names(), code.cast("int") + 1)


def _float_ok(token: Column) -> Column:
    """Whether Java's double parse (behind Spark's cast; it trims, takes `1.0d`, `0x1p3`,
    `NaN`, `Infinity`) reads `token` as Polars does, given the parse succeeds: the first byte
    is in `+,-./0-9` and the last in `./0-9` (`,` and `/` never parse), and no `x` (hex)."""
    return (
        (token >= F.lit("+"))
        & (token < F.lit(":"))
        & ends_with_any(token, "0123456789./")
        & ~token.contains("x")
        & ~token.contains("X")
    )


def structures(lines: DataFrame, kind: str) -> DataFrame:
    """Structures of accepted lines with the first structure-level reason (before conflicts).

    Byte-level `substring_index` splits, no regex: a structure is well formed (one 0x02, then
    one 0x03, three non-empty parts) exactly when the parts around the first 0x02 and the last
    0x03 hold no other separator and the lengths add up."""
    accepted = lines.filter(F.col("reason").isNull())
    # Split the whole line and cut the leading columns off the first item only: the accepted
    # lines' other columns hold no 0x01, and a substring of the list would walk every line.
    exploded = accepted.select(
        F.col(KEY[kind]).alias("key"),
        "line",
        "fl_start",
        F.posexplode(F.split("text", ITEM_SEP, -1)).alias("position", "s"),
    )
    first = F.expr("substring(s, fl_start)")
    exploded = exploded.select(
        "key",
        "line",
        "position",
        F.when(F.col("position") == 0, first).otherwise(F.col("s")).alias("s"),
    )
    # A column of its own: the checks below read it three times, and Spark does not repeat a
    # column that is not cheap when it merges two selects. Written inline instead, the pass
    # over 10 M structures took 40 s instead of 4 s.
    exploded = exploded.withColumn("code", _leading_field_code(F.col("s"), kind))
    s, code = F.col("s"), F.col("code")
    fid_s = F.substring_index(F.substring_index(s, VALUE_SEP, 1), FIELD_SEP, -1)
    value_s = F.substring_index(s, VALUE_SEP, -1)
    rest_size = F.octet_length(fid_s) + F.octet_length(value_s) + 2  # and both separators
    rest_ok = (
        ~value_s.contains(FIELD_SEP) & (F.octet_length(fid_s) > 0) & (F.octet_length(value_s) > 0)
    )
    # A known field's part is its name: its size is known and it holds no 0x03, so only an
    # unknown or malformed structure (rare) cuts its field part out, a copy per structure.
    field_s = F.substring_index(s, FIELD_SEP, 1)
    field_size = F.octet_length(field_s)
    shape_ok = F.when(
        code >= 0,
        rest_ok
        & (F.element_at(_name_sizes(), code.cast("int") + 1) + rest_size == F.octet_length(s)),
    ).otherwise(
        rest_ok
        & ~field_s.contains(VALUE_SEP)
        & (field_size > 0)
        & (field_size + rest_size == F.octet_length(s))
    )
    parsed = exploded.select(
        "key",
        "line",
        F.col("position").cast("short").alias("position"),
        shape_ok.alias("shape_ok"),
        "code",
        F.when(int_ok(fid_s), fid_s.try_cast("int")).alias("feature_id"),
        # "1.0" (every one-hot field) skips the string-to-double parse.
        F.when(value_s == F.lit("1.0"), F.lit(1.0))
        .when(_float_ok(value_s), value_s.try_cast("double"))
        .alias("value"),
        s,
    )
    c = F.col
    finite = ~F.isnan(c("value")) & (F.abs(c("value")) != float("inf"))
    # 0 = valid, else 1 + the index in STRUCTURE_REASONS (the order of structures.py).
    rcode = (
        F.when(~c("shape_ok"), 1)
        .when(c("code") < 0, 2)
        .when(c("feature_id").isNull() | (c("feature_id") <= 0), 3)
        .when(c("value").isNull() | ~finite, 4)
        .otherwise(0)
        .cast("tinyint")
    )
    return parsed.select(
        "key",
        "line",
        "position",
        "code",
        "feature_id",
        "value",
        rcode.alias("rcode"),
        # Raw text only where a reject needs it; a conflict fetches its own from the line.
        F.when(rcode > 0, F.substring(s, 1, P.RAW_TEXT_LIMIT)).alias("raw"),
    )


# The cache of a file's structures holds line, position, field code and reason code packed in
# one long, and no common index: Spark builds its columnar cache value by value, column by
# column, so each cached column costs every structure a call. 10.4 M common structures cached
# as (line, position, code, rcode, key, ...) took 3.2 s against 0.9 s as (packed, ...); the
# common file's 16-byte index comes back from its lines when the feature table is written.
PACKED_LINE, PACKED_POSITION, PACKED_CODE = 24, 8, 3  # shifts; position < 2^15, code + 1 < 2^5
assert P.MAX_POSITION < 1 << 16 and len(FIELD_ORDER) < 31 and len(STRUCTURE_REASONS) < 8
KEY_CACHED = {"common": False, "skeleton": True}  # the sample id is a long: cheap to cache


def packed(structs: DataFrame, kind: str) -> DataFrame:
    """`structures` as cached: (line, position, code, rcode) in one long `packed`."""
    c = F.col
    p = (
        c("line") * F.lit(1 << PACKED_LINE)
        + c("position").cast("long") * (1 << PACKED_POSITION)
        + (c("code").cast("long") + 1) * (1 << PACKED_CODE)
        + c("rcode").cast("long")
    )
    keep = ["key"] if KEY_CACHED[kind] else []
    return structs.select(*keep, p.alias("packed"), "feature_id", "value", "raw")


def unpacked(cached: DataFrame, kind: str) -> DataFrame:
    """The columns of `structures` from its cache (`packed`); the common file has no `key`."""
    p = F.col("packed")
    keep = ["key"] if KEY_CACHED[kind] else []
    return cached.select(
        *keep,
        F.shiftright(p, PACKED_LINE).alias("line"),
        F.shiftright(p, PACKED_POSITION).bitwiseAND(0xFFFF).cast("short").alias("position"),
        (F.shiftright(p, PACKED_CODE).bitwiseAND(31) - 1).cast("tinyint").alias("code"),
        "feature_id",
        "value",
        p.bitwiseAND(7).cast("tinyint").alias("rcode"),
        "raw",
    )


def reason_name(rcode: Column) -> Column:
    """The reason code of a structure, null when it is valid (code 0)."""
    names = F.array(*(F.lit(r) for r in STRUCTURE_REASONS))
    return F.when(rcode > 0, F.element_at(names, rcode.cast("int")))


def lost_structures(structs: DataFrame, lost: DataFrame) -> DataFrame:
    """How many valid structures of a file lose their feature id to another field."""
    return (
        structs.filter(F.col("rcode") == 0)
        .join(lost, "feature_id")
        .filter(F.col("code") != F.col("winner"))
        .agg(F.count(F.lit(1)).alias("n"))
    )


def _with_winner(structs: DataFrame, lost: DataFrame | None) -> DataFrame:
    """The winner of each structure's feature id where another field claims it too (null
    when nothing was lost: then no join at all)."""
    if lost is None:
        return structs.withColumn("winner", F.lit(None).cast("tinyint"))
    return structs.join(lost, "feature_id", "left")


def loaded_structures(structs: DataFrame, lost: DataFrame | None) -> DataFrame:
    """Valid structures whose feature id no other field won: the rows of the feature table."""
    c = F.col
    df = _with_winner(structs, lost)
    return df.filter((c("rcode") == 0) & (c("winner").isNull() | (c("code") == c("winner"))))


def mark_conflicts(structs: DataFrame, lost: DataFrame | None) -> DataFrame:
    """Final reason of each structure: valid ones whose feature id another field won lose."""
    df = _with_winner(structs, lost)
    c = F.col
    conflict = (c("rcode") == 0) & c("winner").isNotNull() & (c("code") != c("winner"))
    winner = field_name(c("winner"))
    detail = F.format_string("feature %d belongs to field %s", "feature_id", winner)
    return df.select(
        "line",
        "position",
        "feature_id",
        "value",
        F.when(conflict, P.FEATURE_FIELD_CONFLICT)
        .otherwise(reason_name(c("rcode")))
        .alias("reason"),
        F.when(conflict, detail).alias("detail"),
        "raw",
    )


def structure_rejects(final: DataFrame, base: DataFrame, broadcast: bool) -> DataFrame:
    """Rejected structures; a conflict's raw text is cut from its line (it was valid)."""
    rejected = final.filter(F.col("reason").isNotNull())
    missing = rejected.filter(F.col("raw").isNull())
    if broadcast:  # few rejects: do not shuffle every line's text to find theirs
        missing = F.broadcast(missing)
    text = base.select("line", "text", "fl_start")
    item = F.get(F.split(feature_list(), ITEM_SEP, -1), F.col("position").cast("int"))
    fetched = missing.join(text, "line").select(
        "line", "position", "reason", "detail", F.substring(item, 1, P.RAW_TEXT_LIMIT).alias("raw")
    )
    known = rejected.filter(F.col("raw").isNotNull()).select(
        "line", "position", "reason", "detail", "raw"
    )
    return known.unionByName(fetched).select(
        "line",
        "position",
        "reason",
        F.lit(P.REJECTED).alias("action"),
        F.lit(1).alias("structures"),
        "detail",
        "raw",
    )
