"""loopwright's side of ``bench/registry.py``: the same workloads as ``_mlflow_registry.py``.

Same model, same warm-up, same span in the clock. Runs are started without environment capture
or resource monitoring (as in the tracking bench), so the figures are the registry's own.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _loopwright_side import RUN_OPTIONS, new_experiment, timed
from _registry_shared import ALIAS, MODEL_PATH, TRUSTED, build_model, predict_one

from loopwright import Client


def _logged_run(client: Client, experiment: str, model: Any) -> str:
    run = client.start_run(experiment, **RUN_OPTIONS)
    run.log_model(model, MODEL_PATH)
    run.end()
    return run.id


def _name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def model_size(trees: int) -> dict[str, Any]:
    from loopwright.registry.flavors import save_sklearn

    return {"model_bytes": len(save_sklearn(build_model(trees)[0]))}


def register(client: Client, trees: int, repeat: int) -> dict[str, Any]:
    """``client.registry.register(name, run_id)`` on runs that logged the model (setup)."""
    model, _ = build_model(trees)
    exp = new_experiment(client, "bench-register")
    runs = [_logged_run(client, exp, model) for _ in range(repeat + 1)]
    name = _name("bench-register")
    times = []
    for i, run_id in enumerate(runs):
        t0 = time.perf_counter()
        client.registry.register(name, run_id, MODEL_PATH)
        if i:  # the first one (which also creates the registered model) is the warm-up
            times.append(_ms_since(t0))
    return {"ms": statistics.median(times), "times_ms": times}


def log_register(client: Client, trees: int, repeat: int) -> dict[str, Any]:
    """End to end: a run that logs the model, then its registration, all in the clock."""
    model, _ = build_model(trees)
    exp = new_experiment(client, "bench-log-register")
    name = _name("bench-log-register")
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        client.registry.register(name, _logged_run(client, exp, model), MODEL_PATH)
        if i:
            times.append(_ms_since(t0))
    return {"ms": statistics.median(times), "times_ms": times}


def champion(client: Client, trees: int) -> str:
    """Setup for ``resolve`` and ``load``: one registered version under the alias."""
    model, _ = build_model(trees)
    run_id = _logged_run(client, new_experiment(client, "bench-champion"), model)
    name = _name("bench-champion")
    mv = client.registry.register(name, run_id, MODEL_PATH)
    client.registry.set_alias(name, ALIAS, mv.version)
    return name


def resolve(client: Client, trees: int, repeat: int) -> dict[str, Any]:
    uri = f"{champion(client, trees)}@{ALIAS}"
    times, _ = timed(lambda: client.registry.resolve(uri), repeat)
    return {"ms": statistics.median(times), "times_ms": times}


def load(client: Client, trees: int, repeat: int) -> dict[str, Any]:
    """``client.registry.load("<name>@champion")``; a 1-row predict after each."""
    uri = f"{champion(client, trees)}@{ALIAS}"
    _, row = build_model(trees)
    client.registry.load(uri, trusted=TRUSTED)  # warm-up
    times, predict_ms, proba = [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        loaded = client.registry.load(uri, trusted=TRUSTED)
        times.append(_ms_since(t0))
        t0 = time.perf_counter()
        proba = predict_one(loaded, row)  # LoadedModel.predict_proba
        predict_ms.append(_ms_since(t0))
    return {"ms": statistics.median(times), "times_ms": times,
            "predict_ms": statistics.median(predict_ms), "proba": proba}  # fmt: skip
