"""Benchmark the Spark engine against the original pandas-UDF approach and the local engine.

    python benchmarks/spark.py [--samples 200000] [--master 'local[2]'] [--skip-local]

Same generated input (train split) for every run. The Spark engine and the references share
one SparkSession (its start-up is timed apart). The references are allowed here only, as
yardsticks:

- "original": the approach the issue describes, a pandas grouped-map UDF (applyInPandas) whose
  body parses lines with a Python loop (like public Ali-CCP preprocessors), every line shipped
  to Python workers, and the results pulled to the driver (toPandas, Arrow on) and written there
  with pandas. Target: the Spark engine >= 5x faster.
- "vectorised": a stronger variant, pandas string methods in the UDF and Spark writing the
  Parquet; neither reference validates, rejects or numbers lines.

Wall seconds on a shared machine depend on the load, so CPU seconds of the whole process tree
(driver, JVM, Python workers) are printed too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import ROOT
from transform import make_input

sys.path.insert(0, str(ROOT / "src"))

GROUPS = 64  # line buckets for the grouped-map UDF (each becomes one pandas frame)


@dataclass
class Row:
    name: str
    seconds: float
    cpu: float  # CPU seconds of the whole process tree
    input_bytes: int
    structures: int

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds


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


def _parse_common(pdf: Any) -> Any:
    import pandas as pd

    parts = pdf["value"].str.split(",", n=2, expand=True)
    items = parts[2].str.split("\x01").explode()
    fields = items.str.split("[\x02\x03]", regex=True, expand=True)
    return pd.DataFrame(
        {
            "split": "train",
            "common_feature_index": parts[0].loc[items.index].to_numpy(),
            "position": items.groupby(level=0).cumcount().astype("int16").to_numpy(),
            "feature_id": fields[1].astype("int32").to_numpy(),
            "value": fields[2].astype("float64").to_numpy(),
        }
    )


def _parse_skeleton(pdf: Any) -> Any:
    import pandas as pd

    parts = pdf["value"].str.split(",", n=5, expand=True)
    items = parts[5].str.split("\x01").explode()
    fields = items.str.split("[\x02\x03]", regex=True, expand=True)
    return pd.DataFrame(
        {
            "split": "train",
            "sample_id": parts[0].loc[items.index].astype("int64").to_numpy(),
            "position": items.groupby(level=0).cumcount().astype("int16").to_numpy(),
            "feature_id": fields[1].astype("int32").to_numpy(),
            "value": fields[2].astype("float64").to_numpy(),
        }
    )


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


def tree_cpu() -> float:
    """CPU seconds of this process and its descendants (JVM, Python workers), reaped too."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def timed(name: str, fn: Any, size: int, structures: int) -> Row:
    cpu, start = tree_cpu(), time.perf_counter()
    fn()
    row = Row(name, time.perf_counter() - start, tree_cpu() - cpu, size, structures)
    print(f"  {name}: {row.seconds:.1f} s wall, {row.cpu:.1f} s CPU", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip-local", action="store_true", help="skip the local engine")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the pandas-UDF runs")
    parser.add_argument("--rounds", type=int, default=2, help="the last round is reported")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deepcvr-bench"
    )
    args = parser.parse_args()

    from deepcvr.transform.engine import TransformOptions, transform
    from deepcvr.transform.spark_engine import location, spark_session, spark_transform

    # The reference's Python workers must use this interpreter (pandas, pyarrow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    raw, size, structures = make_input(args.data_dir, args.samples)
    print(f"input: {args.samples:,} impressions, {size / 1e6:.1f} MB, {structures:,} structures")
    work = Path(tempfile.mkdtemp(prefix="deepcvr-bench-spark-"))
    start = time.perf_counter()
    spark, _ = spark_session(
        {
            "spark.master": args.master,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "8",
            "spark.driver.memory": "2g",
        }
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"Spark session ({args.master}) started in {time.perf_counter() - start:.1f} s")
    runs: list[tuple[str, Any]] = [
        (
            f"Spark engine ({args.master})",
            lambda out: spark_transform(
                spark, location(raw), location(out), None, max_reject_ratio=1.0
            ),
        )
    ]
    if not args.skip_pandas:
        runs += [
            ("pandas UDF, original", lambda out: original_reference(spark, raw, out, False)),
            ("  same, Arrow toPandas", lambda out: original_reference(spark, raw, out, True)),
            ("pandas UDF, vectorised", lambda out: vectorised_reference(spark, raw, out)),
        ]
    if not args.skip_local:
        workers = int(args.master[6:-1]) if args.master[6:-1].isdigit() else 2
        options = TransformOptions(workers=workers, max_reject_ratio=1.0)
        runs.append(
            (f"local engine ({workers} workers)", lambda out: transform(raw, out, None, options))
        )
    rows: list[Row] = []
    try:
        # Round 1 warms the JVM (JIT, code generation) for every approach alike; round 2 is
        # what a long job sees, and what the table shows.
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}:")
            rows = []
            for i, (name, fn) in enumerate(runs):
                out = work / f"r{round_}-{i}"
                rows.append(timed(name, lambda fn=fn, out=out: fn(out), size, structures))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    header = (
        f"{'run':<28}{'wall s':>8}{'CPU s':>8}{'MB/s':>8}{'Mstruct/s':>11}"
        f"{'Spark engine faster by (wall / CPU)':>38}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        mstruct = r.structures / r.seconds / 1e6
        print(
            f"{r.name:<28}{r.seconds:>8.1f}{r.cpu:>8.1f}{r.mb_per_s:>8.1f}{mstruct:>11.2f}"
            f"{r.seconds / base.seconds:>27.2f}x / {r.cpu / base.cpu:.2f}x"
        )


if __name__ == "__main__":
    main()
