"""The Spark transform engine: raw CSVs -> the same 3NF Parquet as the local engine, on a cluster.

Same tables, schemas, reject reasons and accounting as `deepcvr.transform.engine`, parsed with
Spark SQL functions only (spark_sql.py, spark_structures.py), so executors need no Python and
no data row reaches the driver. Per split: the common file first (its accepted indexes drive
the orphan check), then the skeleton; every table is written under a hidden temp directory
that is renamed into place with its `_manifest.json` (the loaders' sign of a complete split).

    spark-submit --master yarn run.py RAW OUT    # run.py calls deepcvr.transform.spark_engine.main
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepcvr.aliccp import FIELDS, SPLITS, common_name, skeleton_name
from deepcvr.errors import ConfigError, DataError
from deepcvr.schema import FEATURE_TABLE, MANIFEST, ROW_TABLE
from deepcvr.transform import spark_accounting as A
from deepcvr.transform.spark_accounting import Kind
from deepcvr.transform.spark_runtime import (
    HadoopFS,
    check_java,
    location,
    session,
    spark_session,
    temp_sibling,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["check_java", "location", "main", "run_spark_transform", "spark_session"]

CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
BROADCAST_ROWS = 2_000_000  # side tables up to this many rows are broadcast, not shuffled
ROW_COLUMNS = {
    "common": [("split", "split"), ("idx", "common_feature_index"), ("num", "num_features")],
    "skeleton": [
        ("split", "split"),
        ("sid", "sample_id"),
        ("clk", "click"),
        ("cvr", "conversion"),
        ("idx", "common_feature_index"),
        ("num", "num_features"),
    ],
}
KEY_NAME = {"common": "common_feature_index", "skeleton": "sample_id"}


def find_splits(fs: HadoopFS, raw: str, wanted: list[str] | None) -> dict[str, str]:
    """split -> directory holding its two CSVs (raw/{split}/ first, like the local engine)."""
    present: dict[str, str] = {}
    for split in SPLITS:
        for base in (f"{raw}/{split}", raw):
            if all(fs.is_file(f"{base}/{n}") for n in (common_name(split), skeleton_name(split))):
                present[split] = base
                break
    names = wanted or list(present)
    missing = [s for s in names if s not in present]
    if missing or not names:
        expected = ", ".join(f"{common_name(s)} + {skeleton_name(s)}" for s in (missing or SPLITS))
        raise DataError(
            f"{raw}: no raw files for {', '.join(missing) or 'any split'} "
            f"(expected {expected}); check the path or run decompress"
        )
    return {s: present[s] for s in names}


@dataclass
class Job:
    spark: SparkSession
    fs: HadoopFS
    out: str
    max_reject_ratio: float
    compression: str = "snappy"  # as the local engine
    cached: list[DataFrame] = field(default_factory=list)

    def keep(self, df: DataFrame) -> DataFrame:
        """Persist a frame several outputs read (memory, spilling to disk) until the split ends."""
        df = df.persist()
        self.cached.append(df)
        return df

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()
        self.cached.clear()

    def write(self, df: DataFrame, uri: str) -> None:
        df.write.mode("overwrite").option("compression", self.compression).parquet(uri)

    def phase(self, text: str) -> None:
        """Label the next Spark jobs (Spark UI, event log): which step of which file."""
        self.spark.sparkContext.setJobDescription(f"deepcvr transform: {text}")

    def small(self, df: DataFrame, rows: int) -> DataFrame:
        from pyspark.sql import functions as F

        return F.broadcast(df) if rows <= BROADCAST_ROWS else df


def _read_kind(job: Job, uri: str, kind: str, name: str, keys: DataFrame | None) -> Kind:
    from pyspark.sql import functions as F

    from deepcvr.transform import spark_sql as S

    job.phase(f"number lines of {name}")
    numbered, facts = S.number_lines(job.spark, uri, job.fs.size(uri))
    job.phase(f"parse lines of {name}")
    base = job.keep(S.with_orphans(S.parse_lines(numbered, kind, facts), keys))
    dups = job.keep(S.duplicate_lines(base, kind))
    # Duplicates are at most the lines: count them (a job) only when that could be too many.
    few = facts.lines <= BROADCAST_ROWS or dups.count() <= BROADCAST_ROWS
    lines = S.final_lines(base, kind, F.broadcast(dups) if few else dups)
    return Kind(kind, name, facts, base, lines)


@dataclass
class Fields:
    """The field decisions of a split (spark_fields.py)."""

    tally: DataFrame  # structures per file and reason, claims of the valid ones; persisted
    claims: DataFrame  # (code, block, bits), from the tally
    lost: DataFrame | None = None  # (feature_id, winner) of the contested ids, persisted


def _decide_fields(job: Job, kinds: list[Kind], prior: DataFrame | None) -> Fields:
    """Field claims per block of ids, then the contested ids one by one (none, usually).

    Only the tally (claims and counts) and the winners are persisted: each persisted frame
    that reads another doubles the size of the plans Spark prints for every query over them;
    the claims are a small aggregate of the tally, recomputed where they are read."""
    from deepcvr.transform import spark_fields as D

    parsed = [(k.kind, k.structs) for k in kinds if k.structs is not None]
    assert len(parsed) == len(kinds)  # the tally numbers files as `kinds` does
    tally = job.keep(D.structure_tally(parsed))
    claims = D.tally_claims(tally)
    contested = D.contested_blocks(claims, prior)
    if not contested.count():
        return Fields(tally, claims)
    lost = job.keep(D.contested_winners(parsed, contested, prior))
    return Fields(tally, claims, job.small(lost, lost.count()))


def _write_tables(job: Job, split: str, tmp: str, kinds: list[Kind], fields: Fields) -> None:
    from pyspark.sql import functions as F

    from deepcvr.transform import spark_fields as D
    from deepcvr.transform import spark_sql as S
    from deepcvr.transform import spark_structures as T

    lost = fields.lost
    rejects = None
    for k in kinds:
        job.phase(f"write tables of {k.file}")
        accepted = k.lines.filter(F.col("reason").isNull()).withColumn("split", F.lit(split))
        job.write(
            accepted.select(*(F.col(a).alias(b) for a, b in ROW_COLUMNS[k.kind])),
            f"{tmp}/{ROW_TABLE[k.kind]}",
        )
        assert k.structs is not None
        loaded = T.loaded_structures(k.structs, lost)
        if not T.KEY_CACHED[k.kind]:  # the lines give the key the cache does not hold
            keys = accepted.select("line", F.col("idx").alias("key"))
            loaded = loaded.join(job.small(keys, k.counts["loaded_lines"]), "line")
        job.write(
            loaded.select(
                F.lit(split).alias("split"),
                F.col("key").alias(KEY_NAME[k.kind]),
                "position",
                "feature_id",
                "value",
            ),
            f"{tmp}/{FEATURE_TABLE[k.kind]}",
        )
        c = k.counts
        n = c["rejected_lines"] + c["flagged_lines"] + c["structure_rejects"]
        if n == 0:
            continue  # no rejects: no third pass, no offsets, no file (as locally)
        part = S.line_rejects(k.lines)
        if c["structure_rejects"]:
            few = c["structure_rejects"] <= BROADCAST_ROWS
            final = T.mark_conflicts(k.structs, lost)
            part = part.unionByName(T.structure_rejects(final, k.base, few))
        part = S.with_reject_columns(job.small(part, n), S.byte_offsets(k.base), split, k.file)
        rejects = part if rejects is None else rejects.unionByName(part)
    if rejects is not None:
        job.phase(f"write {split} rejects")
        job.write(rejects, f"{tmp}/rejects")
    job.phase(f"write {split} feature table")
    job.write(D.feature_table(fields.claims, fields.lost), f"{tmp}/feature")


def transform_split(
    job: Job, split: str, base: str, prior: DataFrame | None
) -> tuple[dict[str, Any], str]:
    """Transform one split into a temp dir and rename it into place; (summary, final dir)."""
    from pyspark.sql import functions as F

    from deepcvr.transform import spark_structures as T

    final_dir = f"{job.out}/{split}"
    job.fs.delete(f"{final_dir}/{MANIFEST}")  # the old output is no longer known complete
    tmp = temp_sibling(final_dir)
    try:
        c_name, s_name = common_name(split), skeleton_name(split)
        common = _read_kind(job, f"{base}/{c_name}", "common", c_name, None)
        A.count_lines(job, common)  # its loaded lines are the accepted indexes: no count job
        keys = common.lines.filter(F.col("reason").isNull()).select("idx")
        keys = job.small(keys, common.counts["loaded_lines"])
        skeleton = _read_kind(job, f"{base}/{s_name}", "skeleton", s_name, keys)
        A.count_lines(job, skeleton)
        kinds = [common, skeleton]
        for k in kinds:
            # Parsed once and cached: the decisions, the counters, the feature table and the
            # rejects all read it (each parse pass costs more than building the cache).
            cached = job.keep(T.packed(T.structures(k.lines, k.kind), k.kind))
            k.structs = T.unpacked(cached, k.kind)
        job.phase(f"feature fields of {split}")
        fields = _decide_fields(job, kinds, prior)
        A.count_structures(job, kinds, fields.tally, fields.lost)
        _write_tables(job, split, tmp, kinds, fields)
        job.phase(f"account {split}")
        summary, problems = A.account(job, split, tmp, kinds)
        ok = not problems and summary["reject_ratio"] <= job.max_reject_ratio
        if ok:
            job.fs.write_text(f"{tmp}/{MANIFEST}", json.dumps(summary, indent=2, default=str))
        job.fs.replace_dir(tmp, final_dir)  # kept without a manifest on failure, as locally
    except BaseException:
        job.fs.delete(tmp)
        raise
    finally:
        job.release()
    if problems:
        raise DataError(f"{split}: accounting identity failed: {'; '.join(problems)}")
    if not ok:
        acc = summary["accounting"]
        raise DataError(
            f"{split}: {acc['rejected_lines']:,} of {acc['lines']:,} lines rejected "
            f"({summary['reject_ratio']:.3%}, limit {job.max_reject_ratio:.3%}); see "
            f"{final_dir}/rejects for file, line and reason, or raise max_reject_ratio"
        )
    return summary, final_dir


def _write_field_table(job: Job) -> None:
    from deepcvr.transform.spark_sql import local_frame

    rows = [(f.field_id, f.name, f.entity, f.multi_valued, f.description) for f in FIELDS]
    names = ("field_id", "name", "entity", "multi_valued", "description")
    final = f"{job.out}/field"
    tmp = temp_sibling(final)
    job.write(local_frame(job.spark, rows, names, None).coalesce(1), tmp)
    job.fs.replace_dir(tmp, final)


def spark_transform(
    spark: SparkSession,
    raw: str,
    out: str,
    splits: list[str] | None = None,
    max_reject_ratio: float = 0.001,
) -> dict[str, Any]:
    """Transform every requested split under `raw` (a URI) into `out`; a summary per split."""
    from deepcvr.transform import spark_fields as D

    start = time.monotonic()
    fs = HadoopFS(spark)
    wanted = find_splits(fs, raw, splits)
    fs.check_writable(out)
    job = Job(spark, fs, out, max_reject_ratio)
    # Finished splits not redone here keep their feature decisions, as in the local engine;
    # within this run, train decides before test.
    prior: list[DataFrame] = []
    for split in SPLITS:
        done = f"{out}/{split}"
        if split not in wanted and fs.exists(f"{done}/{MANIFEST}") and fs.exists(f"{done}/feature"):
            prior.append(D.prior_codes(spark.read.parquet(f"{done}/feature"), len(prior)))
    summary: dict[str, Any] = {}
    # Cached frames live for one split: building them uncompressed saves ~20% of the parse's
    # CPU; they spill to disk when memory is short. The session's setting is restored after.
    saved = spark.conf.get(CACHE_COMPRESSED, None)
    spark.conf.set(CACHE_COMPRESSED, "false")
    try:
        job.phase("field table")
        _write_field_table(job)
        todo = [split for split in SPLITS if split in wanted]
        for i, split in enumerate(todo):
            prior_codes = D.merge_prior(prior)
            summary[split], done = transform_split(job, split, wanted[split], prior_codes)
            if i + 1 < len(todo):  # reading a Parquet schema is a Spark job: only when needed
                prior.append(D.prior_codes(spark.read.parquet(f"{done}/feature"), len(prior)))
    finally:
        spark.sparkContext.setJobDescription(None)  # type: ignore[arg-type]
        if saved is None:
            spark.conf.unset(CACHE_COMPRESSED)
        else:
            spark.conf.set(CACHE_COMPRESSED, saved)
    seconds = time.monotonic() - start
    total = sum(v["accounting"]["bytes"] for v in summary.values())
    return {
        "splits": summary,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
        "engine": "spark",
        "master": spark.sparkContext.master,
    }


def run_spark_transform(
    raw_dir: Path, out_dir: Path, params: Any, ctx: Any = None
) -> dict[str, Any]:
    """`transform.aliccp` with `engine: spark`: paths may be local or URIs (s3a://, hdfs://)."""
    if not getattr(params, "stage_raw", True):
        raise ConfigError(
            "engine spark reads decompressed CSVs (a tar.gz cannot be split across executors): "
            "set stage_raw: true and run decompress first"
        )
    # params.input keeps a URI's '//', which Path() in the caller collapses.
    raw = location(params.input or raw_dir)
    out = location(params.output or out_dir)
    with session(dict(params.spark)) as spark:
        summary = spark_transform(spark, raw, out, params.split, params.max_reject_ratio)
    store = getattr(ctx, "store", None)
    if store is not None:
        for split, info in summary["splits"].items():
            store.record(ctx.run_id, ctx.task, "accounting", split, info["accounting"])
            store.record(ctx.run_id, ctx.task, "rejects", split, info["rejects"])
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point for spark-submit; --master/--conf of spark-submit shape the session."""
    parser = argparse.ArgumentParser(description="deepcvr transform on Spark")
    parser.add_argument("raw", help="raw directory or URI (s3a://, hdfs://)")
    parser.add_argument("out", help="Parquet directory or URI")
    parser.add_argument("--split", action="append", choices=SPLITS)
    parser.add_argument("--max-reject-ratio", type=float, default=0.001)
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.conf)
    try:
        with session(settings) as spark:
            summary = spark_transform(
                spark, location(args.raw), location(args.out), args.split, args.max_reject_ratio
            )
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
