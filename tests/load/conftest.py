"""Server fixtures for the load tests: a scratch database per test module on the real MariaDB and
PostgreSQL, the generated dataset, and what the MySQL and PostgreSQL tests share.

Admin URLs come from DEEPCVR_TEST_MYSQL / DEEPCVR_TEST_POSTGRES (defaults: the servers on this
machine); an unreachable server skips, or fails under CI=true (tests.servers.unavailable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.engine import make_url

from deepcvr.load.database import load
from deepcvr.load.sql_target import STAGING
from deepcvr.schema import MODEL, REJECTS, SAMPLE_FEATURE
from deepcvr.secrets import mask_url
from deepcvr.synth import generate
from deepcvr.transform.engine import TransformOptions, transform
from tests.helpers import read_raw, rebuild
from tests.servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
MYSQL_ADMIN = os.environ.get("DEEPCVR_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRES_ADMIN = os.environ.get(
    "DEEPCVR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Server:
    """A scratch database on a real server: `url` for the loader, `sql()` to look inside."""

    kind: str  # mysql or postgresql
    url: str
    admin: Any  # an autocommit DB-API connection to the scratch database
    root_url: str  # the admin URL without the database, for URLs of other users/databases
    baseline: tuple[Any, ...] | None = None  # fingerprint after loading both splits

    def ensure_loaded(self, dataset: dict[str, Path]) -> tuple[Any, ...]:
        """Both splits loaded; reuses what the previous test left when it is exactly that."""
        if self.baseline is None or self.fingerprint() != self.baseline:
            load(dataset["both"], self.url)
            self.baseline = self.baseline or self.fingerprint()
        return self.baseline

    def sql(self, statement: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self.admin.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []

    def tables(self) -> set[str]:
        schema = "DATABASE()" if self.kind == "mysql" else "current_schema()"
        rows = self.sql(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = {schema}"
        )
        return {r[0] for r in rows}

    def counts(self) -> dict[str, int]:
        return {t.name: self.sql(f"SELECT count(*) FROM {t.name}")[0][0] for t in MODEL}

    def fingerprint(self) -> tuple[Any, ...]:
        """Row counts plus a checksum of the long tables: equal means unchanged."""
        sums = self.sql(
            "SELECT (SELECT sum(sample_id * 31 + position * 7 + feature_id) FROM sample_feature),"
            " (SELECT sum(value) FROM common_feature), (SELECT sum(click) FROM sample)"
        )[0]
        return (tuple(sorted(self.counts().items())), tuple(str(round(float(x), 6)) for x in sums))

    def foreign_keys(self) -> set[tuple[str, str, str]]:
        """(table, referenced table, columns) of every foreign key in information_schema."""
        if self.kind == "mysql":
            rows = self.sql(
                "SELECT table_name, referenced_table_name, "
                "group_concat(column_name ORDER BY ordinal_position) "
                "FROM information_schema.key_column_usage WHERE table_schema = DATABASE() "
                "AND referenced_table_name IS NOT NULL GROUP BY constraint_name, table_name, "
                "referenced_table_name"
            )
        else:
            rows = self.sql(
                "SELECT tc.table_name, ccu.table_name, string_agg(DISTINCT kcu.column_name, ',') "
                "FROM information_schema.table_constraints tc "
                "JOIN information_schema.key_column_usage kcu "
                "USING (constraint_schema, constraint_name) "
                "JOIN information_schema.constraint_column_usage ccu "
                "USING (constraint_schema, constraint_name) "
                "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema() "
                "GROUP BY tc.constraint_name, tc.table_name, ccu.table_name"
            )
        return {(t, ref, ",".join(sorted(cols.split(",")))) for t, ref, cols in rows}

    def other_url(self, user: str, password: str = "", database: str | None = None) -> str:
        url = make_url(self.url).set(username=user, password=password or None)
        return url.set(database=database or url.database).render_as_string(hide_password=False)


def _admin_connect(kind: str, url: str, database: str | None = None) -> Any:
    u = make_url(url)
    if kind == "mysql":
        import pymysql

        return pymysql.connect(
            host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
            database=database or u.database, autocommit=True, connect_timeout=3,
        )  # fmt: skip
    import psycopg

    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password,
        dbname=database or u.database, autocommit=True, connect_timeout=3,
    )  # fmt: skip


def _scratch(kind: str, admin_url: str) -> Iterator[Server]:
    try:
        root = _admin_connect(kind, admin_url)
    except Exception as err:
        unavailable(
            f"{kind} server unreachable at {mask_url(admin_url)} ({err})".replace("\n", " ")
        )
    name = f"deepcvr_t_{uuid.uuid4().hex[:10]}"
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    admin = _admin_connect(kind, admin_url, name)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield Server(kind, url, admin, admin_url)
    finally:
        admin.close()
        with root.cursor() as cur:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            cur.execute(f"DROP DATABASE IF EXISTS {name}{force}")
        root.close()


@pytest.fixture(scope="module")
def mysql_server() -> Iterator[Server]:
    yield from _scratch("mysql", MYSQL_ADMIN)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Server]:
    yield from _scratch("postgresql", POSTGRES_ADMIN)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Raw and transformed data, both splits (2,000 impressions each), plus one-split copies
    and a copy whose sample_feature has a row without its sample."""
    raw = tmp_path_factory.mktemp("raw")
    for split, seed in (("train", 3), ("test", 4)):
        generate(raw / split, 2000, split, seed=seed)
    base = tmp_path_factory.mktemp("pq")
    both = base / "both"
    transform(raw, both, None, TransformOptions(workers=2, chunk_bytes=200_000))
    train, test, orphan = base / "train", base / "test", base / "orphan"
    shutil.copytree(both, train, ignore=shutil.ignore_patterns("test"))
    shutil.copytree(both, test, ignore=shutil.ignore_patterns("train"))
    shutil.copytree(both, orphan)
    feature_id = pq.read_table(both / "train" / "feature").column("feature_id")[0].as_py()
    row = {"split": ["train"], "sample_id": [987_654_321], "position": [0]}
    row |= {"feature_id": [feature_id], "value": [1.0]}  # a known feature, an unknown sample
    part = orphan / "train" / "sample_feature" / "part-s99999.parquet"
    pq.write_table(pa.table(row, schema=SAMPLE_FEATURE.arrow_schema()), part)
    tricky = base / "tricky"
    shutil.copytree(both, tricky)
    (tricky / "test" / "rejects").mkdir(exist_ok=True)
    pq.write_table(
        pa.table(TRICKY_REJECTS, schema=REJECTS.arrow_schema()),
        tricky / "test" / "rejects" / "part-s99999.parquet",
    )
    return {"raw": raw, "both": both, "train": train, "test": test, "orphan": orphan} | {
        "tricky": tricky
    }


