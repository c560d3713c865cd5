"""The Spark transform engine: raw CSVs -> the same 3NF Parquet as the local engine, on a cluster.

Same tables, schemas, reject reasons and accounting as `deepcvr.transform.engine`; parsing is
Spark SQL only (see spark_sql.py), so executors need no Python. Per split the common file comes
first (its accepted indexes drive the orphan check), every table is written under a temp
directory, and the directory is renamed into place with its `_manifest.json`.

    spark-submit --master yarn run.py     # run.py: from deepcvr.transform.spark_engine import main
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepcvr import __version__
from deepcvr.aliccp import FIELDS, SPLITS, common_name, skeleton_name
from deepcvr.errors import ConfigError, DataError
from deepcvr.fsutil import TMP_MARK
from deepcvr.transform.accounting import COUNTERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("deepcvr")

MANIFEST = "_manifest.json"
DEFAULT_MASTER = "local[*]"
MIN_PYSPARK = (4, 0)  # is_valid_utf8 / make_valid_utf8 / try_cast are Spark 4 functions
BROADCAST_ROWS = 2_000_000  # side tables up to this size are broadcast instead of shuffled
ROW_TABLE = {"common": "common_feature_group", "skeleton": "sample"}
FEATURE_TABLE = {"common": "common_feature", "skeleton": "sample_feature"}
NO_PYSPARK = "engine spark needs PySpark: pip install 'deepcvr[spark]'"


# --- session ------------------------------------------------------------------------------------


def _import_pyspark() -> None:
    try:
        import pyspark
    except ImportError:
        raise ConfigError(NO_PYSPARK) from None
    found = tuple(int(p) for p in pyspark.__version__.split(".")[:2] if p.isdigit())
    if found < MIN_PYSPARK:
        raise ConfigError(
            f"engine spark needs PySpark 4.0 or later (found {pyspark.__version__}): "
            "pip install -U 'deepcvr[spark]'"
        )


def check_java() -> None:
    """PySpark starts a JVM: fail with one line, before trying, when there is no `java`."""
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return  # spark-submit started the JVM already
    home = os.environ.get("JAVA_HOME")
    if home:
        if not (Path(home) / "bin" / "java").is_file():
            raise ConfigError(
                f"engine spark needs Java 17+: JAVA_HOME={home} has no bin/java; "
                "fix JAVA_HOME or unset it to use java on PATH"
            )
        return
    if shutil.which("java") is None:
        raise ConfigError(
            "engine spark needs Java 17+: no java on PATH and JAVA_HOME is not set; "
            "install a JDK (e.g. apt-get install openjdk-17-jre-headless)"
        )


def spark_session(settings: dict[str, str]) -> tuple[SparkSession, bool]:
    """The active session (runtime settings applied) or a new one; True when we created it."""
    _import_pyspark()
    from pyspark.sql import SparkSession

    bad = [k for k in settings if not k.startswith("spark.")]
    if bad:
        raise ConfigError(f"spark settings must be spark.* keys, got {', '.join(sorted(bad))}")
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in settings.items():
            if key != "spark.master":
                try:
                    active.conf.set(key, value)
                except Exception:  # a static setting cannot change in a running session
                    log.warning("spark: %s cannot change in the running session; ignored", key)
        return active, False
    check_java()
    builder = SparkSession.builder.appName("deepcvr-transform").master(
        settings.get("spark.master", DEFAULT_MASTER)
    )
    for key, value in settings.items():
        if key != "spark.master":
            builder = builder.config(key, value)
    try:
        return builder.getOrCreate(), True
    except Exception as err:
        raise ConfigError(f"cannot start Spark: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- file system ----------------------------------------------------------------------------


def location(value: str | Path) -> str:
    """A URI for Spark and Hadoop: URIs pass through; a local path becomes file:///absolute."""
    text = str(value)
    if "://" in text:
        return text.rstrip("/")
    return Path(text).expanduser().resolve().as_uri()


