"""PostgreSQL target on the real server: bulk, atomic, idempotent, verified; bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepcvr.errors import TargetError
from deepcvr.load import postgres_target
from deepcvr.load.database import load
from tests.load import server_cases as cases
from tests.load.conftest import Server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def server(postgres_server: Server) -> Server:
    return postgres_server


@pytest.fixture
def reader(server: Server) -> Iterator[str]:
    """A scratch role that may connect and SELECT, nothing more."""
    name = f"deepcvr_u_{uuid.uuid4().hex[:8]}"
    database = server.sql("SELECT current_database()")[0][0]
    server.sql(f"CREATE ROLE {name} LOGIN")
    server.sql(f"GRANT CONNECT ON DATABASE {database} TO {name}")
    server.sql(f"GRANT USAGE ON SCHEMA public TO {name}")
    server.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")
    try:
        yield name
    finally:
        server.sql(f"DROP OWNED BY {name}")
        server.sql(f"DROP ROLE {name}")


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


def test_keys_keep_their_usual_names(server: Server, dataset: dict[str, Path]) -> None:
    """After swaps the constraints carry the final names, and they are enforced."""
    import psycopg

    server.ensure_loaded(dataset)
    load(dataset["both"], server.url)
    names = {
        r[0] for r in server.sql("SELECT conname FROM pg_constraint WHERE contype IN ('p', 'f')")
    }
    assert {"sample_feature_pkey", "fk_sample_feature_split_sample_id", "feature_pkey"} <= names
    assert not [n for n in names if "__" in n]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        server.sql("INSERT INTO sample_feature VALUES ('train', 987654321, 0, 1, 1.0)")


def test_unknown_user_and_masked_password(server: Server, dataset: dict[str, Path]) -> None:
    # This server trusts local connections, so a wrong password cannot fail here; an unknown
    # role is the authentication failure it can show. The password must never be printed.
    url = server.other_url("deepcvr_no_such_role", "hunter2-secret")
    with pytest.raises(TargetError, match='role "deepcvr_no_such_role" does not exist') as err:
        load(dataset["both"], url)
    assert "hunter2-secret" not in str(err.value)
    assert "***" in str(err.value)


def test_no_privilege_to_create(server: Server, dataset: dict[str, Path], reader: str) -> None:
    before = server.ensure_loaded(dataset)
    with pytest.raises(TargetError, match=r"lacks a privilege.*permission denied"):
        load(dataset["both"], server.other_url(reader))
    assert server.fingerprint() == before


def test_unreachable_host(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_unreachable(server, dataset)


def test_silent_host_times_out(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases.check_silent_server_times_out(server, dataset, postgres_target, monkeypatch)


def test_unknown_database(server: Server, dataset: dict[str, Path]) -> None:
    cases.check_unknown_database(server, dataset)


def test_missing_parquet_table(server: Server, dataset: dict[str, Path], tmp_path: Path) -> None:
    cases.check_missing_parquet_table(server, dataset, tmp_path)


def test_plain_postgresql_scheme(server: Server, dataset: dict[str, Path]) -> None:
    before = server.ensure_loaded(dataset)
    load(dataset["both"], server.url.replace("postgresql+psycopg://", "postgresql://"))
    assert server.fingerprint() == before


def test_demo_pipeline_through_the_cli(server: Server, tmp_path: Path) -> None:
    cases.check_demo(server, tmp_path)
