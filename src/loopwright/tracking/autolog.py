"""scikit-learn autologging: every outermost ``fit`` becomes a logged run, with no code changes.

:func:`autolog` wraps ``fit`` on each class that defines it in the MRO of scikit-learn's
estimators (``BaseForest.fit`` serves every forest), keeping the original on the wrapper so
``autolog(disable=True)`` puts it back. A meta-estimator's inner fits (a Pipeline's steps, a grid
search's candidates) run inside the outer one; a thread-local depth counter logs only the
outermost call. Logging is best effort: its failures become a ``logging`` warning and never
break the user's fit.

Known limit: inner fits that a meta-estimator runs on *other threads* (joblib's threading
backend) do not see the depth counter and are logged too. Process-based workers (joblib's
default) import scikit-learn afresh, unpatched, and are not logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import numbers
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopwright.registry.flavors import SKLEARN_FILE_NAME

__all__ = ["autolog"]

logger = logging.getLogger(__name__)

MODEL_ARTIFACT = f"model/{SKLEARN_FILE_NAME}"
_MAX_PARAM_CHARS = 1000  # a Pipeline's repr can be huge; a param is a label, not a dump


@dataclass(frozen=True, slots=True)
class _Config:
    log_models: bool
    log_datasets: bool


_config: _Config | None = None
_originals: dict[type, Callable[..., Any]] = {}  # owner class -> its unpatched fit
_local = threading.local()


def autolog(*, log_models: bool = True, log_datasets: bool = True, disable: bool = False) -> None:
    """Turn scikit-learn autologging on (again, with new options) or off with ``disable=True``.

    Each outermost fit logs its params (``get_params(deep=False)``, keys not yet logged on the
    run), ``training_score`` and ``fit_duration_s``, the training data, the fitted model as
    ``model/model.skops`` and the tags ``lw.model.flavor`` and ``lw.estimator``. Without an
    active run, the fit gets its own run, ended when the fit returns.
    """
    global _config
    if disable:
        _config = None
        _unpatch_all()
        return
    _config = _Config(log_models=log_models, log_datasets=log_datasets)
    for owner in _fit_owners():
        if owner not in _originals:
            _patch(owner)


def _fit_owners() -> set[type]:
    """The classes whose own ``fit`` every scikit-learn estimator ends up calling."""
    from sklearn.utils import all_estimators

    owners = set()
    for _, cls in all_estimators():
        owner = next((k for k in cls.__mro__ if "fit" in k.__dict__), None)
        if owner is not None and inspect.isfunction(owner.__dict__["fit"]):
            owners.add(owner)
    return owners


def _patch(owner: type) -> None:
    original = owner.__dict__["fit"]
    _originals[owner] = original
    owner.fit = _wrap(original)  # type: ignore[attr-defined]


def _unpatch_all() -> None:
    while _originals:
        owner, original = _originals.popitem()
        owner.fit = original  # type: ignore[attr-defined]


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = _config
        if config is None or getattr(_local, "depth", 0) > 0:
            return original(self, *args, **kwargs)
        with _outermost():
            X, y = _training_data(signature, self, args, kwargs)
            return _logged_fit(config, original, self, args, kwargs, X, y)

    fit._lw_original = original  # type: ignore[attr-defined]
    return fit


@contextmanager
def _outermost() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def _training_data(
    signature: inspect.Signature, self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    """The first argument after ``self`` is the data (``X``, ``raw_documents``, ...); the
    second is the target when it is called ``y`` or ``Y``."""
    try:
        bound = signature.bind(self, *args, **kwargs).arguments
    except TypeError:
        return None, None  # the real fit will raise the user's TypeError
    names = list(signature.parameters)[1:3]
    X = bound.get(names[0]) if names else None
    y = bound.get(names[1]) if len(names) > 1 and names[1] in ("y", "Y") else None
    return X, y


def _logged_fit(
    config: _Config,
    original: Callable[..., Any],
    estimator: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    X: Any,
    y: Any,
) -> Any:
    run, owned = _best_effort(_ensure_run, "start a run") or (None, False)
    if run is None:
        return original(estimator, *args, **kwargs)
    _best_effort(lambda: _log_before_fit(config, run, estimator, X, y), "log params and data")
    start = time.perf_counter()
    try:
        result = original(estimator, *args, **kwargs)
    except BaseException as exc:
        if owned:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            _best_effort(lambda: run.end(status=status), "end the run")
        raise
    duration = time.perf_counter() - start
    _best_effort(lambda: _log_metrics(run, estimator, X, y, duration), "log metrics")
    if config.log_models:
        _best_effort(lambda: _log_model(run, estimator), "log the model")
    if owned:
        _best_effort(lambda: run.end(status="FINISHED"), "end the run")
    return result


def _ensure_run() -> tuple[Any, bool]:
    """The active run, or a new one this fit owns (and ends)."""
    import loopwright as lw

    run = lw.active_run()
    if run is not None:
        return run, False
    return lw.start_run(), True


def _log_before_fit(config: _Config, run: Any, estimator: Any, X: Any, y: Any) -> None:
    cls = type(estimator)
    run.set_tags({"lw.estimator": f"{cls.__module__}.{cls.__qualname__}"})
    _log_new_params(run, estimator.get_params(deep=False))
    if config.log_datasets:
        _log_table(run, X, name="train", context="train")
        _log_table(run, y, name="train_labels", context="train_labels")


def _log_metrics(run: Any, estimator: Any, X: Any, y: Any, duration: float) -> None:
    metrics = {"fit_duration_s": duration}
    score = _training_score(estimator, X, y)
    if score is not None:
        metrics["training_score"] = score
    best_cv = getattr(estimator, "best_score_", None)  # GridSearchCV and friends
    if isinstance(best_cv, numbers.Real):
        metrics["best_cv_score"] = float(best_cv)
        _log_new_params(run, {f"best.{k}": v for k, v in estimator.best_params_.items()})
    run.log_metrics(metrics)


def _log_model(run: Any, estimator: Any) -> None:
    run.log_model(estimator, "model")  # -> model/model.skops, tagged lw.model.flavor=sklearn


def _log_new_params(run: Any, params: dict[str, Any]) -> None:
    """Params are write-once: a second fit in the same run only adds keys it has not logged."""
    logged = run.params
    new = {k: _param_str(v) for k, v in params.items() if k not in logged}
    if new:
        run.log_params(new)


def _param_str(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _log_table(run: Any, data: Any, *, name: str, context: str) -> None:
    table = _as_table(data)
    if table is not None:
        run.log_dataset(table, name=name, context=context)


def _as_table(data: Any) -> Any:
    """What :func:`describe_dataset` accepts; lists become arrays, sparse matrices are skipped."""
    if data is None or isinstance(data, pd.DataFrame | pd.Series | np.ndarray):
        return data
    if isinstance(data, list | tuple):
        return np.asarray(data)
    return None


def _training_score(estimator: Any, X: Any, y: Any) -> float | None:
    if y is None or not callable(getattr(estimator, "score", None)):
        return None
    try:
        return float(estimator.score(X, y))
    except Exception as exc:
        logger.debug("no training score for %s: %s", type(estimator).__name__, exc)
        return None


def _best_effort(action: Callable[[], Any], what: str) -> Any:
    """Run a logging step; on any failure warn and carry on, so the user's fit is unaffected."""
    try:
        return action()
    except Exception as exc:
        logger.warning("loopwright autolog could not %s: %s", what, exc, exc_info=True)
        return None
