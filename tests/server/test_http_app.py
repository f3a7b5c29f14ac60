"""The app's published surface (OpenAPI, health) and how it starts (settings, schema check)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import make_client

from loopwright.backends.rest import RestTrackingStore, wire
from loopwright.config import Settings
from loopwright.errors import SchemaOutdated
from loopwright.server import main
from loopwright.server.schemas import ExperimentPublic, RunPublic
from loopwright.tracking.entities import DatasetInput
from loopwright.tracking.store import ArtifactStore, TrackingStore

ROUTES = {
    ("/health", "get"),
    ("/api/v1/health", "get"),
    ("/api/v1/experiments", "post"),
    ("/api/v1/experiments", "get"),
    ("/api/v1/experiments/{experiment_id}", "get"),
    ("/api/v1/experiments-by-name/{name}", "get"),
    ("/api/v1/runs", "post"),
    ("/api/v1/audit/events", "post"),
    ("/api/v1/monitoring/{deployment}/windows", "get"),
    ("/api/v1/monitoring/{deployment}/series/{name}", "get"),
    ("/api/v1/monitoring/{deployment}/alerts", "get"),
    ("/api/v1/monitoring/{deployment}/report.html", "get"),
    ("/api/v1/runs/{run_id}", "get"),
    ("/api/v1/runs/{run_id}/end", "post"),
    ("/api/v1/runs/{run_id}/resume", "post"),
    ("/api/v1/runs/{run_id}/batch", "post"),
    ("/api/v1/runs/{run_id}/metric-history", "get"),
    ("/api/v1/runs/search", "post"),
    ("/api/v1/runs/{run_id}/inputs", "post"),
    ("/api/v1/runs/{run_id}/artifacts", "post"),
    ("/api/v1/runs/{run_id}/artifacts", "get"),
    ("/api/v1/blobs/{digest}", "put"),
    ("/api/v1/blobs/{digest}", "get"),
    ("/api/v1/blobs/{digest}", "head"),
    # access control (server/routers/access.py)
    ("/api/v1/whoami", "get"),
    ("/api/v1/users", "get"),
    ("/api/v1/users", "post"),
    ("/api/v1/users/{user}", "get"),
    ("/api/v1/users/{user}/disable", "post"),
    ("/api/v1/users/{user}/enable", "post"),
    ("/api/v1/tokens", "get"),
    ("/api/v1/tokens", "post"),
    ("/api/v1/tokens/{token_id}/revoke", "post"),
    ("/api/v1/roles", "get"),
    ("/api/v1/roles", "post"),
    ("/api/v1/roles", "delete"),
    # model registry, approvals, audit (server/routers/registry.py)
    ("/api/v1/audit/events", "get"),
    ("/api/v1/audit/verify", "get"),
    ("/api/v1/datasets", "post"),
    ("/api/v1/datasets/{name_or_digest}", "get"),
    ("/api/v1/models", "get"),
    ("/api/v1/models", "post"),
    ("/api/v1/models/{name}", "get"),
    ("/api/v1/models/{name}", "patch"),
    ("/api/v1/models/{name}/aliases/{alias}", "delete"),
    ("/api/v1/models/{name}/aliases/{alias}", "put"),
    ("/api/v1/models/{name}/evaluations", "get"),
    ("/api/v1/models/{name}/policy", "delete"),
    ("/api/v1/models/{name}/policy", "put"),
    ("/api/v1/models/{name}/requests", "post"),
    ("/api/v1/models/{name}/resolve", "get"),
    ("/api/v1/models/{name}/versions", "get"),
    ("/api/v1/models/{name}/versions", "post"),
    ("/api/v1/models/{name}/versions/{version}", "get"),
    ("/api/v1/models/{name}/versions/{version}", "patch"),
    ("/api/v1/models/{name}/versions/{version}/evaluate", "post"),
    ("/api/v1/requests", "get"),
    ("/api/v1/requests/{request_id}", "get"),
    ("/api/v1/requests/{request_id}/approve", "post"),
    ("/api/v1/requests/{request_id}/cancel", "post"),
    ("/api/v1/requests/{request_id}/reject", "post"),
    ("/api/v1/versions", "get"),
}


def test_openapi_lists_every_route(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    published = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert published == ROUTES


def test_openapi_documents_the_hand_parsed_bodies_and_errors(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    batch = doc["paths"]["/api/v1/runs/{run_id}/batch"]["post"]
    schema = batch["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"metrics", "params", "tags"}
    assert "MetricColumns" in doc["components"]["schemas"]
    assert "ErrorResponse" in str(batch["responses"]["404"])
    blob = doc["paths"]["/api/v1/blobs/{digest}"]["put"]["requestBody"]["content"]
    assert "application/octet-stream" in blob


@pytest.mark.parametrize("path", ["/health", "/api/v1/health"])
def test_health(client: httpx.Client, path: str) -> None:
    body = client.get(path).json()
    assert body["status"] == "ok" and isinstance(body["version"], str)


def test_wire_and_public_schemas_agree(rest: RestTrackingStore, run_id: str) -> None:
    """``wire`` builds the answers and the schemas publish them: same fields, both directions."""
    dataset = DatasetInput("d", "ab" * 32, [{"name": "x", "type": "int64"}], 3, source="s3://b")
    rest.log_inputs(run_id, [dataset])
    run = rest.get_run(run_id)
    assert run.inputs == [dataset]
    as_dict = wire.run_to_dict(run)
    assert RunPublic.model_validate(as_dict).model_dump(by_alias=True, mode="json") == as_dict
    experiment = wire.experiment_to_dict(rest.get_experiment(run.experiment_id))
    assert ExperimentPublic.model_validate(experiment).model_dump() == experiment


def test_names_with_slashes_reach_the_store(rest: RestTrackingStore) -> None:
    """(A literal ``%`` is tested against a real server: TestClient decodes the path twice.)"""
    created = rest.create_experiment("team/a b?c#d")
    assert rest.get_experiment_by_name("team/a b?c#d") == created


def test_settings_survive_the_trip_to_workers() -> None:
    settings = Settings(
        tracking_uri="sqlite:///x.db", max_request_bytes=7, capture_environment=False
    )
    assert Settings.from_env(main.settings_to_env(settings)) == settings


def _outdated_db(tmp_path: Path) -> str:
    """A database with loopwright's tables but no schema revision: it needs an upgrade."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE experiments (id TEXT PRIMARY KEY)")
    return f"sqlite:///{path}"


def test_an_outdated_schema_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = _outdated_db(tmp_path)
    with pytest.raises(SchemaOutdated):
        main.serve(Settings(tracking_uri=uri, artifacts_uri=str(tmp_path / "a")), port=1)
    monkeypatch.setenv("LOOPWRIGHT_TRACKING_URI", uri)
    with pytest.raises(SchemaOutdated):
        main.app_from_env()


def test_app_from_env_serves_the_configured_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPWRIGHT_TRACKING_URI", str(tmp_path / "home"))
    app: Any = main.app_from_env()
    with make_client(app) as client:  # entering runs the lifespan, leaving closes the store
        assert client.post("/api/v1/experiments", json={"name": "e"}).status_code == 201
    assert (tmp_path / "home" / "loopwright.db").exists()


def test_rest_stores_implement_the_protocols(rest: RestTrackingStore, rest_artifacts: Any) -> None:
    assert isinstance(rest, TrackingStore)
    assert isinstance(rest_artifacts, ArtifactStore)