# Rejects with what the TSV encoding must escape, NULLs in every nullable column, non-ASCII.
TRICKY_TEXT = ["tab\there", "new\nline\r\n", "back\\slash \\N", "\\N", 'naïve ✓ "q" ,;']
TRICKY_REJECTS = {
    "split": ["test"] * 5,
    "file": ["sample_skeleton_test.csv"] * 5,
    "line": [1, 2, 3, 4, 5],
    "byte_offset": [0, 10, 20, 30, 40],
    "position": [None, 3, None, 0, 7],
    "reason": ["bad_value"] * 5,
    "action": ["rejected"] * 5,
    "structures": [1] * 5,
    "detail": [None, "x", "", None, "y"],
    "raw": TRICKY_TEXT,
}


class _Rebuilder:
    """tests.helpers.rebuild speaks DuckDB; this adapts its one query to a DB-API server."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def execute(self, sql: str, params: list[Any]) -> _Rebuilder:
        if self.server.kind == "mysql":
            sql = sql.replace("AS VARCHAR", "AS CHAR")
        self.rows = self.server.sql(sql.replace("?", "%s"), tuple(params))
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


# --- cases both servers run -------------------------------------------------------------------


def check_end_to_end(server: Server, dataset: dict[str, Path]) -> None:
    summary = load(dataset["both"], server.url)
    assert {c["ok"] for c in summary["checks"]} == {True}
    assert all(
        info["keys"] == "enforced" for n, info in summary["tables"].items() if n != "rejects"
    )
    for t in MODEL:
        assert server.counts()[t.name] == summary["tables"][t.name]["rows"]
    con = _Rebuilder(server)
    for split in ("train", "test"):
        for kind, name in (("skeleton", "sample_skeleton"), ("common", "common_features")):
            lines = read_raw(dataset["raw"] / split / f"{name}_{split}.csv", kind)
            assert rebuild(con, split, kind) == {k: v for k, (_, v) in lines.items()}  # type: ignore[arg-type]
    fks = server.foreign_keys()
    assert ("sample_feature", "sample", "sample_id,split") in fks
    assert ("sample_feature", "feature", "feature_id") in fks
    assert ("common_feature", "common_feature_group", "common_feature_index,split") in fks
    assert ("common_feature", "feature", "feature_id") in fks
    assert ("sample", "common_feature_group", "common_feature_index,split") in fks
    assert ("feature", "field", "field_id") in fks
    assert len(fks) == 6
    assert not [t for t in server.tables() if "__" in t]
    keys = server.sql("SELECT count(*) FROM deepcvr_keys WHERE violations = 0")[0][0]
    assert keys == len(MODEL) + sum(len(t.foreign_keys) for t in MODEL)
    server.baseline = server.fingerprint()


def check_idempotent_and_splits(server: Server, dataset: dict[str, Path]) -> None:
    before = server.ensure_loaded(dataset)
    twice = load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert {t.name: twice["tables"][t.name]["rows"] for t in MODEL} == server.counts()
    load(dataset["train"], server.url)  # replaces train, keeps test
    load(dataset["test"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if "__" in t]


def check_failure_is_atomic(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure half way through the biggest table leaves the live tables as they were."""
    from deepcvr.load import tsv

    before = server.ensure_loaded(dataset)
    half = server.counts()["sample_feature"] // 2
    real = tsv.to_tsv
    seen = {"sample_feature": 0}

    def failing(batch: pa.RecordBatch) -> bytes:
        if batch.schema.names == SAMPLE_FEATURE.column_names:
            seen["sample_feature"] += batch.num_rows
            if seen["sample_feature"] > half:
                raise OSError("disk vanished (injected)")
        return real(batch)

    monkeypatch.setattr(tsv, "to_tsv", failing)
    monkeypatch.setattr(tsv, "BATCH_ROWS", 4096)
    with pytest.raises(OSError, match="injected"):
        load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if STAGING in t or "__old_" in t]


