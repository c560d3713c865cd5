"""Server fixtures for the load tests: a scratch database per test module on the real MariaDB and
PostgreSQL, and the generated dataset (server_cases.py holds the cases both servers run).

Admin URLs come from DEEPCVR_TEST_MYSQL / DEEPCVR_TEST_POSTGRES (defaults: the servers on this
machine); an unreachable server skips, or fails under CI=true (tests.servers.unavailable).
"""

from __future__ import annotations

import os
import shutil
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
from deepcvr.schema import MODEL, REJECTS, SAMPLE_FEATURE
from deepcvr.secrets import mask_url
from deepcvr.synth import generate
from deepcvr.transform.engine import TransformOptions, transform
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
