"""Raw lines as Spark SQL: numbering, line-level checks, duplicates, orphans, line rejects.

The semantics of parse.py in Spark SQL functions only: no Python UDFs, so executors never start
a Python worker, and no data row reaches the driver. Line numbers come from the scan itself:
each row knows its file block (`_metadata.file_block_start`) and its place in the Spark
partition (`monotonically_increasing_id`); one tiny aggregate per file (rows and bytes per
partition) gives every partition its first line and first byte.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from deepcvr.aliccp import FIELD_SEP, ITEM_SEP, VALUE_SEP
from deepcvr.errors import DataError
from deepcvr.transform import reasons as P

# A Java regex: `\z` because Java's `$` also matches before a final line terminator.
INDEX16 = r"^[0-9a-f]{16}\z"

PID_SHIFT = 33  # monotonically_increasing_id() = partition id << 33 | row index in partition
BOM = "\ufeff"  # Hadoop's line reader drops a UTF-8 byte order mark at offset 0; put it back
KEY = {"common": "idx", "skeleton": "sid"}
NAMES = {
    "common": ["idx", "num_s", "fl"],
    "skeleton": ["sid_s", "clk_s", "cvr_s", "idx", "num_s", "fl"],
}


@dataclass(frozen=True)
class FileLines:
    """Facts of one raw file from the tiny per-partition aggregate."""

    lines: int
    size: int
    bom: int  # bytes of a leading byte order mark the reader dropped (0 or 3)
    ends_with_newline: bool
    partitions: int


def scan(spark: SparkSession, uri: str) -> DataFrame:
    """Raw lines with their block and row id; `lineSep` keeps a CR visible at the line end."""
    return spark.read.text(uri, lineSep="\n").select(
        "value",
        F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("mono"),
    )


def number_lines(spark: SparkSession, uri: str, size: int) -> tuple[DataFrame, FileLines]:
    """Every line with its 1-based number and byte length, from one scan plus a tiny aggregate.

    Rows of one (partition, block) are contiguous and in file order, and blocks are ordered by
    their start offset, so sorting the aggregate's groups gives file order without a shuffle.
    """
    raw = scan(spark, uri)
    groups = sorted(
        (
            (r["block"], r["first_mono"], r["pid"], r["n"], r["nbytes"])
            for r in raw.groupBy(F.shiftright("mono", PID_SHIFT).alias("pid"), "block")
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(F.octet_length("value")).alias("nbytes"),
                F.min("mono").alias("first_mono"),
            )
            .collect()
        ),
    )
    total = sum(n + nbytes for _, _, _, n, nbytes in groups)  # each line plus its newline
    lines = sum(g[3] for g in groups)
    diff = size - total  # 0: ends with a newline; -1: last line has none; +3: BOM dropped
    bom = 3 if diff in (2, 3) else 0
    if diff - bom not in (0, -1) or (lines == 0 and size != 0):
        raise DataError(
            f"{uri}: Spark read {total:,} bytes of lines from a {size:,}-byte file; "
            "the file changed while being read or is not newline-delimited text"
        )
    rows = []
    line, offset = 1, 0
    for i, (block, first_mono, pid, n, nbytes) in enumerate(groups):
        rows.append((pid, block, line - first_mono, offset))
        line += n
        offset += n + nbytes + (bom if i == 0 else 0)
    bases = local_frame(spark, rows, ("pid", "block", "line_delta", "first_byte"), "long").hint(
        "broadcast"
    )
    numbered = (
        raw.withColumn("pid", F.shiftright("mono", PID_SHIFT))
        .join(bases, ["pid", "block"])
        .withColumn("line", F.col("mono") + F.col("line_delta"))
    )
    facts = FileLines(
        lines=lines,
        size=size,
        bom=bom,
        ends_with_newline=diff - bom == 0,
        partitions=len(groups),
    )
    return numbered, facts


def union_all(parts: Iterable[DataFrame]) -> DataFrame:
    """The rows of several frames with the same columns, matched by name."""
    return functools.reduce(DataFrame.unionByName, parts)


def local_frame(
    spark: SparkSession, rows: list[tuple[Any, ...]], names: tuple[str, ...], dtype: str | None
) -> DataFrame:
    """A tiny driver-made table built in the JVM (createDataFrame on a list would make a Python
    RDD, and executors would start Python workers to read it)."""
    if rows and dtype is not None and all(type(v) is int for row in rows for v in row):
        # Whole numbers as one SQL expression: one call into the JVM, not one per value.
        text = ", ".join(
            "named_struct("
            + ", ".join(f"'{n}', CAST({v} AS {dtype})" for v, n in zip(row, names, strict=True))
            + ")"
            for row in rows
        )
        return spark.range(1).selectExpr(f"inline(array({text}))")
    structs = [
        F.struct(*(_lit(v, dtype).alias(n) for v, n in zip(row, names, strict=True)))
        for row in rows
    ]
    if not structs:
        return spark.range(0).select(*(_lit(None, dtype or "string").alias(n) for n in names))
    return spark.range(1).select(F.inline(F.array(*structs)))


def _lit(value: Any, dtype: str | None) -> Column:
    return F.lit(value) if dtype is None else F.lit(value).cast(dtype)


def when_chain(checks: list[tuple[Column, str]]) -> Column:
    expr = None
    for cond, reason in checks:
        expr = F.when(cond, reason) if expr is None else expr.when(cond, reason)
    assert expr is not None
    return expr.otherwise(F.lit(None).cast("string"))


def ends_with_any(token: Column, chars: str) -> Column:
    """Whether the last byte of `token` is one of `chars`: byte tests, no reversed copy of the
    token (`reverse` allocated one per structure: ~65 ns each, measured on 10 M values)."""
    test = None
    for ch in chars:
        ends = token.endswith(ch)
        test = ends if test is None else test | ends
    assert test is not None
    return test


def int_ok(token: Column) -> Column:
    """Whether Spark's int cast reads `token` as Polars' strict=False cast does (`[+-]?[0-9]+`),
    given the cast succeeds.

    Spark trims bytes <= 0x20 and 0x7F from both ends and then reads `[+-]?[0-9]+` (try_cast
    takes no fraction); Polars trims nothing. So a successful cast agrees exactly when the
    first byte is not trimmed (byte comparisons, no substring copies) and the last byte is a
    digit. A regex per value cost a matcher per call (6% of the line pass in a profile)."""
    return (token >= F.lit("!")) & (token < F.lit("\x7f")) & ends_with_any(token, "0123456789")


def as_int(text: Column, kind: str) -> Column:
    return F.when(int_ok(text), text.try_cast(kind))


def parse_lines(numbered: DataFrame, kind: str, facts: FileLines) -> DataFrame:
    """Line-level columns and the first line-level reject reason (precedence of parse.py)."""
    value, line = F.col("value"), F.col("line")
    has_newline = F.lit(True) if facts.ends_with_newline else line != facts.lines
    text = F.when(F.is_valid_utf8(value), value).otherwise(F.make_valid_utf8(value))
    if facts.bom:
        text = F.when(line == 1, F.concat(F.lit(BOM), text)).otherwise(text)
    nbytes = F.octet_length("value") + (F.when(line == 1, facts.bom).otherwise(0))
    df = numbered.select(
        "line",
        "pid",
        "block",
        "mono",
        "first_byte",
        nbytes.alias("nbytes"),
        (~F.is_valid_utf8(value)).alias("invalid_utf8"),
        has_newline.alias("has_newline"),
        (has_newline & value.endswith("\r")).alias("crlf"),
        text.alias("t0"),
    )
    t0 = F.col("t0")
    df = df.withColumn(
        "text", F.when(F.col("crlf"), t0.substr(F.lit(1), F.length(t0) - 1)).otherwise(t0)
    ).drop("t0")
    text = F.col("text")
    names = NAMES[kind]
    # One column more than the file has: a line with an extra comma has a part of it, found by
    # the split's own scan (Java's indexOf) rather than a byte-by-byte `contains` of the list.
    # Its `fl` then stops at that comma, which only a rejected line sees.
    parts = F.split(text, ",", len(names) + 1)
    df = df.select(
        "*",
        # Separators counted by a split, not by `replace`: its byte-at-a-time search and copy
        # of the line took half again as long (0.65 s against 0.44 s for 1 M skeleton lines).
        (F.size(F.split(text, ITEM_SEP, -1)) - 1).alias("items"),
        (F.size(parts) > len(names)).alias("extra_column"),
        *(F.get(parts, i).alias(name) for i, name in enumerate(names)),
    )
    c = F.col
    fl, extra = c("fl"), c("extra_column")
    # A line with a separator holds items + 1 structures; a separator-free feature list that
    # is one token ("205") still holds one (malformed) structure, as parse.py counts it; a
    # null list (too few columns) holds none. 0x01 is tested first: nearly every line has one.
    has_sep = (c("items") > 0) | text.contains(FIELD_SEP) | text.contains(VALUE_SEP)
    lone = (fl != "") & ~extra
    structures = F.when(has_sep, c("items") + 1).when(lone, 1).otherwise(0).cast("int")
    # Where the feature list starts (1-based characters), so it need not be stored twice.
    fl_start = sum((F.length(n) + 1 for n in names[:-1]), F.lit(1))
    df = df.select(
        "*",
        structures.alias("structures"),
        fl_start.cast("int").alias("fl_start"),
        as_int(c("num_s"), "int").alias("num"),
    )
    checks: list[tuple[Column, str]] = [
        (c("invalid_utf8"), P.INVALID_UTF8),
        (~c("has_newline"), P.TRUNCATED_LAST_LINE),
        (fl.isNull() | extra, P.WRONG_COLUMN_COUNT),
    ]
    if kind == "skeleton":
        df = df.select(
            "*",
            as_int(c("sid_s"), "bigint").alias("sid"),
            as_int(c("clk_s"), "tinyint").alias("clk"),
            as_int(c("cvr_s"), "tinyint").alias("cvr"),
        )
        checks += [
            (c("sid").isNull() | (c("sid") <= 0), P.BAD_SAMPLE_ID),
            (c("clk").isNull() | c("cvr").isNull(), P.BAD_LABEL),
            (~c("clk").isin(0, 1) | ~c("cvr").isin(0, 1), P.LABEL_OUT_OF_RANGE),
        ]
    checks += [
        (~c("idx").rlike(INDEX16), P.BAD_COMMON_INDEX),
        (c("num").isNull() | (c("num") < 0), P.BAD_FEATURE_NUM),
        (fl == "", P.EMPTY_FEATURE_LIST),
        (c("structures") > P.MAX_POSITION + 1, P.TOO_MANY_STRUCTURES),
    ]
    keep = ["sid", "clk", "cvr"] if kind == "skeleton" else []
    return df.select(
        "line",
        "pid",
        "block",
        "mono",
        "first_byte",
        "nbytes",
        "crlf",
        "text",
        "structures",
        "fl_start",
        "idx",
        "num",
        *keep,
        when_chain(checks).alias("reason0"),
    )


def duplicate_lines(base: DataFrame, kind: str) -> DataFrame:
    """Lines whose key an earlier line (passing the line checks) already has: first one wins."""
    key = KEY[kind]
    first = Window.partitionBy(key).orderBy("line")
    return (
        base.filter(F.col("reason0").isNull())
        .select(key, "line")
        .withColumn("rn", F.row_number().over(first))
        .filter(F.col("rn") > 1)
        .select("line", F.lit(True).alias("dup"))
    )


def with_orphans(base: DataFrame, common_keys: DataFrame | None) -> DataFrame:
    """Impressions whose common index is absent, checked before duplicates (as the local
    engine does): an orphan line holds no key."""
    if common_keys is None:
        return base
    df = base.join(common_keys.select("idx", F.lit(True).alias("has_group")), "idx", "left")
    orphan = F.when(F.col("has_group").isNull(), P.ORPHAN_COMMON_INDEX)
    return df.withColumn("reason0", F.coalesce(F.col("reason0"), orphan)).drop("has_group")


def final_lines(base: DataFrame, kind: str, dups: DataFrame) -> DataFrame:
    """Line reason after the duplicate check."""
    dup_reason = P.DUPLICATE_SAMPLE_ID if kind == "skeleton" else P.DUPLICATE_COMMON_INDEX
    df = base.join(dups, "line", "left")
    reason = F.coalesce(F.col("reason0"), F.when(F.col("dup"), dup_reason))
    return df.withColumn("reason", reason).drop("reason0", "dup")


def feature_list() -> Column:
    """The feature list of a line: its text from `fl_start` (stored instead of a copy)."""
    return F.expr("substring(text, fl_start)")


def byte_offsets(lines: DataFrame) -> DataFrame:
    """Offset of each line's first byte: a running sum inside each partition's block.

    Only the narrow columns are shuffled for the window; callers join it to the (few) rejects.
    """
    before = (
        Window.partitionBy("pid", "block")
        .orderBy("mono")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    return lines.select(
        "line",
        (F.col("first_byte") + F.coalesce(F.sum(F.col("nbytes") + 1).over(before), F.lit(0))).alias(
            "byte_offset"
        ),
    )


REJECT_COLUMNS: list[tuple[str, T.DataType]] = [
    ("split", T.StringType()),
    ("file", T.StringType()),
    ("line", T.LongType()),
    ("byte_offset", T.LongType()),
    ("position", T.ShortType()),
    ("reason", T.StringType()),
    ("action", T.StringType()),
    ("structures", T.IntegerType()),
    ("detail", T.StringType()),
    ("raw", T.StringType()),
]


def line_rejects(lines: DataFrame) -> DataFrame:
    """Rejected lines, and flagged ones (declared feature_num differs from what is there)."""
    c = F.col
    flagged = c("reason").isNull() & (c("num") != c("structures"))
    return lines.filter(c("reason").isNotNull() | flagged).select(
        "line",
        F.lit(None).cast("short").alias("position"),
        F.coalesce(c("reason"), F.lit(P.FEATURE_NUM_MISMATCH)).alias("reason"),
        F.when(flagged, P.FLAGGED).otherwise(P.REJECTED).alias("action"),
        F.when(flagged, 0).otherwise(c("structures")).alias("structures"),
        F.when(
            flagged, F.format_string("declared %d structures, found %d", "num", "structures")
        ).alias("detail"),
        F.substring("text", 1, P.RAW_TEXT_LIMIT).alias("raw"),
    )


def with_reject_columns(
    rejects: DataFrame, offsets: DataFrame, split: str, file_name: str
) -> DataFrame:
    df = rejects.join(offsets, "line").withColumn("split", F.lit(split))
    df = df.withColumn("file", F.lit(file_name))
    return df.select(*(F.col(name).cast(dtype).alias(name) for name, dtype in REJECT_COLUMNS))
