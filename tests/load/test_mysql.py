"""MySQL/MariaDB target on the real server: bulk, atomic, idempotent, verified; bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from deepcvr.errors import TargetError
from deepcvr.load import mysql_target
from deepcvr.load.database import load
from tests.load import server_cases as cases
from tests.load.conftest import Server

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def server(mysql_server: Server) -> Server:
    return mysql_server


@pytest.fixture
def user(server: Server) -> Iterator[tuple[str, str]]:
    """A scratch login (name, password) with SELECT only on the scratch database."""
    name, password = f"deepcvr_u_{uuid.uuid4().hex[:8]}", "s3cret-pw"
    server.sql(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    database = server.sql("SELECT DATABASE()")[0][0]
    server.sql(f"GRANT SELECT ON {database}.* TO '{name}'@'%'")
    try:
        yield name, password
    finally:
        server.sql(f"DROP USER '{name}'@'%'")


def test_end_to_end(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_end_to_end(server, dataset)
    cases.check_summary(server)


def test_rejects_text_round_trips(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_rejects_round_trip(server, dataset)


def test_idempotent_and_train_then_test(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_idempotent_and_splits(server, dataset)


def test_failure_half_way_is_atomic(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases.check_failure_is_atomic(server, dataset, monkeypatch)


def test_foreign_key_violation_changes_nothing(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_foreign_key_violation(server, dataset)


def test_other_shape_needs_replace(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_shape_and_replace(server, dataset)


def test_stale_staging_tables_are_dropped(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_stale_staging_is_dropped(server, dataset)


def test_foreign_keys_follow_the_rename(server: Server, dataset: dict[str, Path]) -> None:
    """InnoDB keeps foreign keys with renamed tables: after two swaps every key points at the
    final tables, the old ones are gone, and the keys are enforced."""
    load(dataset["both"], server.url)
    load(dataset["both"], server.url)
    refs = server.sql(
        "SELECT table_name, referenced_table_name FROM information_schema.referential_constraints "
        "WHERE constraint_schema = DATABASE()"
    )
    assert len(refs) == 6
    assert all("__" not in t and "__" not in r for t, r in refs)
    assert not [t for t in server.tables() if "__" in t]
    server.sql("SET SESSION foreign_key_checks = 1")
    with pytest.raises(pymysql.err.IntegrityError, match="foreign key constraint fails"):
        server.sql("INSERT INTO sample_feature VALUES ('train', 987654321, 0, 1, 1.0)")


def test_local_infile_disabled_on_the_server(server: Server, dataset: dict[str, Path]) -> None:
    before = server.ensure_loaded(dataset)
    previous = server.sql("SELECT @@GLOBAL.local_infile")[0][0]
    server.sql("SET GLOBAL local_infile = 0")  # back within milliseconds: the load fails first
    try:
        with pytest.raises(TargetError, match=r"refuses LOAD DATA LOCAL INFILE.*local_infile=1"):
            load(dataset["train"], server.url)
    finally:
        server.sql(f"SET GLOBAL local_infile = {int(previous)}")
    assert server.fingerprint() == before


def test_local_infile_refused_falls_back_to_insert_when_allowed(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal the server check did not predict (here: the client side) is the same one-line
    error, and --allow-slow-insert loads with INSERT batches instead. The server's global
    setting is left alone: other loads may be running against it."""
    before = server.ensure_loaded(dataset)
    connect = pymysql.connect
    monkeypatch.setattr(
        mysql_target.pymysql, "connect", lambda **kw: connect(**{**kw, "local_infile": False})
    )
    with pytest.raises(TargetError, match=r"refuses LOAD DATA LOCAL INFILE.*--allow-slow-insert"):
        load(dataset["train"], server.url)
    assert server.fingerprint() == before
    summary = load(dataset["train"], server.url, allow_slow_insert=True)
    assert summary["bulk_path"].startswith("multi-row INSERT")
    assert server.fingerprint() == before


def test_wrong_password(server: Server, dataset: dict[str, Path], user: tuple[str, str]) -> None:
    url = server.other_url(user[0], "not-the-password")
    with pytest.raises(TargetError, match=r"access denied .* wrong user or password") as err:
        load(dataset["both"], url)
    assert "not-the-password" not in str(err.value)


def test_no_privilege_to_create(
    server: Server, dataset: dict[str, Path], user: tuple[str, str]
) -> None:
    before = server.ensure_loaded(dataset)
    with pytest.raises(TargetError, match=r"lacks a privilege.*CREATE command denied") as err:
        load(dataset["both"], server.other_url(*user))
    assert user[1] not in str(err.value)
    assert server.fingerprint() == before


def test_unreachable_host(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_unreachable(server, dataset)


def test_silent_host_times_out(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases.check_silent_server_times_out(server, dataset, mysql_target, monkeypatch)


def test_unknown_database(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_unknown_database(server, dataset)


def test_missing_parquet_table(server: Server, dataset: dict[str, Path], tmp_path: Path) -> None:
    cases.check_missing_parquet_table(server, dataset, tmp_path)


def test_demo_pipeline_through_the_cli(server: Server, tmp_path: Path) -> None:
    cases.check_demo(server, tmp_path)
