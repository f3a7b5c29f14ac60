"""The registry contract: versions, safe loading, aliases, gates, approvals and the audit trail,
on SQLite, PostgreSQL and REST alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loopwright import (
    ApprovalRequired,
    Client,
    GateFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)

POLICY = """
dataset: holdout
target: target
thresholds:
  roc_auc: {min: 0.9}
protected_aliases: [champion]
required_approvals: 1
"""


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame.iloc[:400].reset_index(drop=True), frame.iloc[400:].reset_index(drop=True)


def as_user(client: Client, user: str) -> Client:
    settings = dataclasses.replace(client.settings, user=user)
    other = Client(settings=settings, http_client=client._http_client)
    if hasattr(client, "server_artifacts"):
        other.server_artifacts = client.server_artifacts  # type: ignore[attr-defined]
    return other


def _train(client: Client, train: pd.DataFrame, good: bool = True) -> str:
    X, y = train.drop(columns="target"), train["target"]
    model = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)) if good
             else DummyClassifier(strategy="prior"))  # fmt: skip
    with client.start_run("cancer", monitor_resources=False) as run:
        run.log_dataset(train, name="train")
        model.fit(X, y)
        run.log_metric("train_accuracy", float(model.score(X, y)))
        run.log_model(model, input_example=X.head(5))
    return run.id


def test_register_and_load_every_way(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    train, test = data
    run_id = _train(client, train)
    v1 = client.registry.register("cancer", run_id, description="first")
    v2 = client.registry.register("cancer", _train(client, train))
    assert (v1.version, v2.version) == (1, 2)
    assert v1.flavor == "sklearn" and v1.run_id == run_id
    assert v1.metrics["train_accuracy"] > 0.9
    assert [c["name"] for c in v1.signature["inputs"]][:2] == ["mean_radius", "mean_texture"]
    client.registry.set_alias("cancer", "challenger", 1)
    X = test.drop(columns="target")
    expected = client.registry.load("cancer/1").predict(X)
    for uri in ("cancer@challenger", "models:/cancer/1"):
        np.testing.assert_array_equal(client.registry.load(uri).predict(X), expected)
    assert client.registry.resolve("cancer/latest").version == 2
    proba = client.registry.load("cancer/1").predict_proba(X)
    assert proba.shape == (len(X), 2)


def test_unknown_and_malformed_references(client: Client) -> None:
    with pytest.raises(NotFound):
        client.registry.resolve("nope/1")
    with pytest.raises(InvalidInput) as info:
        client.registry.resolve("no version")
    assert info.value.field == "uri"
    client.registry.create_model("empty")
    with pytest.raises(NotFound):
        client.registry.resolve("empty@champion")
    with pytest.raises(InvalidInput):
        client.registry.set_alias("empty", "latest", 1)


def test_tampered_model_file_fails_to_load(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    v = client.registry.register("cancer", _train(client, data[0]))
    store = getattr(client, "server_artifacts", None) or client.artifacts
    path = Path(store.blob_path(v.digest))  # type: ignore[attr-defined]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        client.registry.load(v.uri)


def test_search_models_and_versions(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    run_id = _train(client, data[0])
    client.registry.create_model("fraud", tags={"team": "risk"})
    client.registry.create_model("churn", tags={"team": "growth"})
    client.registry.register("fraud", run_id, tags={"stage": "candidate"})
    client.registry.set_alias("fraud", "shadow", 1)
    assert [m.name for m in client.registry.search_models(tag=("team", "risk"))] == ["fraud"]
    assert [m.name for m in client.registry.search_models(alias="shadow")] == ["fraud"]
    assert [m.name for m in client.registry.search_models(name_like="ch%")] == ["churn"]
    found = client.registry.search_versions(tag=("stage", "candidate"))
    assert [(v.model, v.version) for v in found] == [("fraud", 1)]
    digest = client.get_run(run_id).inputs[0].digest
    assert [v.uri for v in client.registry.search_versions(dataset_digest=digest)] == ["fraud/1"]


def _governed(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    train, test = data
    client.registry.register("cancer", _train(client, train, good=True))
    client.registry.register("cancer", _train(client, train, good=False))
    client.registry.register_dataset(test, "holdout")
    client.registry.set_policy("cancer", POLICY)


def test_gates_block_a_bad_model_and_name_each_failed_check(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    _governed(client, data)
    good = client.registry.evaluate("cancer/1")
    bad = client.registry.evaluate("cancer/2")
    assert good.passed and not bad.passed
    assert good.dataset_name == "holdout"
    with pytest.raises(GateFailed) as info:
        client.registry.set_alias("cancer", "champion", 2)
    assert "roc_auc" in info.value.message
    failed = info.value.details["failed_checks"]
    assert failed and failed[0]["measured"] == pytest.approx(0.5) and failed[0]["bound"] == 0.9


def test_a_version_without_evaluation_cannot_be_promoted(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    _governed(client, data)
    with pytest.raises(GateFailed, match="no evaluation"):
        client.registry.set_alias("cancer", "champion", 1)
    client.registry.set_alias("cancer", "staging", 2)  # unprotected aliases move freely


def test_approvals_come_from_someone_else(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    _governed(client, data)
    client.registry.evaluate("cancer/1")
    alice, bob = as_user(client, "alice"), as_user(client, "bob")
    with pytest.raises(ApprovalRequired):
        alice.registry.set_alias("cancer", "champion", 1)
    request = alice.registry.request_alias("cancer", "champion", 1, "beats baseline")
    with pytest.raises(PermissionDenied):
        alice.registry.decide(request.id, "APPROVE", "lgtm")
    approved = bob.registry.decide(request.id, "APPROVE", "checked the report")
    assert approved.status.value == "APPROVED" and approved.approvals == 1
    moved = alice.registry.set_alias("cancer", "champion", 1, reason="quarterly refresh")
    assert "champion" in moved.aliases
    assert alice.registry.list_requests("cancer")[0].status.value == "APPLIED"
    events = client.registry.store.audit_events() if hasattr(client.registry, "store") else None
    if events is not None:
        promote = [e for e in events if e.action == "alias.promote"][-1]
        assert promote.actor == "alice" and promote.after["approval_request"] == request.id


def test_admin_override_is_recorded(client: Client, data) -> None:  # type: ignore[no-untyped-def]
    _governed(client, data)
    client.registry.evaluate("cancer/2")
    alice, bob = as_user(client, "alice"), as_user(client, "bob")
    request = alice.registry.request_alias("cancer", "champion", 2, "urgent")
    bob.registry.decide(request.id, "APPROVE", "ok")
    with pytest.raises(GateFailed):
        alice.registry.set_alias("cancer", "champion", 2)
    alice.registry.set_alias("cancer", "champion", 2, override="incident 4711: rollback target")
    assert client.registry.resolve("cancer@champion").version == 2