class HadoopFS:
    """Listing, sizes and renames through Hadoop's FileSystem (local, s3a://, hdfs://)."""

    def __init__(self, spark: SparkSession) -> None:
        self.jvm = spark._jvm  # type: ignore[attr-defined]
        self.conf = spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined]

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self.jvm.org.apache.hadoop.fs.Path(uri)
        return path, path.getFileSystem(self.conf)

    def exists(self, uri: str) -> bool:
        path, fs = self._fs(uri)
        return bool(fs.exists(path))

    def is_file(self, uri: str) -> bool:
        path, fs = self._fs(uri)
        return bool(fs.exists(path) and fs.getFileStatus(path).isFile())

    def size(self, uri: str) -> int:
        path, fs = self._fs(uri)
        return int(fs.getFileStatus(path).getLen())

    def delete(self, uri: str) -> None:
        path, fs = self._fs(uri)
        fs.delete(path, True)

    def mkdirs(self, uri: str) -> None:
        path, fs = self._fs(uri)
        fs.mkdirs(path)

    def write_text(self, uri: str, text: str) -> None:
        path, fs = self._fs(uri)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def rename(self, src: str, dst: str) -> None:
        path, fs = self._fs(src)
        if not fs.rename(path, self.jvm.org.apache.hadoop.fs.Path(dst)):
            raise DataError(f"{dst}: cannot rename {src} into place")

    def replace_dir(self, tmp: str, final: str) -> None:
        """Swap a finished temp dir into place (one rename on HDFS/local; a copy on S3A)."""
        if self.exists(final):
            old = temp_sibling(final)
            self.rename(final, old)
            self.rename(tmp, final)
            self.delete(old)
        else:
            self.rename(tmp, final)


def temp_sibling(uri: str) -> str:
    parent, name = uri.rsplit("/", 1)
    return f"{parent}/{TMP_MARK}{name}.{uuid.uuid4().hex[:8]}"


def _writable(fs: HadoopFS, out: str) -> None:
    probe = f"{out}/{TMP_MARK}write-probe.{uuid.uuid4().hex[:8]}"
    try:
        fs.mkdirs(out)
        fs.write_text(probe, "")
        fs.delete(probe)
    except Exception as err:
        raise DataError(
            f"{out}: output directory is not writable ({_first_line(err)}); choose another"
        ) from None


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


# --- the transform ------------------------------------------------------------------------


@dataclass
class Job:
    spark: SparkSession
    fs: HadoopFS
    out: str
    max_reject_ratio: float
    compression: str = "snappy"  # as the local engine
    cached: list[DataFrame] = field(default_factory=list)

    def keep(self, df: DataFrame) -> DataFrame:
        """Persist a frame that several outputs read; unpersisted when the split is done."""
        df = df.persist()
        self.cached.append(df)
        return df

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()
        self.cached.clear()

    def write(self, df: DataFrame, uri: str) -> None:
        df.write.mode("overwrite").option("compression", self.compression).parquet(uri)


def _small(df: DataFrame, rows: int) -> DataFrame:
    from pyspark.sql import functions as F

    return F.broadcast(df) if rows <= BROADCAST_ROWS else df


@dataclass
class KindFrames:
    kind: str
    file: str
    lines: DataFrame
    structs: DataFrame
    final: DataFrame | None = None
    facts: Any = None
    counts: dict[str, int] = field(default_factory=dict)


def _lines(job: Job, uri: str, kind: str, common_keys: DataFrame | None) -> tuple[Any, DataFrame]:
    from deepcvr.transform import spark_sql as S

    numbered, facts = S.number_lines(job.spark, uri, job.fs.size(uri))
    base = S.parse_lines(numbered, kind, facts)
    dups = job.keep(S.duplicate_lines(base, kind))
    lines = S.final_lines(base, kind, _small(dups, dups.count()), common_keys)
    return facts, job.keep(lines)


def _line_counts(lines: DataFrame) -> dict[str, int]:
    from pyspark.sql import functions as F

    ok, bad = F.col("reason").isNull(), F.col("reason").isNotNull()
    row = lines.agg(
        F.count(F.lit(1)).alias("lines"),
        F.sum("structures").alias("raw_structures"),
        F.count(F.when(ok, 1)).alias("loaded_lines"),
        F.count(F.when(bad, 1)).alias("rejected_lines"),
        F.sum(F.when(bad, F.col("structures"))).alias("rejected_line_structures"),
        F.count(F.when(ok & (F.col("num") != F.col("structures")), 1)).alias("flagged_lines"),
        F.count(F.when(F.col("crlf"), 1)).alias("crlf_lines"),
    ).collect()[0]
    return {k: int(v or 0) for k, v in row.asDict().items()}


def _structure_counts(final: DataFrame) -> dict[str, int]:
    from pyspark.sql import functions as F

    row = final.agg(
        F.count(F.when(F.col("reason").isNull(), 1)).alias("loaded_structures"),
        F.count(F.when(F.col("reason").isNotNull(), 1)).alias("rejected_structures"),
    ).collect()[0]
    return {k: int(v or 0) for k, v in row.asDict().items()}


def _rows(job: Job, uri: str) -> int:
    return job.spark.read.parquet(uri).count()


