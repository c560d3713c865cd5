"""Reference: the simplest vectorised Polars parse (one str.split + explode pass per file).

No chunking, no parallelism beyond what Polars does by itself, no validation, no rejects.
"""

import sys
from pathlib import Path

import polars as pl

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)


def explode(df: pl.DataFrame, key: str) -> pl.DataFrame:
    return (
        df.select(key, pl.col("feature_list").str.split("\x01").alias("s"))
        .with_columns(position=pl.int_ranges(pl.col("s").list.len()))
        .explode("s", "position")
        .with_columns(pl.col("s").str.split_exact("\x02", 1).struct.rename_fields(["f", "r"]))
        .unnest("s")
        .with_columns(pl.col("r").str.split_exact("\x03", 1).struct.rename_fields(["id", "v"]))
        .unnest("r")
        .select(
            key,
            "position",
            pl.col("id").cast(pl.Int32).alias("feature_id"),
            pl.col("v").cast(pl.Float64).alias("value"),
        )
    )


for split_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
    split = split_dir.name
    common = pl.read_csv(
        split_dir / f"common_features_{split}.csv",
        has_header=False,
        new_columns=["common_feature_index", "num_features", "feature_list"],
        quote_char=None,
        schema_overrides={"common_feature_index": pl.String},
    )
    common.drop("feature_list").write_parquet(out / f"{split}_common_feature_group.parquet")
    explode(common, "common_feature_index").write_parquet(out / f"{split}_common_feature.parquet")
    skeleton = pl.read_csv(
        split_dir / f"sample_skeleton_{split}.csv",
        has_header=False,
        new_columns=[
            "sample_id",
            "click",
            "conversion",
            "common_feature_index",
            "num_features",
            "feature_list",
        ],
        quote_char=None,
        schema_overrides={"common_feature_index": pl.String},
    )
    skeleton.drop("feature_list").write_parquet(out / f"{split}_sample.parquet")
    explode(skeleton, "sample_id").write_parquet(out / f"{split}_sample_feature.parquet")
