"""Schema management: migrations match the tables, outdated stores are refused, upgrade fixes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loopwright import Client, SchemaOutdated
from loopwright.backends.sql import migrate
from loopwright.backends.sql.schema import metadata
from loopwright.backends.sql.store import SqlTrackingStore


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'lw.db'}"
    from sqlalchemy import create_engine, text

    url = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    with engine.begin() as conn:  # this test wants an empty database
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migrations_produce_exactly_the_declared_schema(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = SqlTrackingStore(_store_url(kind, tmp_path, request))
    assert store.upgrade("0001") == (None, "0001")
    assert store.upgrade() == ("0001", migrate.head_revision())
    assert store.upgrade() == (migrate.head_revision(), migrate.head_revision())  # idempotent
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diffs == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_outdated_store_is_refused_until_upgraded(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _store_url(kind, tmp_path, request)
    SqlTrackingStore(url).upgrade("0001")
    client = Client(url, artifacts_uri=str(tmp_path / "a"))
    with pytest.raises(SchemaOutdated) as info:
        client.list_experiments()
    assert "loopwright db upgrade" in info.value.message
    assert info.value.details == {"current": "0001", "head": migrate.head_revision()}
    store = SqlTrackingStore(url)
    store.upgrade()
    assert Client(url, artifacts_uri=str(tmp_path / "a")).list_experiments() == []
    with store.engine.connect() as conn:  # the upgrade left the planner statistics fresh
        if kind == "postgres":  # reltuples is -1 for a table never analysed
            never = "SELECT relname FROM pg_class WHERE relname = 'leases' AND reltuples < 0"
            assert conn.exec_driver_sql(never).all() == []
        else:
            stat = "SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'"
            assert conn.exec_driver_sql(stat).all() == [("sqlite_stat1",)]
    store.close()


def test_a_new_embedded_store_needs_no_setup(tmp_path: Path) -> None:
    client = Client(str(tmp_path / "fresh"))
    assert client.create_experiment("x").name == "x"
    assert (tmp_path / "fresh" / "loopwright.db").exists()


def _open_and_write(path: str, i: int) -> str:
    client = Client(path)
    return client.get_or_create_experiment("shared").id + f":{i}"


def test_processes_opening_a_new_store_at_once_agree(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_open_and_write, [(str(tmp_path / "s"), i) for i in range(4)])
    assert len({r.split(":")[0] for r in results}) == 1
    assert [e.name for e in Client(str(tmp_path / "s")).list_experiments()] == ["shared"]
