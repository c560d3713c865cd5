"""The Spark references of benchmarks/spark.py, yardsticks only: the original approach (a pandas
grouped-map UDF parsing lines with a Python loop, results pulled to the driver) and a vectorised
variant (pandas string methods in the UDF, Spark writing the Parquet). Neither validates,
rejects or numbers lines. Spark's Python workers import the UDFs from this module by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUPS = 64  # line buckets for the grouped-map UDF (each becomes one pandas frame)


def _rowwise_features(kind: str) -> Any:
    """The original UDF body: a Python loop over lines and structures (no validation)."""

    def parse(pdf: Any) -> Any:
        import pandas as pd

        out = []
        for line in pdf["value"]:
            cols = line.split(",")
            for pos, item in enumerate(cols[-1].split("\x01")):
                _field, rest = item.split("\x02")
                fid, value = rest.split("\x03")
                out.append((cols[0], pos, int(fid), float(value)))
        return pd.DataFrame(out, columns=["key", "position", "feature_id", "value"])

    return parse


def _rowwise_rows(pdf: Any) -> Any:
    import pandas as pd

    out = [(line.split(",")[0], int(line.split(",")[-2])) for line in pdf["value"]]
    return pd.DataFrame(out, columns=["key", "num_features"])


def original_reference(spark: Any, raw: Path, out: Path, arrow: bool) -> None:
    """Grouped-map UDFs with a Python loop, results pulled to the driver, pandas writes.

    `arrow`: toPandas through Arrow; off is Spark's default, as the original ran."""
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", str(arrow).lower())
    out.mkdir(parents=True, exist_ok=True)
    for name, kind in [
        ("common_features_train.csv", "common"),
        ("sample_skeleton_train.csv", "skeleton"),
    ]:
        lines = spark.read.text(str(raw / "train" / name)).withColumn(
            "g", F.monotonically_increasing_id() % GROUPS
        )
        grouped = lines.groupBy("g")
        feats = grouped.applyInPandas(
            _rowwise_features(kind), "key string, position int, feature_id int, value double"
        )
        feats.toPandas().to_parquet(out / f"{kind}_features.parquet")
        rows = grouped.applyInPandas(_rowwise_rows, "key string, num_features int")
        rows.toPandas().to_parquet(out / f"{kind}_rows.parquet")


def _features(pdf: Any, leading: int, key: str, key_type: str | None) -> Any:
    """Feature rows of a file whose feature list follows `leading` comma-separated columns,
    the first of which is the key."""
    import pandas as pd

    parts = pdf["value"].str.split(",", n=leading, expand=True)
    items = parts[leading].str.split("\x01").explode()
    fields = items.str.split("[\x02\x03]", regex=True, expand=True)
    keys = parts[0].loc[items.index]
    return pd.DataFrame(
        {
            "split": "train",
            key: (keys if key_type is None else keys.astype(key_type)).to_numpy(),
            "position": items.groupby(level=0).cumcount().astype("int16").to_numpy(),
            "feature_id": fields[1].astype("int32").to_numpy(),
            "value": fields[2].astype("float64").to_numpy(),
        }
    )


def _parse_common(pdf: Any) -> Any:
    return _features(pdf, 2, "common_feature_index", None)


def _parse_skeleton(pdf: Any) -> Any:
    return _features(pdf, 5, "sample_id", "int64")


def _common_rows(pdf: Any) -> Any:
    import pandas as pd

    parts = pdf["value"].str.split(",", n=2, expand=True)
    return pd.DataFrame(
        {
            "split": "train",
            "common_feature_index": parts[0],
            "num_features": parts[1].astype("int32"),
        }
    )


def _skeleton_rows(pdf: Any) -> Any:
    import pandas as pd

    p = pdf["value"].str.split(",", n=5, expand=True)
    return pd.DataFrame(
        {
            "split": "train",
            "sample_id": p[0].astype("int64"),
            "click": p[1].astype("int8"),
            "conversion": p[2].astype("int8"),
            "common_feature_index": p[3],
            "num_features": p[4].astype("int32"),
        }
    )


def vectorised_reference(spark: Any, raw: Path, out: Path) -> None:
    """Grouped-map UDFs with pandas string methods; Spark writes the Parquet."""
    from pyspark.sql import functions as F

    jobs = [
        (
            "common_features_train.csv",
            _common_rows,
            "split string, common_feature_index string, num_features int",
            _parse_common,
            "split string, common_feature_index string, position short, feature_id int, "
            "value double",
            ("common_feature_group", "common_feature"),
        ),
        (
            "sample_skeleton_train.csv",
            _skeleton_rows,
            "split string, sample_id long, click byte, conversion byte, "
            "common_feature_index string, num_features int",
            _parse_skeleton,
            "split string, sample_id long, position short, feature_id int, value double",
            ("sample", "sample_feature"),
        ),
    ]
    for name, rows_fn, rows_schema, feats_fn, feats_schema, tables in jobs:
        lines = spark.read.text(str(raw / "train" / name)).withColumn(
            "g", F.monotonically_increasing_id() % GROUPS
        )
        grouped = lines.groupBy("g")
        grouped.applyInPandas(rows_fn, rows_schema).write.mode("overwrite").parquet(
            str(out / tables[0])
        )
        grouped.applyInPandas(feats_fn, feats_schema).write.mode("overwrite").parquet(
            str(out / tables[1])
        )
