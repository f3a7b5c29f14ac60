"""Evaluation metrics as pure, vectorised functions behind one explicit registry.

Gates, fairness analysis and reports all name metrics by string, so every metric lives in
:data:`METRICS` with what it applies to (``task``), what it reads (``needs``: predicted labels or
class probabilities) and which way is better (``higher_is_better``, used by the no-regression
gate). Nothing here imports scikit-learn: the numbers are checked against ``sklearn.metrics`` in
the tests, and the package stays usable without the ``sklearn`` extra.

Conventions (the same as scikit-learn's defaults where they exist):

- **binary vs multiclass** is decided by the classes: the model's ``classes`` when given, else
  the labels seen in ``y_true`` and ``y_pred``. Two or fewer classes is binary.
- **binary** precision / recall / f1 score the *positive class*, the larger label (``1`` of
  ``{0, 1}``); roc_auc reads that class's probability column.
- **multiclass** precision / recall / f1 are macro averages over the labels present in
  ``y_true`` or ``y_pred``; roc_auc is the one-vs-rest macro average over the probability columns.
- an undefined ratio (no predicted positives for precision, ...) is ``0.0``, as scikit-learn's
  ``zero_division=0``; roc_auc with a single class in ``y_true`` is ``nan`` (not measurable).
- probability columns follow ``classes`` (``predict_proba``'s order); log_loss clips to
  ``[eps, 1 - eps]`` with the float64 machine epsilon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from loopwright.errors import InvalidInput

Task = Literal["classification", "regression"]
Needs = Literal["labels", "proba"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One registered metric: what it applies to, what it reads and which way is better."""

    name: str
    task: Task
    needs: Needs
    higher_is_better: bool
    fn: Callable[..., float]


# -- helpers ----------------------------------------------------------------------------------


def _classes(y_true: np.ndarray, y_pred: np.ndarray | None, classes: Any) -> np.ndarray:
    """The sorted class labels: the model's when known, else those seen in the data."""
    if classes is not None:
        return np.unique(np.asarray(classes))
    seen = y_true if y_pred is None else np.concatenate([y_true, y_pred])
    return np.unique(seen)


