"""``/metrics`` across workers: each scrape answers for the whole server, whichever worker it hits.

In-process, two :class:`ServingMetrics` sharing one directory stand for two workers (what the
merge must do); end to end, ``loopwright serve --workers 2`` runs as a real process on
127.0.0.1 and every scrape after the flush must count every request.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port
from tests.serving.test_app import records, register_store
from tests.serving.test_serve_process import _wait_ready

from loopwright.serving.metrics import METRICS_DIR_ENV, SNAPSHOT_SUFFIX, ServingMetrics


def total(text: str, family: str = "loopwright_requests_total") -> float:
    """The sum of a family's samples in a Prometheus text page."""
    pattern = re.compile(rf"^{family}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def sample(text: str, line_prefix: str) -> str:
    (value,) = [ln.rsplit(" ", 1)[1] for ln in text.splitlines() if ln.startswith(line_prefix)]
    return value


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[ServingMetrics, ServingMetrics]]:
    a, b = ServingMetrics(tmp_path), ServingMetrics(tmp_path)
    yield a, b
    a.close()
    b.close()


def test_every_worker_renders_the_sum(workers: tuple[ServingMetrics, ServingMetrics]) -> None:
    a, b = workers
    for m in (a, b):
        m.declare("champion", 1)
    for _ in range(3):
        a.observe_request("champion", 1, 0.002, failed=False)
    b.observe_request("champion", 1, 0.3, failed=True)
    a.observe_batch(3)
    b.reject("INVALID_INPUT")
    b.observe_predictions("champion", 1, ["yes", "no", "yes"], ["no", "yes"])
    a.set_queue_depth("champion", 1, 2)
    b.set_queue_depth("champion", 1, 1)
    b.flush()  # what b's flusher thread does every second
    text = a.render()  # a writes its own snapshot before answering
    for page in (text, b.render()):
        assert sample(page, 'loopwright_requests_total{route="champion",version="1"}') == "4"
        assert sample(page, 'loopwright_request_errors_total{route="champion"') == "1"
        assert sample(page, 'loopwright_requests_rejected_total{code="INVALID_INPUT"}') == "1"
        assert sample(page, 'loopwright_predictions_total{route="champion",version="1",'
                            'class="yes"}') == "2"  # fmt: skip
        assert sample(page, 'loopwright_request_latency_seconds_count{route="champion"') == "4"
        assert sample(page, 'loopwright_request_latency_seconds_bucket{route="champion",'
                            'version="1",le="0.0025"}') == "3"  # fmt: skip
        assert sample(page, 'loopwright_request_latency_seconds_bucket{route="champion",'
                            'version="1",le="0.5"}') == "4"  # fmt: skip
        assert sample(page, "loopwright_batch_size_count") == "1"
        assert sample(page, 'loopwright_queue_depth{route="champion",version="1"}') == "3"
        assert sample(page, "loopwright_serving_workers") == "2"


def test_a_dead_workers_counters_stay_and_its_gauges_go(tmp_path: Path) -> None:
    gone = ServingMetrics(tmp_path)
    gone.declare("champion", 1)
    gone.observe_request("champion", 1, 0.01, failed=False)
    gone.set_queue_depth("champion", 1, 5)
    gone.close()  # a worker that exited: its last snapshot stays behind
    # A snapshot counts as live only if written within stale_after_s: here, none is.
    alive = ServingMetrics(tmp_path, stale_after_s=1e-9)
    try:
        alive.declare("champion", 1)
        alive.observe_request("champion", 1, 0.01, failed=False)
        alive.set_queue_depth("champion", 1, 1)
        page = alive.render()
        assert sample(page, 'loopwright_requests_total{route="champion"') == "2"
        assert sample(page, 'loopwright_queue_depth{route="champion"') == "1"
        assert sample(page, "loopwright_serving_workers") == "1"
        # A replacement worker starts from 0 in a file of its own: nothing goes backwards.
        replacement = ServingMetrics(tmp_path)
        replacement.declare("champion", 1)
        replacement.close()
        assert sample(alive.render(), 'loopwright_requests_total{route="champion"') == "2"
    finally:
        alive.close()
    assert len(list(tmp_path.glob("*" + SNAPSHOT_SUFFIX))) == 3


def test_the_flusher_writes_without_a_scrape(tmp_path: Path) -> None:
    metrics = ServingMetrics(tmp_path, flush_interval_s=0.05)
    try:
        metrics.declare("champion", 4)
        metrics.observe_request("champion", 4, 0.01, failed=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            files = list(tmp_path.glob("*" + SNAPSHOT_SUFFIX))
            if files:
                doc = json.loads(files[0].read_bytes())
                if doc["counters"]["loopwright_requests_total"]:
                    break
            time.sleep(0.02)
        ((labels, count),) = doc["counters"]["loopwright_requests_total"]
        assert labels == [["route", "champion"], ["version", "4"]] and count == 1
        assert doc["pid"] == os.getpid()
    finally:
        metrics.close()


def test_the_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path / "shared"))
    assert ServingMetrics().directory == tmp_path / "shared"
    monkeypatch.delenv(METRICS_DIR_ENV)
    alone = ServingMetrics()
    alone.declare("champion", 1)
    page = alone.render()
    assert alone.directory is None and "loopwright_serving_workers" not in page
    assert sample(page, 'loopwright_requests_total{route="champion"') == "0"


# -- a real server with two workers ----------------------------------------------------------


@pytest.mark.slow
def test_serve_with_two_workers_counts_every_request_on_every_scrape(tmp_path: Path) -> None:
    store = register_store(tmp_path / "store")
    tmp = tmp_path / "tmp"  # the server's TMPDIR: where its metrics directory must appear
    tmp.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    cmd = [str(Path(sys.executable).parent / "loopwright"), "serve", "churn@champion",
           "--tracking-uri", str(store.root), "--port", str(port), "--workers", "2",
           "--log-uri", str(tmp_path / "log")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != METRICS_DIR_ENV} | {"TMPDIR": str(tmp)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, proc, log_path)
        (shared,) = tmp.glob("loopwright-metrics-*")
        rows = records(store, 1)
        sent = 0

        def one(i: int) -> None:  # a new connection each time, so both workers get some
            answer = httpx.post(url + "/predict", json={"records": rows, "id": f"r{i}"})
            assert answer.status_code == 200, answer.text

        # Until each worker's snapshot shows requests: then no single worker knows the total.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(sent, sent + 40)))
            sent += 40
            time.sleep(1.5)  # one flush interval and a half
            if len(per_worker := _per_worker_requests(shared)) == 2 and min(per_worker) > 0:
                break
        else:
            raise AssertionError(f"one worker took every request: {_per_worker_requests(shared)}")

        deadline = time.monotonic() + 30
        while total(httpx.get(url + "/metrics").text) != sent:
            assert time.monotonic() < deadline, "the snapshots never caught up"
            time.sleep(0.2)
        for _ in range(12):  # new connections: scrapes land on either worker
            page = httpx.get(url + "/metrics").text
            assert total(page) == sent
            assert sample(page, "loopwright_serving_workers") == "2"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not list(tmp.glob("loopwright-metrics-*")), "the metrics directory outlived the server"


def _per_worker_requests(directory: Path) -> list[float]:
    counts = []
    for path in directory.glob("*" + SNAPSHOT_SUFFIX):
        doc = json.loads(path.read_bytes())
        counts.append(sum(v for _, v in doc["counters"]["loopwright_requests_total"]))
    return counts
