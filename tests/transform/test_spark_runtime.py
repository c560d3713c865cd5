"""Sessions deepcvr starts get its defaults unless the settings say otherwise; a missing
PySpark or Java, a setting that is not Spark's, and a location are each one clear line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from deepcvr.errors import ConfigError

pytestmark = pytest.mark.spark


def test_started_session_has_deepcvr_defaults(spark: Any) -> None:
    from deepcvr.transform.spark_runtime import SESSION_DEFAULTS

    for key, value in SESSION_DEFAULTS.items():
        assert spark.conf.get(key) == value
    # The Python call sites of Column operations are not sent to the JVM (no round trips).
    from pyspark.errors.utils import is_debugging_enabled

    assert not is_debugging_enabled()


def test_started_local_session_collects_garbage_in_parallel(spark: Any) -> None:
    """The throughput collector, chosen for the local JVM that runs the tasks."""
    from deepcvr.transform.spark_runtime import local_java_options
    from tests.transform.conftest import SPARK_TEST_SETTINGS

    if not local_java_options(SPARK_TEST_SETTINGS, SPARK_TEST_SETTINGS["spark.master"]):
        pytest.skip("this environment chooses the JVM's collector itself (JAVA_TOOL_OPTIONS...)")
    beans = spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert {str(b.getName()) for b in beans} == {"PS Scavenge", "PS MarkSweep"}


def test_local_java_options_keep_the_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepcvr.transform.spark_runtime import DRIVER_JAVA_OPTIONS as KEY
    from deepcvr.transform.spark_runtime import local_java_options

    monkeypatch.delenv("SPARK_HOME", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    for name in ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    assert local_java_options({}, "local[2]") == {KEY: "-XX:+UseParallelGC"}
    assert local_java_options({KEY: "-Dx=1"}, "local[*]") == {KEY: "-XX:+UseParallelGC -Dx=1"}
    assert local_java_options({KEY: "-Dx=1 -XX:+UseZGC"}, "local") == {}  # their collector
    assert local_java_options({}, "spark://host:7077") == {}  # executors are elsewhere
    # A builder setting replaces spark-defaults.conf's: its options are carried over.
    (tmp_path / "spark-defaults.conf").write_text(
        f"# site settings\nspark.executor.memory 4g\n{KEY}   -Dsite=yes -Da=b\n"
    )
    assert local_java_options({}, "local[2]") == {KEY: "-XX:+UseParallelGC -Dsite=yes -Da=b"}
    (tmp_path / "spark-defaults.conf").write_text(f"{KEY}=-XX:+UseG1GC\n")
    assert local_java_options({}, "local[2]") == {}
    # A collector chosen anywhere else: a second one would stop the JVM from starting.
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.defaultJavaOptions -XX:+UseZGC\n")
    assert local_java_options({}, "local[2]") == {}
    (tmp_path / "spark-defaults.conf").unlink()
    assert (
        local_java_options({"spark.driver.defaultJavaOptions": "-XX:+UseSerialGC"}, "local") == {}
    )
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xss4m -XX:+UseG1GC")
    assert local_java_options({}, "local[2]") == {}


def test_local_driver_memory_is_a_quarter_of_the_machine_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from deepcvr.transform.spark_runtime import local_driver_memory

    monkeypatch.delenv("SPARK_HOME", raising=False)
    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    monkeypatch.delenv("SPARK_MEM", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 2**30
    expected = f"{min(8, max(1, quarter))}g"
    assert local_driver_memory({}, "local[*]") == {"spark.driver.memory": expected}
    assert local_driver_memory({"spark.driver.memory": "3g"}, "local[2]") == {}
    assert local_driver_memory({}, "yarn") == {}  # the cluster's business
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.memory  5g\n")
    assert local_driver_memory({}, "local[2]") == {}
    (tmp_path / "spark-defaults.conf").unlink()
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "2g")
    assert local_driver_memory({}, "local[2]") == {}


def test_missing_pyspark_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepcvr.transform.spark_engine import spark_session

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    with pytest.raises(ConfigError) as err:
        spark_session({})
    assert str(err.value) == "engine spark needs PySpark: pip install 'deepcvr[spark]'"


def test_missing_java_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from deepcvr.transform.spark_engine import check_java

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="needs Java") as err:
        check_java()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"JAVA_HOME=.* has no bin/java"):
        check_java()


def test_settings_must_be_spark_keys() -> None:
    pytest.importorskip("pyspark")
    from deepcvr.transform.spark_engine import spark_session

    with pytest.raises(ConfigError, match="spark settings must be spark"):
        spark_session({"master": "local[2]"})


def test_locations_keep_uris_and_absolutise_paths(tmp_path: Path) -> None:
    from deepcvr.transform.spark_engine import location

    assert location("s3a://bucket/raw/") == "s3a://bucket/raw"
    assert location("hdfs://nn:8020/x") == "hdfs://nn:8020/x"
    assert location(tmp_path) == tmp_path.resolve().as_uri()
