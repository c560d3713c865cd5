"""What the Spark engine needs around the parse: a session, Java, and Hadoop's file system.

Listing, sizes and renames go through Hadoop's FileSystem in the JVM, so the same code works
for local paths, hdfs:// and s3a:// (no Path.glob on the input).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepcvr.errors import ConfigError, DataError
from deepcvr.fsutil import TMP_MARK

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("deepcvr")

DEFAULT_MASTER = "local[*]"
# Set on sessions deepcvr starts (user settings win):
# - one split runs ~50 queries, more than Spark's 100-entry generated-code cache holds, and
#   recompiling cost ~8 s of JIT per run;
# - PySpark records the Python call site of every Column operation in the JVM, for error
#   messages about user-written DataFrame code (none here): about four more JVM round trips
#   per operation. A run at 1 M impressions made 15.8 k round trips with it, 6.3 k without,
#   ~2 s less of the driver between Spark jobs, when the executors wait.
SESSION_DEFAULTS = {
    "spark.sql.codegen.cache.maxEntries": "2000",
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}
# A local session's JVM runs the tasks too: the throughput collector suits that batch work on a
# small machine (G1's concurrent threads and write barriers compete with the task threads). A
# warm run at 1 M impressions, local[2]: 20.0 s with G1 (Java 17's default), 18.0 s with it.
LOCAL_GC = "-XX:+UseParallelGC"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# Where else a collector may be chosen: a second choice stops the JVM ("Multiple garbage
# collectors selected"), so any choice there leaves the user's alone.
OTHER_JAVA_OPTIONS = ("spark.driver.defaultJavaOptions",)
JAVA_OPTION_VARIABLES = ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")
CHOOSES_GC = re.compile(r"-XX:\+Use\w+GC\b")
# Spark's default heap is 1g, and in local mode that JVM holds the executors and their caches
# too: a quarter of the machine's memory instead (1-8g). A warm run at 1 M impressions,
# local[2]: 19.2 s at 1g, 18.0 s at 2g, 16.6 s at 6g (the caches no longer spill).
DRIVER_MEMORY = "spark.driver.memory"
LOCAL_MEMORY_GB = (1, 8)
MIN_PYSPARK = (4, 0)  # is_valid_utf8, make_valid_utf8 and try_cast are Spark 4 functions
NO_PYSPARK = "engine spark needs PySpark: pip install 'deepcvr[spark]'"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def import_pyspark() -> None:
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


def spark_defaults_file() -> dict[str, str]:
    """Settings of spark-defaults.conf ($SPARK_CONF_DIR, else $SPARK_HOME/conf), if any."""
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else ""
    )
    path = Path(conf_dir, "spark-defaults.conf") if conf_dir else None
    if path is None or not path.is_file():
        return {}
    found: dict[str, str] = {}
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            pair = re.match(r"(\S+?)(?:\s*[=:]\s*|\s+)(.*)", line)  # Java properties
            if pair:
                found[pair[1]] = pair[2].strip()
    return found


def local_java_options(
    settings: dict[str, str], master: str, site: dict[str, str] | None = None
) -> dict[str, str]:
    """The driver JVM options a new local session gets: LOCAL_GC before the user's options
    (from `settings`, else `site`, spark-defaults.conf, which a builder setting would replace),
    unless the user chooses a collector anywhere (those options, the driver's default
    options, the JVM's environment variables). Nothing for a cluster master."""
    if not master.startswith("local"):
        return {}
    site = spark_defaults_file() if site is None else site
    given = settings.get(DRIVER_JAVA_OPTIONS) or site.get(DRIVER_JAVA_OPTIONS, "")
    elsewhere = [settings.get(k) or site.get(k, "") for k in OTHER_JAVA_OPTIONS]
    elsewhere += [os.environ.get(name, "") for name in JAVA_OPTION_VARIABLES]
    if any(CHOOSES_GC.search(options) for options in [given, *elsewhere]):
        return {}
    return {DRIVER_JAVA_OPTIONS: f"{LOCAL_GC} {given}".strip()}


def local_driver_memory(
    settings: dict[str, str], master: str, site: dict[str, str] | None = None
) -> dict[str, str]:
    """The heap of a new local session's JVM when the user sets none (settings, `site`
    spark-defaults.conf, SPARK_DRIVER_MEMORY or SPARK_MEM, which Spark's launcher reads): a
    quarter of physical memory, 1-8g."""
    if not master.startswith("local") or any(
        os.environ.get(name) for name in ("SPARK_DRIVER_MEMORY", "SPARK_MEM")
    ):
        return {}
    site = spark_defaults_file() if site is None else site
    if DRIVER_MEMORY in settings or DRIVER_MEMORY in site:
        return {}
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: Spark's own default
        return {}
    low, high = LOCAL_MEMORY_GB
    return {DRIVER_MEMORY: f"{min(high, max(low, physical // 4 // 2**30))}g"}


def spark_session(settings: dict[str, str]) -> tuple[SparkSession, bool]:
    """The active session (runtime settings applied) or a new one; True when we created it.

    `spark.master` defaults to local[*]; spark://, yarn and k8s:// masters pass through, and
    every other spark.* key is set on the builder."""
    import_pyspark()
    from pyspark.sql import SparkSession

    bad = [k for k in settings if not k.startswith("spark.")]
    if bad:
        raise ConfigError(f"spark settings must be spark.* keys, got {', '.join(sorted(bad))}")
    active = SparkSession.getActiveSession()
    if active is not None:  # spark-submit, a notebook or the tests made one: use it
        for key, value in settings.items():
            if key == "spark.master":
                continue
            try:
                active.conf.set(key, value)
            except Exception:  # a static setting cannot change in a running session
                log.warning("spark: %s cannot change in the running session; ignored", key)
        return active, False
    check_java()
    builder = SparkSession.builder.appName("deepcvr-transform")
    merged = SESSION_DEFAULTS | settings
    if "spark.master" in settings:
        builder = builder.master(settings["spark.master"])
    elif not os.environ.get("PYSPARK_GATEWAY_PORT"):  # under spark-submit, its --master rules
        builder = builder.master(DEFAULT_MASTER)
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # else the JVM runs already
        master = settings.get("spark.master", DEFAULT_MASTER)
        site = spark_defaults_file()
        merged |= local_java_options(settings, master, site)
        merged |= local_driver_memory(settings, master, site)
    for key, value in merged.items():
        if key != "spark.master":
            builder = builder.config(key, value)
    try:
        return builder.getOrCreate(), True
    except Exception as err:
        raise ConfigError(f"cannot start Spark: {first_line(err)}") from None


@contextmanager
def session(settings: dict[str, str]) -> Iterator[SparkSession]:
    """A session for one transform; stopped afterwards only if this call started it."""
    spark, owned = spark_session(settings)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


def location(value: str | Path) -> str:
    """A URI for Spark and Hadoop: URIs pass through; a local path becomes file:///absolute."""
    text = str(value)
    if "://" in text:
        return text.rstrip("/")
    return Path(text).expanduser().resolve().as_uri()


def temp_sibling(uri: str) -> str:
    """A hidden temp name beside `uri` (the local engine's sweep and the loaders skip it)."""
    parent, name = uri.rsplit("/", 1)
    return f"{parent}/{TMP_MARK}{name}.{uuid.uuid4().hex[:8]}"


class HadoopFS:
    """Listing, sizes, small writes and renames through Hadoop's FileSystem."""

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

    def parquet_rows(self, uri: str) -> int:
        """Rows of a Parquet directory from the part files' footers (no Spark job)."""
        path, fs = self._fs(uri)
        if not fs.exists(path):
            return 0
        hadoop = self.jvm.org.apache.parquet.hadoop
        total = 0
        for status in fs.listStatus(path):
            name = status.getPath().getName()
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                reader = hadoop.ParquetFileReader.open(
                    hadoop.util.HadoopInputFile.fromStatus(status, self.conf)
                )
                try:
                    total += int(reader.getRecordCount())
                finally:
                    reader.close()
        return total

    def rename(self, src: str, dst: str) -> None:
        path, fs = self._fs(src)
        if not fs.rename(path, self.jvm.org.apache.hadoop.fs.Path(dst)):
            raise DataError(f"{dst}: cannot rename {src} into place")

    def replace_dir(self, tmp: str, final: str) -> None:
        """Swap a finished temp dir into place: renames on local disks and HDFS (a reader sees
        the old or the new split); S3A renames by copying, so there it is not atomic."""
        if self.exists(final):
            old = temp_sibling(final)
            self.rename(final, old)
            self.rename(tmp, final)
            self.delete(old)
        else:
            self.rename(tmp, final)

    def check_writable(self, out: str) -> None:
        probe = f"{out}/{TMP_MARK}write-probe.{uuid.uuid4().hex[:8]}"
        try:
            self.mkdirs(out)
            self.write_text(probe, "")
            self.delete(probe)
        except Exception as err:
            raise DataError(
                f"{out}: output directory is not writable ({first_line(err)}); choose another"
            ) from None
