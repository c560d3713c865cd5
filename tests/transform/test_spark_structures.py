"""The structures' checks read ids, values and fields as the local engine's Polars casts do,
and their cache packs line, position, field code and reason code into one long: every value at
the edges of its bits comes back unchanged."""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl
import pytest

from deepcvr.aliccp import FIELDS
from deepcvr.transform import reasons as P

pytestmark = pytest.mark.spark

LINES = [1, 2, 65_535, 2**31 - 1, 2**38 - 1]  # 85 M lines at full scale; room to spare
POSITIONS = [0, 1, 255, 256, P.MAX_POSITION]
CODES = [-1, 0, len(FIELDS) - 1]  # -1: not one of the fields
RCODES = [0, 1, 4]


TYPES = {
    "key": "bigint",
    "line": "bigint",
    "position": "smallint",
    "code": "tinyint",
    "feature_id": "int",
    "value": "double",
    "rcode": "tinyint",
    "raw": "string",
}


def _structures(spark: Any) -> Any:
    """Rows of `structures` built in the JVM (no Python workers): every edge combination."""
    from pyspark.sql import functions as F

    from deepcvr.transform.spark_sql import local_frame

    rows = [
        (7, line, pos, code, 2**31 - 1 if rcode == 0 else None, 0.5, rcode, "x" if rcode else None)
        for line in LINES
        for pos in POSITIONS
        for code in CODES
        for rcode in RCODES
    ]
    frame = local_frame(spark, rows, tuple(TYPES), None)
    return frame.select(*(F.col(name).cast(dtype).alias(name) for name, dtype in TYPES.items()))


@pytest.mark.parametrize("kind", ["common", "skeleton"])
def test_packed_structures_unpack_to_the_same_rows(spark: Any, kind: str) -> None:
    from deepcvr.transform import spark_structures as T

    structs = _structures(spark)
    back = T.unpacked(T.packed(structs, kind), kind)
    columns = [c for c in structs.columns if kind == "skeleton" or c != "key"]
    assert back.columns == columns
    assert dict(back.dtypes) == {c: t for c, t in structs.dtypes if c in columns}
    got = Counter(tuple(r) for r in back.collect())
    assert got == Counter(tuple(r) for r in structs.select(*columns).collect())
    assert got.total() == len(LINES) * len(POSITIONS) * len(CODES) * len(RCODES)


def test_structure_checks_read_tokens_as_polars_does(spark: Any) -> None:
    """The byte-comparison guards, the field-code chain and the '1.0' shortcut of the Spark
    parse agree with the local engine's Polars casts on awkward ids, values and fields:
    bytes Spark's casts trim (NUL, tab, space, CR, DEL) at either end, signs, exponents, Java
    suffixes and hex floats, overflow, NaN and infinities."""
    from pyspark.sql import functions as F

    from deepcvr.transform import spark_structures as T
    from deepcvr.transform.spark_sql import local_frame
    from deepcvr.transform.structures import _explode

    ids = ["7", "+7", "-7", "0", "07", " 7", "7 ", "\x007", "7\x00", "\x7f7", "7\x7f", "\t7"]
    ids += ["7\r", "2147483647", "2147483648", "7.0", "7e1", "x7", "7x", "é7", "7é", ""]
    values = ["1.0", "1", "+1.0", "-1.5", ".5", "5.", "1e3", "1E-3", "5.e3", "1.00", " 1.0"]
    values += ["1.0 ", "1.0\x00", "\x001.0", "1.0\x7f", "\x7f1.0", "1.0\r", "1.0d", "1.0f", "0x1p3"]
    values += ["NaN", "nan", "inf", "-Infinity", "1e400", ",5", "/5", "5/", ".", "é", ""]
    fields = ["101", "110_14", "853", "301", "0101", "110_1", "1é1", "", "301 ", "10"]
    tokens = [f"101\x02{i}\x03{v}" for i in ids for v in values]
    tokens += [f"{f}\x027\x031.0" for f in fields] + ["garbage", "101\x027", "101\x027\x031\x03"]
    # Shapes around a known and an unknown field name: doubled, misplaced and missing parts.
    for f in ("101", "110_14", "999"):
        tokens += [f"{f}\x02\x027\x031.0", f"{f}\x027\x03\x031.0", f"{f}\x03\x027\x031.0"]
        tokens += [f"{f}\x02\x031.0", f"{f}\x027\x03", f"{f}\x027\x031.0\x02", f"{f}\x027"]
        tokens += [f"{f}\x027\x031.0\x03", f"{f}x\x027\x031.0", f"{f}", f"\x02{f}\x027\x031.0"]
    prefix = "0123456789abcdef,1,"
    lists = ["\x01".join(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
    rows = [(n + 1, prefix + fl, len(prefix) + 1, prefix[:16]) for n, fl in enumerate(lists)]
    lines = local_frame(spark, rows, ("line", "text", "fl_start", "idx"), None).withColumn(
        "reason", F.lit(None).cast("string")
    )
    got = pl.DataFrame(
        [r.asDict() for r in T.structures(lines, "common").collect()],
        schema={
            "line": pl.Int64,
            "position": pl.Int16,
            "code": pl.Int8,
            "feature_id": pl.Int32,
            "value": pl.Float64,
            "rcode": pl.Int8,
        },
        strict=False,
    )
    expected = _explode(
        pl.DataFrame(
            {
                "key": [r[3] for r in rows],
                "line": [r[0] for r in rows],
                "byte_offset": [0] * len(rows),
                "feature_list": lists,
            }
        )
    )
    codes = {reason: i + 1 for i, reason in enumerate(T.STRUCTURE_REASONS)}
    expected = expected.select(
        pl.col("line").cast(pl.Int64),
        pl.col("position").cast(pl.Int16),
        pl.col("field_code").cast(pl.Int8).alias("code"),
        "feature_id",
        "value",
        pl.col("reason").replace_strict(codes, default=0, return_dtype=pl.Int8).alias("rcode"),
    )
    assert got.height == expected.height == len(tokens)
    joined = got.join(expected, on=["line", "position"], suffix="_local")
    assert joined.filter(pl.col("rcode") != pl.col("rcode_local")).is_empty(), joined.filter(
        pl.col("rcode") != pl.col("rcode_local")
    )
    valid = joined.filter(pl.col("rcode") == 0)
    for name in ("code", "feature_id", "value"):
        assert (valid[name] == valid[f"{name}_local"]).all(), name
    assert valid.height > 30 and set(joined["rcode"]) == {0, 1, 2, 3, 4}