def check_foreign_key_violation(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import DataError

    before = server.ensure_loaded(dataset)
    with pytest.raises(DataError, match=r"sample_feature.*(foreign key|violates)"):
        load(dataset["orphan"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if "__" in t]


def check_shape_and_replace(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    server.ensure_loaded(dataset)
    server.sql("ALTER TABLE rejects ADD COLUMN extra INT")
    before = server.fingerprint()
    with pytest.raises(TargetError, match=r"table rejects exists with another shape.*--replace"):
        load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert "extra" in _columns(server, "rejects")
    load(dataset["both"], server.url, replace=True)
    assert "extra" not in _columns(server, "rejects")


def _columns(server: Server, table: str) -> list[str]:
    schema = "DATABASE()" if server.kind == "mysql" else "current_schema()"
    rows = server.sql(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = {schema} AND table_name = %s",
        (table,),
    )
    return [r[0] for r in rows]


def check_stale_staging_is_dropped(server: Server, dataset: dict[str, Path]) -> None:
    """Tables a killed load left behind go on the next load."""
    server.sql("CREATE TABLE sample__staging_deadbeef (x INT)")
    server.sql("CREATE TABLE feature__old_deadbeef (x INT)")
    server.sql("CREATE TABLE mine__staging_keep (x INT)")  # not ours: kept
    load(dataset["both"], server.url)
    assert {t for t in server.tables() if "__" in t} == {"mine__staging_keep"}
    server.sql("DROP TABLE mine__staging_keep")


def check_unreachable(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    url = make_url(server.url).set(port=1).render_as_string(hide_password=False)
    with pytest.raises(TargetError, match=r"cannot connect to 127.0.0.1:1 within 10 s"):
        load(dataset["both"], url)


def check_silent_server_times_out(
    server: Server, dataset: dict[str, Path], module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that accepts TCP but never answers fails within the connect timeout."""
    import socket
    import time

    from deepcvr.errors import TargetError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    monkeypatch.setattr(module, "CONNECT_TIMEOUT", 1)
    url = make_url(server.url).set(port=port).render_as_string(hide_password=False)
    start = time.monotonic()
    try:
        with pytest.raises(TargetError, match="cannot connect"):
            load(dataset["both"], url)
    finally:
        listener.close()
    assert time.monotonic() - start < 5


def check_unknown_database(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    url = make_url(server.url).set(database="deepcvr_no_such_db").render_as_string(False)
    with pytest.raises(TargetError, match="database 'deepcvr_no_such_db' does not exist"):
        load(dataset["both"], url)


def check_missing_parquet_table(server: Server, dataset: dict[str, Path], tmp_path: Path) -> None:
    from deepcvr.errors import DataError

    before = server.ensure_loaded(dataset)
    broken = tmp_path / "broken"
    shutil.copytree(dataset["both"], broken)
    shutil.rmtree(broken / "test" / "sample")
    with pytest.raises(DataError, match="table sample is missing"):
        load(broken, server.url)
    assert server.fingerprint() == before


def check_rejects_round_trip(server: Server, dataset: dict[str, Path]) -> None:
    """Escapes, NULLs and non-ASCII text come back exactly; then the baseline again."""
    load(dataset["tricky"], server.url)
    rows = server.sql("SELECT line, position, detail, raw FROM rejects ORDER BY line")
    expected = zip(
        TRICKY_REJECTS["line"],
        TRICKY_REJECTS["position"],
        TRICKY_REJECTS["detail"],
        TRICKY_TEXT,
        strict=True,
    )
    assert [tuple(r) for r in rows] == list(expected)
    load(dataset["both"], server.url)
    assert server.sql("SELECT count(*) FROM rejects")[0][0] == 0


def check_summary(server: Server) -> None:
    from deepcvr.quality.summary import summarize

    summary = summarize(server.url)
    assert summary["rows"]["sample"] == server.counts()["sample"]
    assert set(summary["splits"]) == {"train", "test"}
    assert summary["splits"]["train"]["impressions"] == 2000
    assert isinstance(summary["splits"]["train"]["ctr"], float)


def check_demo(server: Server, tmp_path: Path) -> None:
    """The demo pipeline, unchanged, through the real CLI, into `server`."""
    from deepcvr.metadata import MetadataStore, store_path

    cmd = [sys.executable, "-m", "deepcvr", "run", str(ROOT / "pipelines" / "demo.yaml")]
    cmd += ["--set", f"target={server.url}", "--set", "samples=2000"]
    cmd += ["--set", f"workspace={tmp_path / 'ws'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    store = MetadataStore(store_path(tmp_path / "ws"), create=False)
    run = store.latest_run()
    assert run is not None, result.stderr[-2000:]
    tasks = {t["task"]: t for t in store.task_runs(run["run_id"])}
    for task in ("load", "summary"):
        assert tasks[task]["status"] == "succeeded", (task, tasks[task]["error"])
    checks = store.records(run["run_id"], "load_check")
    assert checks and all(c["value"]["ok"] for c in checks)
    assert server.counts()["sample"] == 4000
    failed = {name: t["error"] for name, t in tasks.items() if t["status"] != "succeeded"}
    assert not failed, failed
    assert result.returncode == 0, result.stderr[-2000:]
    for task in ("checks", "report"):  # the quality ops read the server's tables too
        assert tasks[task]["status"] == "succeeded"
    assert (tmp_path / "ws" / "report.html").stat().st_size > 10_000
