"""The registry's HTTP edge over a real SQLite store, in-process: routes, error shapes, who acts.

The rules themselves are the registry contract suite's business (it runs on REST too); here we
check what only the edge can get wrong: each route's permission declaration, names that need
percent-encoding, the status and body of each refusal, the ``X-Loopwright-User`` attribution,
and :class:`RestRegistry` round trips (Parquet up, verified model bytes down).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from http_helpers import error_of
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from loopwright.backends.rest import RestArtifactStore, RestTrackingStore
from loopwright.backends.rest.registry import USER_HEADER, RestRegistry
from loopwright.errors import ApprovalRequired, GateFailed, NotFound, PermissionDenied
from loopwright.registry.flavors import SKLEARN_FILE_NAME, save_sklearn
from loopwright.server import auth
from loopwright.server.routers import registry as registry_routes
from loopwright.tracking.entities import ArtifactRef, Metric

API = "/api/v1"
NAME = "churn model v1.2"  # a space and dots: must survive the trip through the URL path
POLICY = """
dataset: holdout
target: y
thresholds:
  roc_auc: {min: 0.9}
protected_aliases: [champion]
required_approvals: 1
"""


def as_user(user: str) -> dict[str, str]:
    return {USER_HEADER: user}


def model_url(*parts: object) -> str:
    return "/".join([f"{API}/models", *(httpx.URL(f"/{p}").raw_path.decode()[1:] for p in parts)])


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A linearly separable problem: a logistic regression scores ~1.0, a dummy 0.5."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    X["y"] = (X["a"] + 0.3 * X["b"] > 0).astype(int)
    return X.iloc[:200].reset_index(drop=True), X.iloc[200:].reset_index(drop=True)


@pytest.fixture
def registry(rest: RestTrackingStore, rest_artifacts: RestArtifactStore) -> RestRegistry:
    return RestRegistry(rest, rest_artifacts, user="alice")


def logged_run(rest: RestTrackingStore, artifacts: RestArtifactStore, model: Any) -> str:
    """A run that logged ``model`` the way ``run.log_model`` does, plus one metric."""
    run = rest.create_run(rest.create_experiment(f"exp-{uuid.uuid4().hex[:8]}").id, name="train")
    data = save_sklearn(model)
    digest = artifacts.put_bytes(data)
    rest.log_artifacts(run.id, [ArtifactRef(f"model/{SKLEARN_FILE_NAME}", digest, len(data))])
    rest.log_batch(run.id, [Metric("train_accuracy", 0.97, 0, int(time.time() * 1000))])
    return run.id


def fitted(train: pd.DataFrame, good: bool = True) -> Any:
    model = LogisticRegression() if good else DummyClassifier(strategy="prior")
    return model.fit(train[["a", "b"]], train["y"])


@pytest.fixture
def governed(
    registry: RestRegistry,
    rest: RestTrackingStore,
    rest_artifacts: RestArtifactStore,
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> RestRegistry:
    """Version 1 good, version 2 a dummy; a policy protecting champion; holdout registered."""
    train, test = frames
    for good in (True, False):
        registry.register(NAME, logged_run(rest, rest_artifacts, fitted(train, good)))
    registry.register_dataset(test, "holdout")
    registry.set_policy(NAME, POLICY)
    return registry


# -- the routes --------------------------------------------------------------------------------


def test_every_registry_route_declares_its_permission(app: Any) -> None:
    published = app.openapi()["paths"]
    for route in registry_routes.router.routes:
        assert API + route.path in published, route.path  # the app mounts the router
        permission = auth.route_permission([d.call for d in route.dependant.dependencies])
        assert permission is not None, route.path
        if "{name}" in route.path:
            assert permission[1] == "name", route.path  # roles granted per model apply here
        if "{request_id}" in route.path:
            assert permission[1] == "request_id", route.path  # the request's model


def test_the_client_sends_the_header_the_server_reads() -> None:
    assert USER_HEADER == auth.USER_HEADER


def test_names_with_spaces_and_dots_round_trip(
    registry: RestRegistry, client: httpx.Client
) -> None:
    created = registry.create_model(NAME, "predicts churn", {"team": "growth"})
    assert created.name == NAME and created.created_by == "alice"
    assert client.get(model_url(NAME)).json()["name"] == NAME
    updated = registry.update_model(NAME, description="v2", tags={"tier": "gold"})
    assert updated.description == "v2" and updated.tags == {"team": "growth", "tier": "gold"}
    assert [m.name for m in registry.search_models(tag=("tier", "gold"))] == [NAME]
    assert [m.name for m in registry.search_models(name_like="churn%")] == [NAME]


def test_unknown_model_is_a_404(client: httpx.Client, registry: RestRegistry) -> None:
    error = error_of(client.get(model_url("nope")), 404, "NOT_FOUND")
    assert error["field"] == "model"
    with pytest.raises(NotFound):
        registry.resolve("nope@champion")


def test_malformed_query_values_name_the_field(client: httpx.Client) -> None:
    assert (
        error_of(client.get(f"{API}/models", params={"tag": "x"}), 400, "INVALID_INPUT")["field"]
        == "tag"
    )
    bad_status = client.get(f"{API}/requests", params={"status": "MAYBE"})
    assert error_of(bad_status, 400, "INVALID_INPUT")["field"] == "status"
    bad_anchor = client.get(f"{API}/audit/verify", params={"anchor": "12"})
    assert error_of(bad_anchor, 400, "INVALID_INPUT")["field"] == "anchor"


def test_register_resolve_and_load_verified_bytes(
    registry: RestRegistry,
    rest: RestTrackingStore,
    rest_artifacts: RestArtifactStore,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    client: httpx.Client,
) -> None:
    train, test = frames
    run_id = logged_run(rest, rest_artifacts, fitted(train))
    response = client.post(model_url(NAME, "versions"), json={"run_id": run_id})
    assert response.status_code == 201, response.text
    assert response.json()["flavor"] == "sklearn"
    assert response.json()["metrics"] == {"train_accuracy": 0.97}
    registry.set_alias(NAME, "challenger", 1, reason="first")
    for ref in ("1", "latest", "challenger"):
        assert client.get(model_url(NAME, "resolve"), params={"ref": ref}).json()["version"] == 1
    loaded = registry.load(f"{NAME}@challenger")
    expected = fitted(train).predict(test[["a", "b"]])
    np.testing.assert_array_equal(loaded.predict(test[["a", "b"]]), expected)
    assert [v.uri for v in registry.search_versions(run_id=run_id)] == [f"{NAME}/1"]
    tagged = registry.set_version_tags(NAME, 1, {"stage": "candidate"})
    assert tagged.tags == {"stage": "candidate"}


def test_a_bad_alias_name_is_a_400(governed: RestRegistry, client: httpx.Client) -> None:
    response = client.put(model_url(NAME, "aliases", "latest"), json={"version": 1})
    assert error_of(response, 400, "INVALID_INPUT")["field"] == "alias"


def test_datasets_travel_as_parquet(
    registry: RestRegistry, client: httpx.Client, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    test = frames[1]
    digest = registry.register_dataset(test, "holdout")
    pd.testing.assert_frame_equal(registry.load_dataset("holdout"), test)
    meta = client.get(f"{API}/datasets/{digest}").json()
    assert meta["name"] == "holdout" and meta["num_rows"] == len(test)
    assert [c["name"] for c in meta["schema"]] == ["a", "b", "y"]
    not_parquet = client.post(f"{API}/datasets", params={"name": "x"}, content=b"a,b\n1,2\n")
    assert error_of(not_parquet, 400, "INVALID_INPUT")["field"] == "body"
    error_of(client.get(f"{API}/datasets/missing"), 404, "NOT_FOUND")


def test_policy_as_raw_yaml_or_json(governed: RestRegistry, client: httpx.Client) -> None:
    raw = client.put(model_url(NAME, "policy"), content=POLICY.replace("0.9", "0.8"),
                     headers={"content-type": "application/yaml"})  # fmt: skip
    assert raw.status_code == 200, raw.text
    assert raw.json()["policy"]["thresholds"]["roc_auc"]["min"] == 0.8
    policy = governed.policy(NAME)
    assert policy is not None and policy.required_approvals == 1
    as_json = client.put(model_url(NAME, "policy"), json={"policy": {"dataset": "holdout"}})
    assert error_of(as_json, 400, "INVALID_INPUT")["message"]
    assert client.delete(model_url(NAME, "policy")).json()["policy"] is None


# -- gates and approvals -----------------------------------------------------------------------


def test_failed_gates_are_a_422_listing_each_check(
    governed: RestRegistry, client: httpx.Client
) -> None:
    evaluated = client.post(model_url(NAME, "versions", 2, "evaluate"), json={})
    assert evaluated.status_code == 201, evaluated.text
    assert evaluated.json()["passed"] is False and evaluated.json()["dataset_name"] == "holdout"
    response = client.put(model_url(NAME, "aliases", "champion"), json={"version": 2})
    error = error_of(response, 422, "GATE_FAILED")
    checks = error["details"]["failed_checks"]
    assert len(checks) == 1 and "roc_auc" in checks[0]["name"]
    assert checks[0]["measured"] == pytest.approx(0.5) and checks[0]["bound"] == 0.9
    with pytest.raises(GateFailed) as info:
        governed.set_alias(NAME, "champion", 2)
    assert info.value.details["failed_checks"][0]["bound"] == 0.9
    listed = governed.list_evaluations(NAME, 2)
    assert len(listed) == 1 and not listed[0].passed


def test_request_approve_promote_with_different_users(
    governed: RestRegistry, client: httpx.Client
) -> None:
    assert governed.evaluate(f"{NAME}/1").passed
    blocked = client.put(model_url(NAME, "aliases", "champion"), json={"version": 1},
                         headers=as_user("alice"))  # fmt: skip
    assert error_of(blocked, 409, "APPROVAL_REQUIRED")["details"]["required"] == 1
    ask = {"alias": "champion", "version": 1, "comment": "beats baseline"}
    created = client.post(model_url(NAME, "requests"), json=ask, headers=as_user("alice"))
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert created.json()["requested_by"] == "alice"
    own = client.post(f"{API}/requests/{request_id}/approve", json={"comment": "lgtm"},
                      headers=as_user("alice"))  # fmt: skip
    error_of(own, 403, "PERMISSION_DENIED")
    approved = client.post(f"{API}/requests/{request_id}/approve", json={"comment": "checked"},
                           headers=as_user("bob"))  # fmt: skip
    assert approved.json()["status"] == "APPROVED" and approved.json()["approvals"] == 1
    moved = client.put(model_url(NAME, "aliases", "champion"), headers=as_user("alice"),
                       json={"version": 1, "reason": "quarterly refresh"})  # fmt: skip
    assert moved.status_code == 200 and "champion" in moved.json()["aliases"]
    assert client.get(f"{API}/requests/{request_id}").json()["status"] == "APPLIED"
    events = client.get(f"{API}/audit/events", params={"target_type": "alias"}).json()["events"]
    promote = [e for e in events if e["action"] == "alias.promote"][-1]
    assert promote["actor"] == "alice" and promote["after"]["approval_request"] == request_id


def test_decisions_and_cancellation_through_the_client(
    governed: RestRegistry, rest: RestTrackingStore, rest_artifacts: RestArtifactStore
) -> None:
    bob = RestRegistry(rest, rest_artifacts, user="bob")
    governed.evaluate(f"{NAME}/1")
    first = governed.request_alias(NAME, "champion", 1, "try")
    with pytest.raises(PermissionDenied):
        governed.decide(first.id, "REJECT", "no")
    rejected = bob.decide(first.id, "REJECT", "not yet")
    assert rejected.status.value == "REJECTED" and rejected.decisions[0].approver == "bob"
    second = governed.request_alias(NAME, "champion", 1)
    with pytest.raises(PermissionDenied):
        bob.cancel_request(second.id, "not mine")
    assert governed.cancel_request(second.id, "changed my mind").status.value == "CANCELLED"
    assert [r.id for r in governed.list_requests(NAME, "REJECTED")] == [first.id]
    with pytest.raises(ApprovalRequired):
        governed.set_alias(NAME, "champion", 1)


def test_override_needs_a_justification_and_is_recorded(
    governed: RestRegistry, client: httpx.Client
) -> None:
    governed.evaluate(f"{NAME}/2")
    request = governed.request_alias(NAME, "champion", 2, "rollback target")
    RestRegistry(governed.tracking, governed.artifacts, user="bob").decide(request.id, "APPROVE")
    moved = governed.set_alias(NAME, "champion", 2, override="incident 4711")
    assert moved.aliases == ["champion"]
    events = governed.audit_events(target_type="model_version")
    override = [e for e in events if e.action == "gate.override"][-1]
    assert override.reason == "incident 4711" and override.actor == "alice"


# -- audit -------------------------------------------------------------------------------------


def test_audit_pages_and_verifies(governed: RestRegistry, client: httpx.Client) -> None:
    events = governed.audit_events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    page = governed.audit_events(after_seq=2, limit=2)
    assert [e.seq for e in page] == [3, 4]
    result = governed.verify_audit()
    assert result.ok and result.checked == len(events) and result.head_seq == events[-1].seq
    anchored = client.get(f"{API}/audit/verify",
                          params={"anchor": f"{events[-1].seq}:{events[-1].hash}"})  # fmt: skip
    assert anchored.json()["ok"] is True
    ahead = governed.verify_audit((events[-1].seq + 5, "0" * 64))
    assert not ahead.ok and ahead.first_bad_seq == events[-1].seq + 1
    error_of(client.get(f"{API}/audit/events", params={"limit": 0}), 400, "INVALID_INPUT")


def test_a_delete_with_a_reason(governed: RestRegistry, client: httpx.Client) -> None:
    governed.set_alias(NAME, "staging", 2)
    assert client.delete(model_url(NAME, "aliases", "staging")).status_code == 204
    with pytest.raises(NotFound):
        governed.resolve(f"{NAME}@staging")