def transform_split(
    job: Job, split: str, base: str, prior: DataFrame | None
) -> tuple[dict[str, Any], str]:
    """Transform one split into a temp dir and rename it into place; returns (summary, dir)."""
    from pyspark.sql import functions as F

    from deepcvr.transform import spark_sql as S

    final_dir = f"{job.out}/{split}"
    job.fs.delete(f"{final_dir}/{MANIFEST}")  # the old output is no longer known complete
    tmp = temp_sibling(final_dir)
    try:
        common_uri = f"{base}/{common_name(split)}"
        skeleton_uri = f"{base}/{skeleton_name(split)}"
        c_facts, c_lines = _lines(job, common_uri, "common", None)
        keys = job.keep(c_lines.filter(F.col("reason").isNull()).select("idx"))
        s_facts, s_lines = _lines(job, skeleton_uri, "skeleton", _small(keys, keys.count()))
        frames = [
            KindFrames(
                "common",
                common_name(split),
                c_lines,
                job.keep(S.structures(c_lines, "common")),
                facts=c_facts,
            ),
            KindFrames(
                "skeleton",
                skeleton_name(split),
                s_lines,
                job.keep(S.structures(s_lines, "skeleton")),
                facts=s_facts,
            ),
        ]
        # Feature -> field: the first valid structure wins (earlier splits, common, line, position).
        split_pairs = job.keep(
            S.pairs(frames[0].structs, "common").unionByName(S.pairs(frames[1].structs, "skeleton"))
        )
        win = job.keep(S.winners(split_pairs, prior))
        conflicts = job.keep(win.filter(F.col("fields") > 1).select("feature_id", "winner"))
        conflicts = _small(conflicts, conflicts.count())
        for fr in frames:
            fr.final = S.mark_conflicts(fr.structs, conflicts)
            fr.counts = _line_counts(fr.lines) | _structure_counts(fr.final)

        lit_split = F.lit(split).alias("split")
        job.write(
            c_lines.filter(F.col("reason").isNull()).select(
                lit_split,
                F.col("idx").alias("common_feature_index"),
                F.col("num").alias("num_features"),
            ),
            f"{tmp}/common_feature_group",
        )
        job.write(
            s_lines.filter(F.col("reason").isNull()).select(
                lit_split,
                F.col("sid").alias("sample_id"),
                F.col("clk").alias("click"),
                F.col("cvr").alias("conversion"),
                F.col("idx").alias("common_feature_index"),
                F.col("num").alias("num_features"),
            ),
            f"{tmp}/sample",
        )
        for fr, key in zip(frames, ("common_feature_index", "sample_id"), strict=True):
            assert fr.final is not None
            job.write(
                fr.final.filter(F.col("reason").isNull()).select(
                    lit_split, F.col("key").alias(key), "position", "feature_id", "value"
                ),
                f"{tmp}/{FEATURE_TABLE[fr.kind]}",
            )
        rejects = None
        for fr in frames:
            assert fr.final is not None
            n = fr.counts["rejected_lines"] + fr.counts["flagged_lines"]
            n += fr.counts["rejected_structures"]
            part = S.line_rejects(fr.lines).unionByName(S.structure_rejects(fr.final, fr.lines))
            part = S.with_reject_columns(_small(part, n), S.byte_offsets(fr.lines), split, fr.file)
            rejects = part if rejects is None else rejects.unionByName(part)
        assert rejects is not None
        job.write(rejects, f"{tmp}/rejects")
        features = (
            split_pairs.join(win.select("feature_id", "winner"), "feature_id")
            .filter(F.col("field") == F.col("winner"))
            .select("feature_id", F.col("field").alias("field_id"))
            .distinct()
            .coalesce(1)
            .sortWithinPartitions("feature_id")
        )
        job.write(features, f"{tmp}/feature")
        summary, problems = _account(job, split, tmp, frames)
        ratio = summary["reject_ratio"]
        ok = not problems and ratio <= job.max_reject_ratio
        if ok:
            job.fs.write_text(f"{tmp}/{MANIFEST}", json.dumps(summary, indent=2, default=str))
        job.fs.replace_dir(tmp, final_dir)
    except BaseException:
        job.fs.delete(tmp)
        raise
    finally:
        job.release()
    if problems:
        raise DataError(f"{split}: accounting identity failed: {'; '.join(problems)}")
    if not ok:
        lines = summary["accounting"]["lines"]
        rejected = summary["accounting"]["rejected_lines"]
        raise DataError(
            f"{split}: {rejected:,} of {lines:,} lines rejected ({ratio:.3%}, limit "
            f"{job.max_reject_ratio:.3%}); see {final_dir}/rejects for file, line and "
            f"reason, or raise max_reject_ratio"
        )
    return summary, final_dir


