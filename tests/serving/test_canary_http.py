"""Canary routing and rollback over real HTTP: ``loopwright deploy`` as a process on 127.0.0.1.

The registry is a real store in a temp dir with real scikit-learn models (the faulty and slow
canaries are pyfunc wrappers around one, loaded with ``--trusted``). Every champion answer is
compared with the same model's in-process prediction.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.conftest import free_port
from tests.serving.test_canary import CanaryStore, register_canary_store

from loopwright.serving.predlog import read_predictions

pytestmark = pytest.mark.slow

LOOPWRIGHT = str(Path(sys.executable).parent / "loopwright")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CanaryStore:
    return register_canary_store(tmp_path_factory.mktemp("canary-http-store"))


@contextmanager
def deployed(
    store: CanaryStore,
    tmp_path: Path,
    spec: dict[str, Any],
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``loopwright deploy`` of ``spec`` until the block ends; yields the base URL."""
    spec = {"name": "churn-api", "model": "churn", "log": {"uri": str(tmp_path / "log"),
            "flush_interval_s": 0.2}, **spec}  # fmt: skip
    spec_file = tmp_path / "deployment.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / f"deploy-{port}.log"
    cmd = [LOOPWRIGHT, "deploy", str(spec_file), "--tracking-uri", str(store.root),
           "--port", str(port), "--workers", str(workers), "--trusted"]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})  # fmt: skip
        try:
            _wait_ready(url, proc, log_path)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"deploy exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"deploy not ready: {log.read_text()[-3000:]}")


def traffic(
    url: str,
    store: CanaryStore,
    n: int,
    start: int = 0,
    *,
    fresh_connections: bool = False,
    threads: int = 8,
) -> list[tuple[str, int, dict[str, Any]]]:
    """``n`` keyed single-row requests: (key, status, body). Champion answers are checked
    against the champion's in-process prediction; a 422 may only be the faulty canary's."""
    rows = store.rows(n, start)
    expected = store.expected(rows)
    limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else None
    with httpx.Client(base_url=url, timeout=30, **({"limits": limits} if limits else {})) as http:

        def one(i: int) -> tuple[str, int, dict[str, Any]]:
            key = f"user-{start + i}"
            answer = http.post("/predict", json={"records": [rows[i]], "key": key})
            body = answer.json()
            if answer.status_code == 200 and body["route"] == "champion":
                assert body["version"] == 1 and body["predictions"] == [expected[i]], body
            elif answer.status_code != 200:
                assert answer.status_code == 422, answer.text
                assert body["error"]["code"] == "MODEL_ERROR" and rows[i]["n"] == 0
            return key, answer.status_code, body

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(n)))


def status(url: str) -> dict[str, Any]:
    answer = httpx.get(url + "/status", timeout=10)
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOOPWRIGHT, *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": ""})  # fmt: skip


