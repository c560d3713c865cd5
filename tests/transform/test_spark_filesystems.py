"""The Spark engine on a Hadoop file system other than the local one.

s3a:// needs the S3A connector's jars (hadoop-aws and the AWS SDK bundle), which Spark fetches
from Maven Central; this machine cannot reach it. Hadoop's own view file system (viewfs://,
shipped with Spark) stands in: its URIs are not local paths, so a run through it shows that
listing, sizes, writes and renames all go through Hadoop's FileSystem, as they must for s3a://
and hdfs://.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepcvr.fsutil import TMP_MARK
from deepcvr.synth import generate
from deepcvr.transform.engine import TransformOptions, transform
from tests.transform.test_spark import assert_same_tables

pytestmark = pytest.mark.spark


@pytest.fixture
def viewfs(spark: Any, tmp_path: Path) -> Iterator[str]:
    """viewfs://NAME/data mounted on tmp_path; a fresh mount table name per test, since Hadoop
    caches a file system per scheme and authority."""
    name = f"deepcvr{uuid.uuid4().hex[:8]}"
    key = f"fs.viewfs.mounttable.{name}.link./data"
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    conf.set(key, tmp_path.as_uri())
    yield f"viewfs://{name}/data"
    conf.unset(key)


def test_spark_engine_reads_and_writes_through_a_hadoop_file_system(
    spark: Any, viewfs: str, tmp_path: Path
) -> None:
    from deepcvr.transform.spark_engine import spark_transform

    for split, impressions, seed in (("train", 300, 3), ("test", 120, 4)):
        generate(tmp_path / "raw" / split, impressions, split, seed=seed)
        with (tmp_path / "raw" / split / f"sample_skeleton_{split}.csv").open("ab") as f:
            f.write(b"not,a,line\n")  # a reject, so the rejects table is written too
    local = tmp_path / "local"
    transform(tmp_path / "raw", local, None, TransformOptions(workers=1, max_reject_ratio=1.0))

    summary = spark_transform(spark, f"{viewfs}/raw", f"{viewfs}/out", None, max_reject_ratio=1.0)

    assert sorted(summary["splits"]) == ["test", "train"]
    for split in ("train", "test"):
        assert (tmp_path / "out" / split / "_manifest.json").is_file()
        tables = assert_same_tables(local, tmp_path / "out", split)
        assert tables["sample"].height == {"train": 300, "test": 120}[split]
        assert tables["rejects"].height == 1
    # The same layout as the local engine's, every temp directory renamed into place.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in local.iterdir()
    )
    assert not [p for p in (tmp_path / "out").rglob(f"*{TMP_MARK}*")]