def _account(
    job: Job, split: str, tmp: str, frames: list[KindFrames]
) -> tuple[dict[str, Any], list[str]]:
    """The local engine's accounting: counts from the parse, checked against Parquet footers."""
    from pyspark.sql import functions as F

    files: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for fr in frames:
        c = fr.counts
        totals = {
            "bytes": fr.facts.size,
            "lines": c["lines"],
            "raw_structures": c["raw_structures"],
            "loaded_lines": c["loaded_lines"],
            "loaded_structures": c["loaded_structures"],
            "rejected_lines": c["rejected_lines"],
            "rejected_structures": c["rejected_line_structures"] + c["rejected_structures"],
            "flagged_lines": c["flagged_lines"],
            "crlf_lines": c["crlf_lines"],
        }
        rows = _rows(job, f"{tmp}/{ROW_TABLE[fr.kind]}")
        structures = _rows(job, f"{tmp}/{FEATURE_TABLE[fr.kind]}")
        checks = {
            "lines = loaded + rejected": totals["lines"]
            == totals["loaded_lines"] + totals["rejected_lines"],
            "structures = loaded + rejected": totals["raw_structures"]
            == totals["loaded_structures"] + totals["rejected_structures"],
            "lines counted twice agree": fr.facts.lines == totals["lines"],
            "Parquet rows = loaded lines": rows == totals["loaded_lines"],
            "Parquet structures = loaded structures": structures == totals["loaded_structures"],
        }
        problems += [f"{fr.file}: {check} does not hold" for check, ok in checks.items() if not ok]
        files[fr.file] = {"kind": fr.kind, **totals, "checks": checks}
    by_reason: dict[str, dict[str, int]] = {}
    counts = (
        job.spark.read.parquet(f"{tmp}/rejects")
        .groupBy("reason", "action")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("structures").alias("structures"))
        .collect()
    )
    for row in sorted(counts, key=lambda r: (r["reason"], r["action"])):
        by_reason[f"{row['reason']} ({row['action']})"] = {
            "rows": int(row["rows"]),
            "structures": int(row["structures"] or 0),
        }
    lines = sum(f["lines"] for f in files.values())
    rejected = sum(f["rejected_lines"] for f in files.values())
    summary = {
        "split": split,
        "engine": "spark",
        "version": __version__,
        "accounting": {k: sum(int(f[k]) for f in files.values()) for k in COUNTERS},
        "files": files,
        "rejects": by_reason,
        "reject_ratio": rejected / lines if lines else 0.0,
        "resumed_chunks": 0,
        "chunks": sum(fr.facts.partitions for fr in frames),
    }
    return summary, problems


def _write_field_table(job: Job) -> None:
    from deepcvr.transform.spark_sql import local_frame

    rows = [(f.field_id, f.name, f.entity, f.multi_valued, f.description) for f in FIELDS]
    names = ("field_id", "name", "entity", "multi_valued", "description")
    final = f"{job.out}/field"
    tmp = temp_sibling(final)
    job.write(local_frame(job.spark, rows, names, None).coalesce(1), tmp)
    job.fs.replace_dir(tmp, final)


def _prior_features(job: Job, uri: str, rank: int) -> DataFrame:
    """A finished split's feature table as decided pairs that win over anything new."""
    from pyspark.sql import functions as F

    return job.spark.read.parquet(uri).select(
        F.col("feature_id").cast("int"),
        F.col("field_id").alias("field"),
        F.lit(rank - 1000).cast("long").alias("first"),
    )


def spark_transform(
    spark: SparkSession,
    raw: str,
    out: str,
    splits: list[str] | None = None,
    max_reject_ratio: float = 0.001,
) -> dict[str, Any]:
    """Transform every requested split of `raw` (a URI) into `out`; a summary per split."""
    start = time.monotonic()
    fs = HadoopFS(spark)
    wanted = find_splits(fs, raw, splits)
    _writable(fs, out)
    job = Job(spark, fs, out, max_reject_ratio)
    prior: DataFrame | None = None
    rank = 0
    for split in SPLITS:  # finished splits not redone here keep their decisions (local engine)
        done = f"{out}/{split}"
        if split not in wanted and fs.exists(f"{done}/{MANIFEST}") and fs.exists(f"{done}/feature"):
            part = _prior_features(job, f"{done}/feature", rank)
            prior = part if prior is None else prior.unionByName(part)
            rank += 1
    _write_field_table(job)
    summary: dict[str, Any] = {}
    for split in SPLITS:
        if split not in wanted:
            continue
        summary[split], done = transform_split(job, split, wanted[split], prior)
        part = _prior_features(job, f"{done}/feature", rank)
        prior = part if prior is None else prior.unionByName(part)
        rank += 1
    seconds = time.monotonic() - start
    total = sum(v["accounting"]["bytes"] for v in summary.values())
    return {
        "splits": summary,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
        "engine": "spark",
        "master": spark.sparkContext.master,
    }


@contextmanager
def session(settings: dict[str, str]) -> Iterator[SparkSession]:
    spark, owned = spark_session(settings)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


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
    """Entry point for spark-submit: the session comes from spark-submit's --master/--conf."""
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
