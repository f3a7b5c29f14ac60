"""The HTTP edge over a real SQLite store and a real artifact directory, in-process.

``TestClient`` is an ``httpx.Client``, so the REST stores run their whole path (serialisation,
status codes, error translation) against the app without a socket.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import BASE_URL, MAX_ARTIFACT, MAX_REQUEST, make_client

from loopwright.backends.fs.artifacts import FsArtifactStore
from loopwright.backends.rest import RestArtifactStore, RestTrackingStore
from loopwright.backends.sql.store import SqlTrackingStore
from loopwright.config import Settings
from loopwright.server import create_app


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[SqlTrackingStore]:
    store = SqlTrackingStore("sqlite:///" + str(tmp_path / "lw.db")).initialize()
    yield store
    store.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> FsArtifactStore:
    return FsArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where uploads are spooled, private to the test so leftovers can be asserted absent."""
    path = tmp_path / "spool"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.fixture
def settings() -> Settings:
    return Settings(max_request_bytes=MAX_REQUEST, max_artifact_bytes=MAX_ARTIFACT)


@pytest.fixture
def app(tracking: SqlTrackingStore, artifacts: FsArtifactStore, settings: Settings) -> Any:
    return create_app(tracking, artifacts, settings)


@pytest.fixture
def client(app: Any) -> Iterator[httpx.Client]:
    with make_client(app) as test_client:
        yield test_client


@pytest.fixture
def rest(client: httpx.Client) -> RestTrackingStore:
    return RestTrackingStore(BASE_URL, client=client)


@pytest.fixture
def rest_artifacts(client: httpx.Client) -> RestArtifactStore:
    return RestArtifactStore(BASE_URL, client=client)


@pytest.fixture
def run_id(rest: RestTrackingStore) -> str:
    experiment = rest.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    return rest.create_run(experiment.id, name="r").id
