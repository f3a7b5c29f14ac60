"""MLflow's model-registry workloads for ``bench/registry.py``, run inside ``_mlflow_worker.py``.

Each workload builds the shared forest (``_registry_shared.build_model``) and does its setup
before its clock starts, then prints one ``RESULT`` line as the worker's own workloads do.

Models are logged with ``mlflow.sklearn.log_model`` in MLflow's default format, which outside
Databricks is skops since MLflow 3 (``model.skops``; the forest's tree type is passed as
``skops_trusted_types``, as loopwright's load is given it). Requirement inference (a subprocess)
is skipped with an explicit ``pip_requirements``, except in ``reg_log_register_default``.
``reg_load_pickle`` loads a cloudpickle-format copy, MLflow's other (pre-3, Databricks) default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import mlflow
import mlflow.sklearn
from _registry_shared import (
    ALIAS,
    MODEL_PATH,
    PIP_REQUIREMENTS,
    TRUSTED,
    build_model,
    predict_one,
)
from mlflow import MlflowClient

FAST = {"pip_requirements": PIP_REQUIREMENTS, "skops_trusted_types": TRUSTED}
PICKLE = {**FAST, "serialization_format": "cloudpickle", "skops_trusted_types": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trees", type=int, default=170)
    parser.add_argument("--repeat-register", type=int, default=10)
    parser.add_argument("--repeat-resolve", type=int, default=50)
    parser.add_argument("--repeat-load", type=int, default=10)
    parser.add_argument("--repeat-default", type=int, default=3)


def emit(workload: str, **fields: Any) -> None:
    """One ``RESULT {json}`` line, the worker's protocol (see ``_mlflow_worker.emit``)."""
    print("RESULT " + json.dumps({"workload": workload, **fields}), flush=True)


def _name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def _logged_run(experiment_id: str, model: Any, log_kw: dict[str, Any]) -> str:
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.sklearn.log_model(model, name=MODEL_PATH, **log_kw)
    return str(run.info.run_id)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


# -- workloads ---------------------------------------------------------------------------------


def model_size(client: MlflowClient, args: argparse.Namespace) -> None:
    """The bytes of the model file in each format, and of the whole model directory."""
    model, _ = build_model(args.trees)
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, kw in (("skops", FAST), ("cloudpickle", PICKLE)):
            path = os.path.join(tmp, fmt)
            mlflow.sklearn.save_model(model, path, **kw)
            files = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
            model_file = "model.skops" if fmt == "skops" else "model.pkl"
            sizes[fmt] = {"model_bytes": files[model_file], "dir_bytes": sum(files.values())}
    default = mlflow.sklearn._get_default_serialization_format()
    emit("reg_size", formats=sizes, default_format=default, version=mlflow.__version__)


def register(client: MlflowClient, args: argparse.Namespace) -> None:
    """``mlflow.register_model("runs:/<id>/model", name)`` on runs that logged the model (setup)."""
    model, _ = build_model(args.trees)
    exp = client.create_experiment(_name("bench-register"))
    runs = [_logged_run(exp, model, FAST) for _ in range(args.repeat_register + 1)]
    name = _name("bench-register")
    times = []
    for i, run_id in enumerate(runs):
        t0 = time.perf_counter()
        mlflow.register_model(f"runs:/{run_id}/{MODEL_PATH}", name)
        if i:  # the first one (which also creates the registered model) is the warm-up
            times.append(_ms_since(t0))
    emit("reg_register", ms=statistics.median(times), times_ms=times)


def log_register(client: MlflowClient, args: argparse.Namespace, default: bool = False) -> None:
    """End to end: a run that logs the model, then its registration, all in the clock."""
    model, _ = build_model(args.trees)
    exp = client.create_experiment(_name("bench-log-register"))
    name = _name("bench-log-register")
    log_kw = {"skops_trusted_types": TRUSTED} if default else FAST
    times = []
    for i in range((args.repeat_default if default else args.repeat_register) + 1):
        t0 = time.perf_counter()
        run_id = _logged_run(exp, model, log_kw)
        mlflow.register_model(f"runs:/{run_id}/{MODEL_PATH}", name)
        if i:
            times.append(_ms_since(t0))
    workload = "reg_log_register_default" if default else "reg_log_register"
    emit(workload, ms=statistics.median(times), times_ms=times)


def _champion(client: MlflowClient, args: argparse.Namespace, log_kw: dict[str, Any]) -> str:
    """Setup for ``resolve`` and ``load``: one registered version under the alias."""
    model, _ = build_model(args.trees)
    exp = client.create_experiment(_name("bench-champion"))
    run_id = _logged_run(exp, model, log_kw)
    name = _name("bench-champion")
    mv = mlflow.register_model(f"runs:/{run_id}/{MODEL_PATH}", name)
    client.set_registered_model_alias(name, ALIAS, mv.version)
    return name


def resolve(client: MlflowClient, args: argparse.Namespace) -> None:
    name = _champion(client, args, FAST)
    client.get_model_version_by_alias(name, ALIAS)  # warm-up
    times = []
    for _ in range(args.repeat_resolve):
        t0 = time.perf_counter()
        client.get_model_version_by_alias(name, ALIAS)
        times.append(_ms_since(t0))
    emit("reg_resolve", ms=statistics.median(times), times_ms=times)


def load(client: MlflowClient, args: argparse.Namespace, log_kw: dict[str, Any] = FAST) -> None:
    """``mlflow.sklearn.load_model("models:/<name>@champion")``; a 1-row predict after each."""
    name = _champion(client, args, log_kw)
    _, row = build_model(args.trees)
    uri = f"models:/{name}@{ALIAS}"
    mlflow.sklearn.load_model(uri)  # warm-up
    times, predict_ms, proba = [], [], None
    for _ in range(args.repeat_load):
        t0 = time.perf_counter()
        loaded = mlflow.sklearn.load_model(uri)
        times.append(_ms_since(t0))
        t0 = time.perf_counter()
        proba = predict_one(loaded, row)
        predict_ms.append(_ms_since(t0))
    emit("reg_load_pickle" if log_kw is PICKLE else "reg_load", ms=statistics.median(times),
         times_ms=times, predict_ms=statistics.median(predict_ms), proba=proba)  # fmt: skip


WORKLOADS: dict[str, Callable[[MlflowClient, argparse.Namespace], None]] = {
    "reg_size": model_size,
    "reg_register": register,
    "reg_log_register": log_register,
    "reg_log_register_default": lambda c, a: log_register(c, a, default=True),
    "reg_resolve": resolve,
    "reg_load": load,
    "reg_load_pickle": lambda c, a: load(c, a, PICKLE),
}
