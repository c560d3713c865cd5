"""The structures' cache packs line, position, field code and reason code into one long: every
value at the edges of its bits comes back unchanged."""

from __future__ import annotations

from collections import Counter
from typing import Any

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