def wait_state(url: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(url)
        if current["state"] == state or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def test_weights_are_honoured_sticky_and_shadows_never_answer(
    store: CanaryStore, tmp_path: Path
) -> None:
    spec = {"canary": {"ref": "4", "weight": 0.2}, "shadows": ["2"]}
    n, weight = 1000, 0.2
    with deployed(store, tmp_path, spec) as url:
        first = traffic(url, store, n, threads=16)
        again = traffic(url, store, 300, threads=16)  # the first 300 keys once more
        rolled = cli("deployments", "rollback", url, "--reason", "test over")
        after = status(url)
    assert all(code == 200 for _, code, _ in first + again)
    versions = {key: body["version"] for key, _, body in first}
    assert set(versions.values()) == {1, 4}  # never the shadow's version 2
    share = sum(v == 4 for v in versions.values()) / n
    assert abs(share - weight) <= 4 * math.sqrt(weight * (1 - weight) / n), share
    assert all(body["version"] == versions[key] for key, _, body in again)

    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back: test over" in rolled.stdout
    assert after["state"] == "rolled_back" and after["canary"]["decision"]["by"] == "manual"

    logged = read_predictions(str(tmp_path / "log"), deployment="churn-api")
    shadows = logged[logged["shadow"]]
    answered = logged[~logged["shadow"]]
    assert set(shadows["version"]) == {2} and set(shadows["route"]) == {"shadow"}
    assert len(answered) == n + 300 and set(answered["version"]) <= {1, 4}
    assert shadows["error"].notna().any()  # the faulty shadow failed on some rows, silently
    assert len(shadows) >= 0.9 * (n + 300)  # the shadow saw (nearly) every request


def test_a_faulty_canary_is_rolled_back_and_the_champion_stays_correct(
    store: CanaryStore, tmp_path: Path
) -> None:
    slo = {"window_s": 30, "min_requests": 20, "max_p99_ratio": 1000}
    spec = {"canary": {"ref": "challenger", "weight": 0.2}, "slo": slo}
    with deployed(store, tmp_path, spec) as url:
        before = traffic(url, store, 400)
        current = wait_state(url, "rolled_back")
        after = traffic(url, store, 100, start=400)
        shown = cli("deployments", "status", url)
        promote = cli("deployments", "promote", url, "--reason", "ship it")
    canary_answers = [b for _, code, b in before if code == 200 and b["route"] == "canary"]
    failures = [b for _, code, b in before if code == 422]
    assert canary_answers and failures  # it answered, and failed, before it was rolled back
    assert current["state"] == "rolled_back" and current["routes"]["canary"]["weight"] == 0.0
    verdict = current["canary"]["decision"]["verdict"]
    assert verdict["rule"] == "error_rate" and verdict["measured"]["canary_error_rate"] > 0.05
    assert current["alerts"][0]["rule"] == "canary.error_rate"
    assert all(code == 200 and b["version"] == 1 for _, code, b in after)

    assert shown.returncode == 0, shown.stderr
    assert "rolled_back" in shown.stdout and "error rate" in shown.stdout
    assert promote.returncode == 2 and "rolled back" in promote.stderr

    audit = store.client()
    events = audit.registry.audit_events(target_type="deployment", target_id="churn-api")
    audit.close()
    assert [e.action for e in events][-1] == "deployment.rollback"
    assert events[-1].after["rule"] == "error_rate"


def test_a_slow_canary_is_rolled_back_on_p99(store: CanaryStore, tmp_path: Path) -> None:
    # v3 sleeps 0.3 s per call: far above 2 x the champion's p99 even on a loaded machine
    slo = {"window_s": 30, "min_requests": 10, "max_p99_ratio": 2.0}
    spec = {"canary": {"ref": "3", "weight": 0.2}, "slo": slo}
    with deployed(store, tmp_path, spec) as url:
        before = traffic(url, store, 120, threads=4)
        current = wait_state(url, "rolled_back")
        after = traffic(url, store, 50, start=120)
    assert all(code == 200 for _, code, _ in before + after)
    assert current["state"] == "rolled_back"
    verdict = current["canary"]["decision"]["verdict"]
    assert verdict["rule"] == "p99_latency"
    assert verdict["measured"]["canary_p99_ms"] > verdict["thresholds"]["p99_limit_ms"]
    assert all(b["version"] == 1 for _, _, b in after)


def test_the_rollback_holds_on_every_worker(store: CanaryStore, tmp_path: Path) -> None:
    slo = {"window_s": 30, "min_requests": 20, "max_p99_ratio": 1000}
    spec = {"canary": {"ref": "challenger", "weight": 0.3}, "slo": slo, "watch_interval_s": 0.5}
    with deployed(store, tmp_path, spec, workers=2) as url:
        traffic(url, store, 300, fresh_connections=True)
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current = status(url)  # a new connection each time: either worker answers
            seen[current["worker"]] = current["state"]
            if len(seen) == 2 and set(seen.values()) == {"rolled_back"}:
                break
            time.sleep(0.05)
        after = traffic(url, store, 150, start=300, fresh_connections=True)
    assert len(seen) == 2 and set(seen.values()) == {"rolled_back"}, seen
    assert all(code == 200 and b["version"] == 1 for _, code, b in after)
    audit = store.client()
    events = audit.registry.audit_events(target_type="deployment", target_id="churn-api")
    audit.close()
    rollbacks = [e for e in events if e.action == "deployment.rollback"]
    assert rollbacks and rollbacks[-1].after["rule"] == "error_rate"


def test_a_steering_token_guards_the_canary_routes_and_nothing_else(
    store: CanaryStore, tmp_path: Path
) -> None:
    spec = {"canary": {"ref": "4", "weight": 0.5}}
    with deployed(store, tmp_path, spec, env={"LOOPWRIGHT_SERVING_TOKEN": "s3cret"}) as url:
        assert all(code == 200 for _, code, _ in traffic(url, store, 20))  # inference: open
        refused = cli("deployments", "rollback", url, "--reason", "no token")
        wrong = cli("deployments", "rollback", url, "--reason", "bad", "--token", "guess")
        raw = httpx.post(url + "/canary/promote", json={"reason": "x"}, timeout=10)
        assert status(url)["state"] == "canary"  # nothing changed so far
        done = cli("deployments", "rollback", url, "--reason", "with token", "--token", "s3cret")
        after = status(url)
    assert refused.returncode == 2 and "LOOPWRIGHT_SERVING_TOKEN" in refused.stderr
    assert wrong.returncode == 2 and "token is wrong" in wrong.stderr
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "UNAUTHENTICATED"
    assert raw.headers["www-authenticate"].startswith("Bearer")
    assert done.returncode == 0, done.stderr
    assert after["state"] == "rolled_back" and after["canary"]["reason"] == "with token"