def _confusion_counts(
    y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, predicted counts and true counts, with one bincount each."""
    t = np.searchsorted(labels, y_true)
    p = np.searchsorted(labels, y_pred)
    n = len(labels)
    tp = np.bincount(t[t == p], minlength=n).astype(float)
    return tp, np.bincount(p, minlength=n).astype(float), np.bincount(t, minlength=n).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros_like(num, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _per_label(
    kind: str, y_true: Any, y_pred: Any, classes: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-label scores for ``kind`` and, in the binary case, the index of the positive class."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    known = _classes(yt, yp, classes)
    labels = np.unique(np.concatenate([yt, yp]))
    tp, pred, true = _confusion_counts(yt, yp, labels)
    scores = {
        "precision": lambda: _ratio(tp, pred),
        "recall": lambda: _ratio(tp, true),
        "f1": lambda: _ratio(2 * tp, pred + true),
    }[kind]()
    if len(known) <= 2:
        positive = np.searchsorted(labels, known[-1])
        found = positive < len(labels) and labels[positive] == known[-1]
        return scores, np.array(positive if found else -1)
    return scores, None


def _reduce(scores: np.ndarray, positive: np.ndarray | None) -> float:
    """The positive class's score (binary; 0 if it never occurs) or the macro mean."""
    if positive is None:
        return float(np.mean(scores))
    return float(scores[positive]) if positive >= 0 else 0.0


def _proba(proba: Any, n_rows: int) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[0] != n_rows:
        raise InvalidInput(
            f"proba must be a 2-D array with one row per label (columns = classes), "
            f"got shape {p.shape} for {n_rows} labels",
            field="proba",
        )
    return p


def _proba_classes(y_true: np.ndarray, proba: np.ndarray, classes: Any) -> np.ndarray:
    """The class of each probability column; every label in ``y_true`` must have one."""
    cls = np.asarray(classes) if classes is not None else np.unique(y_true)
    if len(cls) != proba.shape[1]:
        raise InvalidInput(
            f"proba has {proba.shape[1]} columns but there are {len(cls)} classes {list(cls)}; "
            "pass the model's classes",
            field="proba",
        )
    unknown = np.setdiff1d(np.unique(y_true), cls)
    if len(unknown):
        raise InvalidInput(
            f"y_true holds labels the model has no probability for: {list(unknown)}",
            field="y_true",
        )
    return cls


def _column_of(y_true: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """For each row, the probability column of its true class (``cls`` may be unsorted)."""
    order = np.argsort(cls)
    return order[np.searchsorted(cls[order], y_true)]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (what the Mann-Whitney U needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def _binary_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the rank statistic: P(score_pos > score_neg), ties half."""
    n_pos = int(np.count_nonzero(is_positive))
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(np.sum(_average_ranks(score)[is_positive]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# -- classification ---------------------------------------------------------------------------


def accuracy(y_true: Any, y_pred: Any, classes: Any = None) -> float:
    """Share of rows whose predicted label equals the true one."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def precision(y_true: Any, y_pred: Any, classes: Any = None) -> float:
    """Of the rows predicted positive, the share that are (binary; macro for multiclass)."""
    return _reduce(*_per_label("precision", y_true, y_pred, classes))


def recall(y_true: Any, y_pred: Any, classes: Any = None) -> float:
    """Of the truly positive rows, the share predicted so (binary; macro for multiclass)."""
    return _reduce(*_per_label("recall", y_true, y_pred, classes))


def f1(y_true: Any, y_pred: Any, classes: Any = None) -> float:
    """Harmonic mean of precision and recall, as ``2tp / (2tp + fp + fn)`` per label."""
    return _reduce(*_per_label("f1", y_true, y_pred, classes))


def roc_auc(y_true: Any, proba: Any, classes: Any = None) -> float:
    """Ranking quality of the probabilities: binary from the positive column, else OvR macro."""
    yt = np.asarray(y_true)
    p = _proba(proba, len(yt))
    cls = _proba_classes(yt, p, classes)
    if len(cls) <= 2:
        pos = int(np.argmax(cls == np.unique(cls)[-1]))  # the larger label's column
        return _binary_auc(yt == cls[pos], p[:, pos])
    return float(np.mean([_binary_auc(yt == c, p[:, i]) for i, c in enumerate(cls)]))


def log_loss(y_true: Any, proba: Any, classes: Any = None) -> float:
    """Mean negative log-probability given to the true class (clipped so it stays finite)."""
    yt = np.asarray(y_true)
    p = _proba(proba, len(yt))
    cls = _proba_classes(yt, p, classes)
    eps = np.finfo(np.float64).eps
    picked = p[np.arange(len(yt)), _column_of(yt, cls)]
    return float(-np.mean(np.log(np.clip(picked, eps, 1 - eps))))


# -- regression -------------------------------------------------------------------------------


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error, in the target's unit."""
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, in the target's unit; punishes large misses more than mae."""
    diff = np.asarray(y_true, float) - np.asarray(y_pred, float)
    return float(np.sqrt(np.mean(diff**2)))


def r2(y_true: Any, y_pred: Any) -> float:
    """Share of the target's variance explained; 1.0 / 0.0 for a constant target (sklearn)."""
    yt, yp = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_res = float(np.sum((yt - yp) ** 2))
    ss_tot = float(np.sum((yt - np.mean(yt)) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


# -- the registry -----------------------------------------------------------------------------

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "classification", "labels", True, accuracy),
        Metric("precision", "classification", "labels", True, precision),
        Metric("recall", "classification", "labels", True, recall),
        Metric("f1", "classification", "labels", True, f1),
        Metric("roc_auc", "classification", "proba", True, roc_auc),
        Metric("log_loss", "classification", "proba", False, log_loss),
        Metric("mae", "regression", "labels", False, mae),
        Metric("rmse", "regression", "labels", False, rmse),
        Metric("r2", "regression", "labels", True, r2),
    )
}

#: Other spellings accepted wherever a metric is named; results keep the spelling used.
ALIASES: dict[str, str] = {"auc": "roc_auc"}


def get_metric(name: str, *, field: str = "metric") -> Metric:
    """The registered metric ``name`` (or an alias); the error lists the valid names."""
    metric = METRICS.get(ALIASES.get(name, name))
    if metric is None:
        valid = ", ".join([*METRICS, *ALIASES])
        raise InvalidInput(f"unknown metric {name!r}; expected one of {valid}", field=field)
    return metric


def metric_names(task: Task, *, with_proba: bool = True) -> list[str]:
    """The metrics that apply to ``task`` (without probability metrics if there is no proba)."""
    return [
        m.name for m in METRICS.values() if m.task == task and (with_proba or m.needs == "labels")
    ]


def compute_metric(
    name: str, y_true: Any, y_pred: Any, proba: Any = None, *, classes: Any = None
) -> float:
    """One metric by name, fed the labels or the probabilities it needs."""
    metric = get_metric(name)
    if metric.task == "regression":
        return metric.fn(y_true, y_pred)
    if metric.needs == "proba":
        if proba is None:
            raise InvalidInput(f"metric {name!r} needs class probabilities", field="proba")
        return metric.fn(y_true, proba, classes)
    return metric.fn(y_true, y_pred, classes)


def compute_metrics(
    task: Task,
    y_true: Any,
    y_pred: Any,
    proba: Any = None,
    names: Iterable[str] | None = None,
    *,
    classes: Any = None,
) -> dict[str, float]:
    """Several metrics at once, keyed by the names asked for.

    ``names=None`` means every metric of ``task`` (probability metrics only when ``proba`` is
    given). ``classes`` is the model's class order, i.e. ``predict_proba``'s columns.
    """
    if task not in ("classification", "regression"):
        raise InvalidInput(f"task must be classification or regression, got {task!r}", field="task")
    wanted = list(names) if names is not None else metric_names(task, with_proba=proba is not None)
    for name in wanted:
        metric = get_metric(name, field="names")
        if metric.task != task:
            raise InvalidInput(f"metric {name!r} is for {metric.task}, not {task}", field="names")
    return {n: compute_metric(n, y_true, y_pred, proba, classes=classes) for n in wanted}
