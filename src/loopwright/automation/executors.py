"""Where a retraining's entry point runs: in this process, or as a Ray task.

Both executors call the same function with the same :class:`TrainingData` and hand the fitted
model back to the caller; the controller then logs and registers it in the driver, so tracking,
lineage and the registry see no difference. Ray only moves the CPU work: with
``executor: ray`` the entry point is imported and called inside a Ray worker (on a cluster when
``ray.init`` was already called with an address, else on a local instance started here with
``num_cpus=1`` and no dashboard).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from loopwright.automation.data import TrainingData
from loopwright.errors import InvalidInput

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "get_executor",
    "load_entry_point",
]


def load_entry_point(spec: str, field: str = "train.entry_point") -> Callable[[TrainingData], Any]:
    """``package.module:function`` (the function may be ``Class.method``) -> the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(
            f"entry point {spec!r} must look like package.module:function", field=field
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"cannot import {module_name!r} for {spec!r}: {exc}", field=field
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInput(
                f"{module_name!r} has no {attr!r} (entry point {spec!r})", field=field
            ) from None
    if not callable(target):
        raise InvalidInput(f"entry point {spec!r} is not callable", field=field)
    return target  # type: ignore[no-any-return]


def fit(entry_point: str, data: TrainingData) -> Any:
    """Import and call the entry point; what both executors run (Ray: inside the worker)."""
    model = load_entry_point(entry_point)(data)
    if model is None:
        raise InvalidInput(
            f"entry point {entry_point!r} returned None; it must return the fitted model",
            field="train.entry_point",
        )
    return model


class Executor(Protocol):
    name: str

    def fit(self, entry_point: str, data: TrainingData) -> Any: ...


class LocalExecutor:
    """In this process, on this thread."""

    name = "local"

    def fit(self, entry_point: str, data: TrainingData) -> Any:
        return fit(entry_point, data)


class RayExecutor:
    """As one Ray task (``num_cpus`` per task); the model comes back to the driver.

    A local instance started here is left running for later retrainings (starting one costs
    seconds); :meth:`shutdown` stops it. The driver's ``sys.path`` is handed to the workers so an
    entry point importable here is importable there.
    """

    name = "ray"

    def __init__(self, num_cpus: float = 1) -> None:
        self.num_cpus = num_cpus
        self.started = False

    def _ensure(self) -> Any:
        try:
            import ray
        except ImportError:
            raise InvalidInput(
                "executor: ray needs the ray package (pip install 'ray[default]')",
                field="train.executor",
            ) from None
        if not ray.is_initialized():
            path = [p for p in sys.path if p]
            ray.init(
                num_cpus=max(1, int(self.num_cpus)),
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(path)}},
            )
            self.started = True
        return ray

    def fit(self, entry_point: str, data: TrainingData) -> Any:
        ray = self._ensure()
        task = ray.remote(num_cpus=self.num_cpus, max_retries=0)(fit)
        try:
            return ray.get(task.remote(entry_point, data))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            if cause is not None:
                raise cause from None
            raise

    def shutdown(self) -> None:
        """Stop the local Ray instance this executor started (a no-op otherwise)."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def get_executor(name: str) -> Executor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise InvalidInput(
            f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}",
            field="train.executor",
        ) from None
