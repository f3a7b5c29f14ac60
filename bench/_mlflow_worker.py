"""The MLflow side of ``tracking.py`` and ``registry.py``, run with MLflow's own interpreter.

MLflow lives in a separate virtual environment (its dependencies clash with loopwright's), so the
bench drives it through this script::

    /work/.mlflow-venv/bin/python bench/_mlflow_worker.py WORKLOADS --uri URI [sizes...]

``WORKLOADS`` is a comma-separated list of ``seed``, ``percall``, ``percall_async``, ``batched``,
``search``, ``history`` and ``latency`` (for ``bench/tracking.py``) and the ``reg_*`` workloads of
``_mlflow_registry.py`` (for ``bench/registry.py``). Importing MLflow and each workload's setup
happen before its clock starts. Each finished workload prints one line ``RESULT {json}`` on
stdout; everything else MLflow says goes to stderr. The script imports nothing from loopwright.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import _mlflow_registry
import mlflow
from _shared import HISTORY_EXPERIMENT, HISTORY_KEY, SEARCH_EXPERIMENT, SEARCH_FILTER, search_rows
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

BATCH_LIMIT = 1000  # MLflow's maximum number of metrics per log_batch call


def emit(workload: str, **fields: Any) -> None:
    print("RESULT " + json.dumps({"workload": workload, **fields}), flush=True)


def new_experiment(client: MlflowClient, prefix: str) -> str:
    return client.create_experiment(f"{prefix}-{time.time_ns()}")


# -- workloads ---------------------------------------------------------------------------------


def seed(client: MlflowClient, args: argparse.Namespace) -> None:
    """Untimed setup for ``search`` and ``history``: the runs, with the client's fastest calls."""
    t0 = time.perf_counter()
    exp = client.create_experiment(SEARCH_EXPERIMENT)
    now = int(time.time() * 1000)
    for auc, model, team in search_rows(args.runs):
        run = client.create_run(exp, tags={"team": team})
        client.log_batch(
            run.info.run_id, metrics=[Metric("auc", auc, now, 0)], params=[Param("model", model)]
        )
    hist_exp = client.create_experiment(HISTORY_EXPERIMENT)
    run = client.create_run(hist_exp)
    points = [Metric(HISTORY_KEY, 1.0 / (i + 1), now + i, i) for i in range(args.history_steps)]
    for i in range(0, len(points), BATCH_LIMIT):
        client.log_batch(run.info.run_id, metrics=points[i : i + BATCH_LIMIT])
    emit("seed", seconds=time.perf_counter() - t0, runs=args.runs, version=mlflow.__version__)


def percall(client: MlflowClient, args: argparse.Namespace, synchronous: bool = True) -> None:
    """``mlflow.log_metric`` once per point; the clock stops when ``end_run`` has returned."""
    exp = new_experiment(client, "bench-percall")
    mlflow.start_run(experiment_id=exp)
    t0 = time.perf_counter()
    for i in range(args.points):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=synchronous)
    mlflow.end_run()  # with synchronous=False this waits for the queue to drain
    seconds = time.perf_counter() - t0
    name = "percall" if synchronous else "percall_async"
    emit(name, seconds=seconds, points=args.points, rate=args.points / seconds)


def batched(client: MlflowClient, args: argparse.Namespace) -> None:
    """``MlflowClient.log_batch`` in chunks of 1,000 metrics (its limit), then end each run."""
    exp = new_experiment(client, "bench-batched")
    keys = [f"m{k}" for k in range(args.keys)]
    run_ids = []
    t0 = time.perf_counter()
    for _ in range(args.runs):
        run_id = client.create_run(exp).info.run_id
        run_ids.append(run_id)
        chunk: list[Metric] = []
        for step in range(args.steps):
            ts = int(time.time() * 1000)
            for k, key in enumerate(keys):
                chunk.append(Metric(key, step * 0.001 + k, ts, step))
                if len(chunk) == BATCH_LIMIT:
                    client.log_batch(run_id, metrics=chunk)
                    chunk = []
        if chunk:
            client.log_batch(run_id, metrics=chunk)
        client.set_terminated(run_id)
    seconds = time.perf_counter() - t0
    points = args.runs * args.keys * args.steps
    emit("batched", seconds=seconds, points=points, rate=points / seconds, run_ids=run_ids)


def search(client: MlflowClient, args: argparse.Namespace) -> None:
    exp = client.get_experiment_by_name(SEARCH_EXPERIMENT).experiment_id

    def once() -> int:
        found, token = 0, None
        while True:
            page = client.search_runs([exp], SEARCH_FILTER, max_results=1000, page_token=token)
            found += len(page)
            token = page.token
            if not token:
                return found

    times, found = timed(once, args.repeat_search)
    emit("search", ms=statistics.median(times), times_ms=times, matches=found)


def history(client: MlflowClient, args: argparse.Namespace) -> None:
    exp = client.get_experiment_by_name(HISTORY_EXPERIMENT).experiment_id
    run_id = client.search_runs([exp], max_results=1)[0].info.run_id
    times, n = timed(
        lambda: len(client.get_metric_history(run_id, HISTORY_KEY)), args.repeat_history
    )
    emit("history", ms=statistics.median(times), times_ms=times, points=n)


def latency(client: MlflowClient, args: argparse.Namespace) -> None:
    """The smallest round trip: ``get_run``, repeated on one kept-alive session."""
    exp = client.get_experiment_by_name(HISTORY_EXPERIMENT).experiment_id
    run_id = client.search_runs([exp], max_results=1)[0].info.run_id
    times, _ = timed(lambda: client.get_run(run_id), args.repeat_latency)
    emit("latency", ms=statistics.median(times), times_ms=times)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    fn()  # warm-up: first-call imports and connection set-up are not what we measure
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


WORKLOADS: dict[str, Callable[[MlflowClient, argparse.Namespace], None]] = {
    "seed": seed,
    "percall": percall,
    "percall_async": lambda c, a: percall(c, a, synchronous=False),
    "batched": batched,
    "search": search,
    "history": history,
    "latency": latency,
    **_mlflow_registry.WORKLOADS,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--uri", required=True, help="sqlite:///... or http://127.0.0.1:PORT")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--history-steps", type=int, default=500)
    parser.add_argument("--repeat-search", type=int, default=5)
    parser.add_argument("--repeat-history", type=int, default=20)
    parser.add_argument("--repeat-latency", type=int, default=50)
    _mlflow_registry.add_arguments(parser)
    args = parser.parse_args(argv)
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {sorted(WORKLOADS)}")
    mlflow.set_tracking_uri(args.uri)
    client = MlflowClient(args.uri)
    for name in names:
        WORKLOADS[name](client, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
