"""A real server process on 127.0.0.1 (two uvicorn workers), driven through the REST stores."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import loopwright
from loopwright.backends.rest import RestArtifactStore, RestTrackingStore
from loopwright.errors import NotFound
from loopwright.tracking.entities import Metric, RunStatus

pytestmark = pytest.mark.slow

SERVE = (
    "import sys; from loopwright.config import Settings; from loopwright.server.main import serve; "
    "serve(Settings(tracking_uri=sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), workers=2)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("server-home")
    port = _free_port()
    env = dict(os.environ)
    src = str(Path(loopwright.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    log = (home / "server.log").open("wb")  # a file, not a pipe: a full pipe would block it
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(home), str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        output = (home / "server.log").read_text(errors="replace")
        assert "Traceback" not in output, output


@pytest.fixture
def store(server_url: str) -> Iterator[RestTrackingStore]:
    store = RestTrackingStore(server_url, timeout=10.0)
    yield store
    store.close()


def test_tracking_through_a_real_server(store: RestTrackingStore) -> None:
    experiment = store.create_experiment("real/server 100%")
    assert store.get_experiment_by_name("real/server 100%") == experiment
    run = store.create_run(experiment.id, name="r", tags={"k": "v"})
    values = [0.5, math.nan, math.inf, -math.inf]
    store.log_batch(run.id, [Metric("m", v, i, 1000 + i) for i, v in enumerate(values)],
                    params={"p": "1"})  # fmt: skip
    history = store.get_metric_history(run.id, "m")
    assert [m.step for m in history] == [0, 1, 2, 3] and math.isnan(history[1].value)
    ended = store.end_run(run.id, RunStatus.FINISHED)
    assert ended.status is RunStatus.FINISHED and ended.params == {"p": "1"}
    assert [r.id for r in store.search_runs([experiment.id]).items] == [run.id]
    with pytest.raises(NotFound):
        store.get_run("0" * 32)


def test_artifacts_through_a_real_server(server_url: str, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    artifacts = RestArtifactStore(server_url, timeout=10.0)
    try:
        digest, size = artifacts.put_file(source)
        assert size == source.stat().st_size and artifacts.exists(digest)
        artifacts.download(digest, str(tmp_path / "copy.bin"))
    finally:
        artifacts.close()
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
