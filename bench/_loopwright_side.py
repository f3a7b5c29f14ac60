"""The loopwright side of ``bench/tracking.py``, plus the raw-sqlite3 floor and the shared seed.

The workloads mirror ``_mlflow_worker.py`` one for one: same sizes, same values, same warm-up, and
the clock covers the same span (for logging, until the run has ended and its points are stored).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _shared import (
    HISTORY_EXPERIMENT,
    HISTORY_KEY,
    SEARCH_EXPERIMENT,
    SEARCH_FILTER,
    search_rows,
)

from loopwright import Client
from loopwright.backends.sql.store import SqlTrackingStore
from loopwright.tracking.entities import Metric

RUN_OPTIONS = {"capture_environment": False, "monitor_resources": False}


def new_experiment(client: Client, prefix: str) -> str:
    return client.create_experiment(f"{prefix}-{time.time_ns()}").name


# -- setup -------------------------------------------------------------------------------------


def seed(db: Path, runs: int, history_steps: int) -> float:
    """Untimed: ``runs`` searchable runs and a ``history_steps``-point history (store API)."""
    t0 = time.perf_counter()
    store = SqlTrackingStore(f"sqlite:///{db}").initialize()
    try:
        exp = store.create_experiment(SEARCH_EXPERIMENT)
        now = int(time.time() * 1000)
        for auc, model, team in search_rows(runs):
            run = store.create_run(exp.id, tags={"team": team})
            store.log_batch(run.id, [Metric("auc", auc, 0, now)], params={"model": model})
        run = store.create_run(store.create_experiment(HISTORY_EXPERIMENT).id)
        points = [Metric(HISTORY_KEY, 1.0 / (i + 1), i, now + i) for i in range(history_steps)]
        store.log_batch(run.id, points)
    finally:
        store.close()
    return time.perf_counter() - t0


def copy_db(src: Path, dest: Path) -> None:
    """A consistent copy of a SQLite database (WAL included) through the backup API."""
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()


def count_metrics(db: Path, run_ids: list[str]) -> int:
    store = SqlTrackingStore(f"sqlite:///{db}")
    try:
        return sum(store.count_metrics(r) for r in run_ids)
    finally:
        store.close()


# -- workloads ---------------------------------------------------------------------------------


def percall(client: Client, points: int) -> dict[str, Any]:
    """``run.log_metric`` per point; the clock stops when ``end()`` has stored everything."""
    run = client.start_run(new_experiment(client, "bench-percall"), **RUN_OPTIONS)
    t0 = time.perf_counter()
    for i in range(points):
        run.log_metric("loss", 1.0 / (i + 1), step=i)
    run.end()
    seconds = time.perf_counter() - t0
    stored = len(client.get_metric_history(run.id, "loss"))
    return {"seconds": seconds, "points": points, "rate": points / seconds, "stored": stored}


def batched(client: Client, runs: int, keys: int, steps: int) -> dict[str, Any]:
    """A training loop per run (steps x keys ``log_metric`` calls), each run ended in the clock."""
    experiment = new_experiment(client, "bench-batched")
    names = [f"m{k}" for k in range(keys)]
    run_ids = []
    t0 = time.perf_counter()
    for _ in range(runs):
        run = client.start_run(experiment, **RUN_OPTIONS)
        run_ids.append(run.id)
        for step in range(steps):
            for k, key in enumerate(names):
                run.log_metric(key, step * 0.001 + k, step=step)
        run.end()
    seconds = time.perf_counter() - t0
    points = runs * keys * steps
    return {"seconds": seconds, "points": points, "rate": points / seconds, "run_ids": run_ids}


def search(client: Client, repeat: int) -> dict[str, Any]:
    def once() -> int:
        found, token = 0, None
        while True:
            page = client.search_runs(
                SEARCH_EXPERIMENT, SEARCH_FILTER, max_results=1000, page_token=token
            )
            found += len(page.items)
            token = page.next_page_token
            if not token:
                return found

    times, found = timed(once, repeat)
    return {"ms": statistics.median(times), "times_ms": times, "matches": found}


def history_run(client: Client) -> str:
    return client.search_runs(HISTORY_EXPERIMENT, max_results=1).items[0].id


def history(client: Client, repeat: int) -> dict[str, Any]:
    run_id = history_run(client)
    times, n = timed(lambda: len(client.get_metric_history(run_id, HISTORY_KEY)), repeat)
    return {"ms": statistics.median(times), "times_ms": times, "points": n}


def latency(client: Client, repeat: int) -> dict[str, Any]:
    run_id = history_run(client)
    times, _ = timed(lambda: client.get_run(run_id), repeat)
    return {"ms": statistics.median(times), "times_ms": times}


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    fn()  # warm-up, as on the MLflow side
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


# -- the floor ---------------------------------------------------------------------------------

FLOOR_DDL = (
    "CREATE TABLE metrics (run_id VARCHAR(32) NOT NULL, key VARCHAR(250) NOT NULL, "
    "step BIGINT NOT NULL, timestamp BIGINT NOT NULL, value FLOAT)",
    "CREATE INDEX ix_metrics_run_id_key_step ON metrics (run_id, key, step)",
)


def sqlite_floor(workdir: Path, runs: int, keys: int, steps: int, tries: int = 3) -> float:
    """Points/s of one ``executemany`` of the same rows into loopwright's metrics table shape.

    WAL and ``synchronous=NORMAL`` as loopwright uses them, one transaction; best of ``tries``
    fresh databases (a floor is the fastest the database itself can go).
    """
    ts = int(time.time() * 1000)
    rows = [
        (run_id, f"m{k}", step, ts, step * 0.001 + k)
        for run_id in (uuid.uuid4().hex for _ in range(runs))
        for step in range(steps)
        for k in range(keys)
    ]
    best = 0.0
    for i in range(tries):
        conn = sqlite3.connect(workdir / f"floor-{i}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for ddl in FLOOR_DDL:
            conn.execute(ddl)
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        best = max(best, len(rows) / (time.perf_counter() - t0))
        conn.close()
    return best
