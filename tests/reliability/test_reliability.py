"""Concurrent writers, killed writers and cut-off uploads never corrupt or lose acked data."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.conftest import RunningServer

from loopwright import Client, RunStatus

pytestmark = pytest.mark.slow

WRITER = textwrap.dedent(
    """
    import sys
    import loopwright as lw
    uri, worker, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = lw.Client(uri)
    with client.start_run("stress", run_name=f"w{worker}", capture_environment=False,
                          monitor_resources=False) as run:
        for i in range(points):
            run.log_metric("x", float(worker * 1_000_000 + i), step=i)
            run.log_metric("y", float(i), step=i)
    print(run.id, flush=True)
    """
)


def _writers(uri: str, n: int, points: int, tmp_path: Path) -> list[str]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "LOOPWRIGHT_METRIC_BUFFER_SIZE": "1000"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(w), str(points)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for w in range(n)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
        ids.append(out.decode().strip())
    return ids


def _assert_exact(client: Client, run_ids: list[str], points: int) -> None:
    for worker, run_id in enumerate(run_ids):
        run = client.get_run(run_id)
        assert run.status is RunStatus.FINISHED
        xs = client.get_metric_history(run_id, "x")
        assert [m.step for m in xs] == list(range(points))  # nothing lost, nothing twice
        assert [m.value for m in xs] == [float(worker * 1_000_000 + i) for i in range(points)]
        assert len(client.get_metric_history(run_id, "y")) == points


def test_four_processes_into_one_sqlite_store(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    ids = _writers(uri, 4, 20_000, tmp_path)
    _assert_exact(Client(uri), ids, 20_000)


def test_four_processes_into_one_server(tmp_path: Path) -> None:
    store = tmp_path / "server-store"
    store.mkdir()
    srv = RunningServer(store, workers=2).wait_ready()
    try:
        ids = _writers(srv.url, 4, 20_000, tmp_path)
        _assert_exact(Client(srv.url), ids, 20_000)
    finally:
        srv.stop()
    _assert_exact(Client(str(store)), ids, 20_000)  # and the same straight from the database


KILLED = textwrap.dedent(
    """
    import sys, time
    import loopwright as lw
    run = lw.Client(sys.argv[1]).start_run("crash", capture_environment=False)
    i = 0
    while True:
        run.log_metric("loss", 1.0 / (i + 1), step=i)
        i += 1
        if i % 500 == 0:
            run.flush()
            print(run.id, i, flush=True)
    """
)


def test_sigkilled_writer_leaves_a_readable_store_and_an_unfinished_run(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), uri], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acknowledged = 0
    run_id = ""
    while acknowledged < 3000:
        run_id, count = proc.stdout.readline().decode().split()
        acknowledged = int(count)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    client = Client(uri)
    run = client.get_run(run_id)
    assert run.status is RunStatus.RUNNING  # unfinished, and visible as such
    assert run_id in [r.id for r in client.search_runs("crash", "status = 'RUNNING'").items]
    assert len(client.get_metric_history(run_id, "loss")) >= acknowledged
    with client.tracking.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    with client.start_run(run_id=run_id, monitor_resources=False) as resumed:
        resumed.log_metric("loss", 0.0, step=10**6)
    assert client.get_run(run_id).status is RunStatus.FINISHED
    assert client.get_run(run_id).metrics["loss"] == 0.0


def test_cut_off_upload_leaves_no_partial_blob(server: RunningServer) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
        )
        sock.sendall(payload[: len(payload) // 3])
        time.sleep(0.3)
    time.sleep(1.0)  # let the server notice the disconnect and clean up
    client = Client(server.url)
    assert not client.artifacts.exists(digest)
    blobs = Path(server.log.parent / "server-store" / "artifacts")
    leftovers = [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []
    assert leftovers == []
    # the complete upload afterwards works and is verified
    assert client.artifacts.put_bytes(payload) == digest
    assert client.artifacts.get_bytes(digest) == payload
