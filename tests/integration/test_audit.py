"""The audit trail detects any edit of history made directly in the database."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from tests.conftest import _truncate

from loopwright import Client
from loopwright.backends.sql.registry import SqlRegistryStore
from loopwright.governance.audit import acting_as


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlRegistryStore:
    if request.param == "sqlite":
        client = Client(str(tmp_path / "s"))
    else:
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        client = Client(url, artifacts_uri=str(tmp_path / "a"))
    registry = client.registry
    with acting_as("alice"):
        exp = client.tracking.create_experiment("audited")
        run = client.tracking.create_run(exp.id)
        client.tracking.end_run(run.id, "FINISHED")
        registry.create_model("churn", "predicts churn")
        registry.store.set_model_tags("churn", {"team": "risk"})
    return registry.store  # type: ignore[no-any-return]


def _sql(store: SqlRegistryStore, statement: str) -> None:
    engine = create_engine(store.base.url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_untouched_chain_verifies(store: SqlRegistryStore) -> None:
    events = store.audit_events()
    assert [e.action for e in events] == [
        "experiment.create", "run.create", "run.end", "model.create", "model.tags",
    ]  # fmt: skip
    assert {e.actor for e in events} == {"alice"}
    result = store.verify_audit()
    assert result.ok and result.checked == 5 and result.head_hash == events[-1].hash


def test_an_edited_row_is_named(store: SqlRegistryStore) -> None:
    _sql(store, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 3
    assert "altered" in (result.problem or "")


def test_a_deleted_row_is_named(store: SqlRegistryStore) -> None:
    _sql(store, "DELETE FROM audit_events WHERE seq = 2")
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq == 2
    assert "missing" in (result.problem or "")


def test_a_rewritten_chain_does_not_match_its_anchor(store: SqlRegistryStore) -> None:
    head = store.verify_audit()
    _sql(
        store, "DELETE FROM audit_events WHERE seq >= 4"
    )  # truncating the tail keeps a valid chain
    assert store.verify_audit().ok
    result = store.verify_audit(anchor=(head.head_seq, head.head_hash))
    assert not result.ok and result.first_bad_seq == 4


def test_concurrent_writers_keep_one_chain(store: SqlRegistryStore) -> None:
    def tag(i: int) -> None:
        for j in range(10):
            store.set_model_tags("churn", {f"k{i}": str(j)})

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    result = store.verify_audit()
    assert result.ok and result.checked == 5 + 40
