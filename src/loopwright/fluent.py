"""Module-level helpers (``lw.start_run``, ``lw.log_metric``...) over one default client.

The default client is built on first use from ``LOOPWRIGHT_*`` settings, or from the URI given to
:func:`set_tracking_uri` — never at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from loopwright.client import Client
from loopwright.errors import InvalidInput
from loopwright.tracking.entities import DatasetInput, Run, RunStatus
from loopwright.tracking.run import ActiveRun, active_run

_lock = threading.Lock()
_client: Client | None = None
_uri: str | None = None


def set_tracking_uri(uri: str | None) -> None:
    """Point the module-level helpers at another store (a directory, database URL or server)."""
    global _client, _uri
    with _lock:
        if _client is not None:
            _client.close()
        _uri, _client = uri, None


def get_tracking_uri() -> str:
    return default_client().tracking_uri


def default_client() -> Client:
    global _client
    with _lock:
        if _client is None:
            _client = Client(_uri)
        return _client


def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    nested: bool = False,
    run_id: str | None = None,
    capture_environment: bool | None = None,
    monitor_resources: bool = True,
) -> ActiveRun:
    """Start (or resume) a run on the default client; ``nested=True`` makes it a child run."""
    parent = active_run()
    if parent is not None and not nested:
        raise InvalidInput(
            f"run {parent.id} is already active; end it first or pass nested=True",
            field="nested",
        )
    return default_client().start_run(
        experiment if experiment is not None or parent is None else _experiment_name(parent),
        run_name=run_name,
        tags=dict(tags or {}),
        parent_run_id=parent.id if parent is not None else None,
        run_id=run_id,
        capture_environment=capture_environment,
        monitor_resources=monitor_resources,
    )


def _experiment_name(run: ActiveRun) -> str:
    return run.client.get_experiment(run.experiment_id).name


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> Run | None:
    run = active_run()
    return None if run is None else run.end(status)


def _require_run() -> ActiveRun:
    run = active_run()
    if run is None:
        raise InvalidInput("no active run: call lw.start_run() first", field="run")
    return run


def log_param(key: str, value: Any) -> None:
    _require_run().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _require_run().log_params(params)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    _require_run().log_metric(key, value, step=step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _require_run().log_metrics(metrics, step=step)


def set_tag(key: str, value: Any) -> None:
    _require_run().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _require_run().set_tags(tags)


def log_artifact(local_path: str, artifact_path: str | None = None) -> None:
    _require_run().log_artifact(local_path, artifact_path)


def log_dataset(
    data: Any, name: str = "train", context: str = "train", source: str | None = None
) -> DatasetInput:
    return _require_run().log_dataset(data, name=name, context=context, source=source)
