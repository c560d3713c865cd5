"""A shared local Spark session for the Spark engine tests (one JVM per test run)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import unavailable

SPARK_TEST_SETTINGS = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "1g",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.codegen.cache.maxEntries": "2000",
}


def _java_missing() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return None
    return None if shutil.which("java") else "Java is not installed (no JAVA_HOME, no java)"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A SparkSession in local[2] with few shuffle partitions, so the tests stay quick."""
    if importlib.util.find_spec("pyspark") is None:
        unavailable("PySpark is not installed (pip install 'deepcvr[spark]')")
    reason = _java_missing()
    if reason:
        unavailable(reason)
    from deepcvr.transform.spark_engine import spark_session

    session, owned = spark_session(SPARK_TEST_SETTINGS)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    if owned:
        session.stop()
