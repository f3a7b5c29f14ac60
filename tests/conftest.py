"""Shared fixtures: real stores on SQLite, PostgreSQL and REST (in-process), one contract suite.

PostgreSQL: ``LOOPWRIGHT_TEST_POSTGRES_URI`` (default: the local server, database ``test``). Each
test session creates its own database and drops it afterwards. With ``CI=true`` a missing server
fails the PostgreSQL tests; elsewhere they skip, saying why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwright.client import Client
from loopwright.config import Settings

PG_URI = os.environ.get(
    "LOOPWRIGHT_TEST_POSTGRES_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = ["sqlite", "postgres", "rest"]


def _admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(PG_URI, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (per xdist worker)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    try:
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        message = f"PostgreSQL not reachable at {PG_URI}: {exc.__class__.__name__}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the PostgreSQL tests must run)")
        pytest.skip(message + " (set CI=true to make this a failure)")
    name = f"lw_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URI).set(database=name).render_as_string(hide_password=False)
    yield url
    from loopwright.backends.sql.store import SqlTrackingStore

    SqlTrackingStore(url).close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(url: str) -> None:
    from sqlalchemy import create_engine, text

    from loopwright.backends.sql.schema import metadata

    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        exists = conn.execute(text("SELECT to_regclass('public.runs')")).scalar()
        if exists:
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()


def quiet_settings(**kw: object) -> Settings:
    """Settings for tests: no git/package scan per run unless a test asks for it."""
    return Settings(capture_environment=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """A ``Client`` on each backend; contract tests using it run three times."""
    made = make_client(request.param, request, tmp_path)
    yield made
    made.close()


def make_client(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    settings = quiet_settings(resource_sample_interval_s=0.2)
    if kind == "sqlite":
        return Client(str(tmp_path / "store"), settings=settings)
    if kind == "postgres":
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        return Client(url, artifacts_uri=str(tmp_path / "artifacts"), settings=settings)
    from fastapi.testclient import TestClient

    from loopwright.client import open_stores
    from loopwright.server.app import create_app

    server_settings = quiet_settings(tracking_uri=str(tmp_path / "server-store"))
    tracking, artifacts = open_stores(server_settings)
    http = TestClient(create_app(tracking, artifacts, server_settings))
    request.addfinalizer(http.close)
    remote = Client("http://testserver", settings=settings, http_client=http)
    remote.server_artifacts = artifacts  # type: ignore[attr-defined]  # for tampering tests
    return remote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A real ``loopwright server`` process on 127.0.0.1, for end-to-end tests."""

    def __init__(self, store_dir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = store_dir.parent / f"server-{self.port}.log"
        cmd = [
            str(Path(sys.executable).parent / "loopwright"), "server",
            "--store-uri", f"sqlite:///{store_dir / 'loopwright.db'}",
            "--artifacts-uri", str(store_dir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
        ]  # fmt: skip
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> RunningServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._out.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    store = tmp_path / "server-store"
    store.mkdir()
    srv = RunningServer(store).wait_ready()
    yield srv
    srv.stop()
