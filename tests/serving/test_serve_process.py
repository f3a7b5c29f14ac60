"""``loopwright serve`` as a real process on 127.0.0.1: concurrent traffic, graceful shutdown,
one native thread per worker unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port
from tests.serving.test_app import expected, records, register_store

from loopwright.cli.serve import NATIVE_THREAD_ENVS
from loopwright.serving.predlog import read_predictions


@pytest.mark.slow
def test_serve_answers_concurrent_requests_and_flushes_on_stop(tmp_path: Path) -> None:
    store = register_store(tmp_path / "store")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    cmd = [str(Path(sys.executable).parent / "loopwright"), "serve", "churn@champion",
           "--tracking-uri", str(store.root), "--port", str(port),
           "--log-uri", str(tmp_path / "log")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in NATIVE_THREAD_ENVS}
    env["MKL_NUM_THREADS"] = "3"  # the user's choice stands; the others default to one
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, proc, tmp_path / "serve.log")
        threads = httpx.get(url + "/status", timeout=10).json()["native_threads"]
        assert threads == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "3"}  # fmt: skip
        rows = records(store, 200)
        want = expected(store.v1, store, 200)
        with httpx.Client(base_url=url, timeout=30) as http:

            def one(i: int) -> tuple[str, str]:
                answer = http.post("/predict", json={"records": [rows[i]], "id": f"r{i}"})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                return body["request_id"], body["predictions"][0]

            with ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(one, range(200)))
        assert [p for _, p in answers] == want
        assert [rid for rid, _ in answers] == [f"r{i}" for i in range(200)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    logged = read_predictions(str(tmp_path / "log"), deployment="churn")
    assert len(logged) == 200
    assert set(logged["request_id"]) == {f"r{i}" for i in range(200)}


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve not ready: {log.read_text()[-2000:]}")
