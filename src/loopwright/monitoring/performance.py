"""Model quality on live traffic: logged predictions joined with their late labels, per window.

The input is one window of the prediction log joined with the label store
(:func:`loopwright.serving.predlog.join_labels`), or any frame with the same columns:

- ``label`` / ``label_value``: the truth as text and, when it is a number, as a float;
- ``prediction`` / ``prediction_value``: the model's answer, the same way;
- ``probabilities``: a list per row, one entry per class in the model's class order
  (``predict_proba``'s columns, i.e. the served predictor's ``classes``: sorted labels for
  scikit-learn), or a ``score`` column holding the positive class's probability directly.

Why the ``_value`` twins: a label posted as ``1`` or ``1.0`` and a prediction logged as ``1`` are
the same class, but their text differs. When both twins are complete the comparison is numeric;
otherwise both sides are compared as text, with integral numbers written without a decimal point.

The metric arithmetic is :mod:`loopwright.governance.metrics` and the fairness arithmetic is
:mod:`loopwright.governance.fairness` -- the very numbers the promotion gates use, so "AUC 0.81 at
validation, 0.74 this week" compares like with like. What this module adds is the part specific
to live traffic: unlabelled rows (label coverage), windows too small or too one-sided for a metric
to exist (``None`` and a note, never an exception), the mapping from logged probabilities to a
positive-class score, deltas against the version's validation metrics, and top-K segments.

Undefined, not zero: in a window without a predicted positive, precision does not exist; this
module reports ``None`` (with a note) where scikit-learn's ``zero_division=0`` would say ``0.0``,
because an alert on "precision < 0.5" must not fire on a quiet hour. Multiclass macro averages
keep the per-class ``zero_division=0`` convention of the gates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput
from loopwright.governance import fairness as fair
from loopwright.governance.metrics import ALIASES, compute_metric

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "PerformanceReport",
    "performance_report",
]

Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mae", "rmse", "r2")
FAIRNESS_MEASURES = ("demographic_parity_difference", "equal_opportunity_difference")

#: Prefixes a run's validation metrics commonly carry (``val_auc``); stripped to match a metric.
_BASELINE_PREFIXES = ("val_", "validation_", "valid_", "eval_", "test_")
MISSING_KEY = "null"  # the segment / group key of rows whose column value is missing


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformanceReport:
    """One window's quality: overall metrics, deltas, segments, fairness and what was undefined.

    Metric values are ``None`` when the window cannot define them; ``notes`` says why.
    """

    task: Task
    n: int
    n_labelled: int
    label_coverage: float | None
    metrics: dict[str, float | None]
    vs_baseline: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    segment_by: str | None = None
    segments: dict[str, dict[str, float | None]] = field(default_factory=dict)
    sensitive: str | None = None
    fairness: dict[str, float | None] = field(default_factory=dict)
    fairness_groups: dict[str, dict[str, float | None]] = field(default_factory=dict)
    positive: Any = None
    classes: list[Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: plain floats and ints, ``None`` for anything undefined."""
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerformanceReport:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def series(self) -> dict[str, float]:
        """Flat series points for alert rules: ``perf.<metric>``, ``perf.<metric>.delta``,
        ``labels.coverage``, ``labels.count``, ``fairness.<measure>`` (defined values only)."""
        points: dict[str, float | None] = {
            "labels.count": float(self.n_labelled),
            "labels.coverage": self.label_coverage,
        }
        points.update({f"perf.{k}": v for k, v in self.metrics.items()})
        points.update({f"perf.{k}.delta": v for k, v in self.vs_baseline.items()})
        points.update({f"fairness.{k}": v for k, v in self.fairness.items()})
        return {k: float(v) for k, v in points.items() if v is not None and math.isfinite(v)}


# -- entry point ------------------------------------------------------------------------------


def performance_report(
    frame: pd.DataFrame,
    *,
    task: Task,
    label: str = "label",
    prediction: str = "prediction",
    score: str | None = "score",
    probabilities: str = "probabilities",
    classes: Sequence[Any] | None = None,
    segment_by: str | None = None,
    top_k: int = 10,
    sensitive: str | None = None,
    min_group_size: int = 1,
    baseline: Mapping[str, float] | None = None,
    positive: Any = 1,
) -> PerformanceReport:
    """Quality of one window of predictions joined with late labels.

    ``classes`` is the model's class order (the served predictor's ``classes``); without it the
    order is the sorted labels seen (plus ``positive``), which is what scikit-learn models use.
    ``score`` names a column with the positive class's probability; when it is absent the score
    is read from ``probabilities`` at the positive class's position. ``segment_by`` and
    ``sensitive`` may name a feature as logged (``in_region``) or plainly (``region``).
    ``baseline`` is the version's validation metrics (``val_auc`` matches ``roc_auc``).
    """
    if task not in ("classification", "regression"):
        raise InvalidInput(f"task must be classification or regression, got {task!r}", field="task")
    if top_k < 1:
        raise InvalidInput("top_k must be at least 1", field="top_k")
    frame = frame.reset_index(drop=True)
    notes: list[str] = []
    data: _Regression | _Classification
    if task == "regression":
        data = _regression_data(frame, label, prediction)
    else:
        data = _classification_data(
            frame, label, prediction, score, probabilities, classes, positive, notes
        )
    if data.n == 0:
        notes.append("the window has no predictions")
    metrics = data.evaluate(np.ones(data.n, dtype=bool), notes)
    base = _baseline(baseline, task)
    deltas = {k: current - v for k, v in base.items() if (current := metrics[k]) is not None}
    report = PerformanceReport(
        task=task,
        n=data.n,
        n_labelled=int(data.labelled.sum()),
        label_coverage=None if data.n == 0 else float(data.labelled.mean()),
        metrics=metrics,
        vs_baseline=deltas,
        baseline=base,
        positive=_plain(data.positive),
        classes=None if data.classes is None else [_plain(c) for c in data.classes],
        notes=notes,
    )
    if segment_by is not None:
        column = _column_name(frame, segment_by, notes)
        if column is not None:
            segments = _segments(data, frame[column], top_k)
            report = replace(report, segment_by=column, segments=segments)
    if sensitive is not None:
        column = _column_name(frame, sensitive, notes)
        if column is not None:
            measures, groups = _fairness(data, frame[column], min_group_size, notes)
            report = replace(report, sensitive=column, fairness=measures, fairness_groups=groups)
    return report


# -- preparing the columns --------------------------------------------------------------------


def _require(frame: pd.DataFrame, name: str, field_name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    if len(frame) == 0:
        return pd.Series([None] * 0, dtype=object)
    raise InvalidInput(f"the frame has no column {name!r}", field=field_name)


def _pick(frame: pd.DataFrame, name: str, field_name: str) -> pd.Series:
    """``<name>_value`` when it holds a number wherever ``name`` holds anything, else ``name``."""
    base = _require(frame, name, field_name)
    twin = frame.get(f"{name}_value")
    if twin is not None and not bool((base.notna() & twin.isna()).any()):
        return twin
    return base


def _canon(value: Any) -> str:
    """Text for a class label; ``1``, ``1.0`` and ``"1"`` all become ``"1"``."""
    value = _plain(value)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and math.isfinite(number) else text


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _column_name(frame: pd.DataFrame, name: str, notes: list[str]) -> str | None:
    """The column as named, or as the prediction log stores an input feature (``in_<name>``)."""
    for candidate in (name, f"in_{name}"):
        if candidate in frame.columns:
            return candidate
    if len(frame):
        notes.append(f"no column {name!r} (nor 'in_{name}') to break down by")
    return None


# -- regression -------------------------------------------------------------------------------


@dataclass
class _Regression:
    n: int
    labelled: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    usable: np.ndarray  # labelled and predicted, both numeric
    classes: None = None
    positive: None = None

    def evaluate(self, rows: np.ndarray, notes: list[str] | None) -> dict[str, float | None]:
        keep = rows & self.usable
        out: dict[str, float | None] = dict.fromkeys(REGRESSION_METRICS)
        note = notes.append if notes is not None else (lambda _m: None)
        if notes is not None:
            dropped = int((rows & self.labelled & ~self.usable).sum())
            if dropped:
                note(f"{dropped} labelled rows without a numeric prediction or label left out")
        if not keep.any():
            if rows.any():
                note("no labelled rows: no regression metrics")
            return out
        yt, yp = self.y_true[keep], self.y_pred[keep]
        out["mae"] = compute_metric("mae", yt, yp)
        out["rmse"] = compute_metric("rmse", yt, yp)
        if len(yt) < 2 or float(np.ptp(yt)) == 0.0:
            note("r2 undefined: the labels are constant (or fewer than 2)")
        else:
            out["r2"] = compute_metric("r2", yt, yp)
        return out


def _regression_data(frame: pd.DataFrame, label: str, prediction: str) -> _Regression:
    raw_label = _require(frame, label, "label")
    yt = pd.to_numeric(_pick(frame, label, "label"), errors="coerce").to_numpy(float)
    yp = pd.to_numeric(_pick(frame, prediction, "prediction"), errors="coerce").to_numpy(float)
    labelled = raw_label.notna().to_numpy()
    usable = labelled & np.isfinite(yt) & np.isfinite(yp)
    return _Regression(len(frame), labelled, yt, yp, usable)


# -- classification ---------------------------------------------------------------------------


@dataclass
class _Classification:
    n: int
    labelled: np.ndarray
    predicted: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    classes: np.ndarray | None  # probability column order, in the labels' space
    positive: Any
    proba: np.ndarray | None  # (n, len(classes)), nan rows where not logged
    pos_score: np.ndarray | None  # (n,), nan where unknown

    @property
    def binary(self) -> bool:
        return self.classes is not None and len(self.classes) <= 2

    def evaluate(self, rows: np.ndarray, notes: list[str] | None) -> dict[str, float | None]:
        out: dict[str, float | None] = dict.fromkeys(CLASSIFICATION_METRICS)
        note = notes.append if notes is not None else (lambda _m: None)
        if notes is not None:
            dropped = int((rows & self.labelled & ~self.predicted).sum())
            if dropped:
                note(f"{dropped} labelled rows without a prediction (errors) left out")
        keep = rows & self.labelled & self.predicted
        if not keep.any():
            if rows.any():
                note("no labelled rows: no classification metrics")
            return out
        yt, yp = self.y_true[keep], self.y_pred[keep]
        out["accuracy"] = compute_metric("accuracy", yt, yp)
        if self.binary or self.classes is None:
            out.update(self._binary_labels(yt, yp, note))
        else:
            for name in ("precision", "recall", "f1"):
                out[name] = compute_metric(name, yt, yp, classes=self.classes)
        out.update(self._probability_metrics(keep, note))
        return out

    def _binary_labels(self, yt: np.ndarray, yp: np.ndarray, note: Any) -> dict[str, float | None]:
        """Precision, recall and F1 of the positive class; ``None`` where a ratio is 0/0."""
        t, p = (yt == self.positive), (yp == self.positive)
        tb, pb = t.astype(int), p.astype(int)
        out: dict[str, float | None] = {}
        for name, defined, why in (
            ("precision", p.any(), "no row predicted positive"),
            ("recall", t.any(), "no truly positive row"),
            ("f1", (t | p).any(), "no positive row, predicted or true"),
        ):
            out[name] = compute_metric(name, tb, pb, classes=[0, 1]) if defined else None
            if not defined:
                note(f"{name} undefined: {why}")
        return out

    def _probability_metrics(self, keep: np.ndarray, note: Any) -> dict[str, float | None]:
        if self.binary:
            if self.pos_score is None:
                note("roc_auc and log_loss need a score or probabilities")
                return {}
            return _binary_proba_metrics(self.y_true == self.positive, self.pos_score, keep, note)
        if self.proba is None or self.classes is None:
            note("roc_auc and log_loss need probabilities in the model's class order")
            return {}
        rows = keep & np.isfinite(self.proba).all(axis=1)
        _note_missing_scores(int((keep & ~rows).sum()), note)
        if not rows.any():
            return {}
        yt, proba = self.y_true[rows], self.proba[rows]
        unknown = sorted(set(np.unique(yt).tolist()) - set(self.classes.tolist()))
        if unknown:
            note(f"roc_auc and log_loss undefined: labels {unknown} are not among the classes")
            return {}
        auc = compute_metric("roc_auc", yt, None, proba, classes=self.classes)
        if not math.isfinite(auc):
            note("roc_auc undefined: some class has no labelled row (or is the only one)")
        return {
            "roc_auc": auc if math.isfinite(auc) else None,
            "log_loss": compute_metric("log_loss", yt, None, proba, classes=self.classes),
        }


def _note_missing_scores(count: int, note: Any) -> None:
    if count:
        note(f"{count} labelled rows without a score left out of roc_auc and log_loss")


def _binary_proba_metrics(
    is_pos: np.ndarray, score: np.ndarray, keep: np.ndarray, note: Any
) -> dict[str, float | None]:
    rows = keep & np.isfinite(score)
    _note_missing_scores(int((keep & ~rows).sum()), note)
    if not rows.any():
        return {}
    t, s = is_pos[rows].astype(int), score[rows]
    proba = np.column_stack([1.0 - s, s])
    out: dict[str, float | None] = {}
    if t.min() == t.max():
        note("roc_auc undefined: the labels hold one class only")
        out["roc_auc"] = None
    else:
        out["roc_auc"] = compute_metric("roc_auc", t, None, proba, classes=[0, 1])
    if s.min() < 0.0 or s.max() > 1.0:
        note("log_loss undefined: the score is not a probability (outside [0, 1])")
        out["log_loss"] = None
    else:
        out["log_loss"] = compute_metric("log_loss", t, None, proba, classes=[0, 1])
    return out


def _classification_data(
    frame: pd.DataFrame,
    label: str,
    prediction: str,
    score: str | None,
    probabilities: str,
    classes: Sequence[Any] | None,
    positive: Any,
    notes: list[str],
) -> _Classification:
    labelled = _require(frame, label, "label").notna().to_numpy()
    predicted = _require(frame, prediction, "prediction").notna().to_numpy()
    t_raw, p_raw = _pick(frame, label, "label"), _pick(frame, prediction, "prediction")
    numeric = _is_number(t_raw) and _is_number(p_raw)
    yt, yp = _space(t_raw, numeric), _space(p_raw, numeric)
    pos = _in_space(positive, numeric)
    known = _class_order(classes, numeric, yt[labelled], yp[predicted], pos)
    proba = _proba_matrix(frame, probabilities, len(known) if known is not None else None)
    if proba is not None and known is None:
        notes.append("probabilities not used: their class order is unknown; pass classes=")
        proba = None
    pos = _resolve_positive(pos, known, yt[labelled], yp[predicted], notes)
    pos_score = _positive_score(frame, score, proba, known, pos)
    return _Classification(len(frame), labelled, predicted, yt, yp, known, pos, proba, pos_score)


def _is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) or len(values.dropna()) == 0


def _space(values: pd.Series, numeric: bool) -> np.ndarray:
    """Labels as floats (both sides numeric) or as canonical text (object array, None kept)."""
    if numeric:
        return pd.to_numeric(values, errors="coerce").to_numpy(float)
    return _canonical(values, None)


def _canonical(values: pd.Series, missing: str | None) -> np.ndarray:
    """:func:`_canon` of each value (``missing`` where absent), computed once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([*(_canon(u) for u in uniques), missing], dtype=object)
    return table[codes]  # code -1 (missing) picks the last entry


def _in_space(value: Any, numeric: bool) -> Any:
    if value is None:
        return None
    if numeric:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return _canon(value)


def _class_order(
    classes: Sequence[Any] | None, numeric: bool, yt: np.ndarray, yp: np.ndarray, pos: Any
) -> np.ndarray | None:
    """The model's class order when given, else the sorted labels seen (with the positive)."""
    if classes is not None:
        order = [_in_space(c, numeric) for c in classes]
        if any(c is None for c in order) or len(set(order)) != len(order):
            raise InvalidInput(
                f"classes {list(classes)!r} are not distinct labels", field="classes"
            )
        return np.array(order, dtype=float if numeric else object)
    seen = set(yt.tolist()) | set(yp.tolist())
    seen.discard(None)
    seen = {v for v in seen if not (isinstance(v, float) and math.isnan(v))}
    if numeric and pos is not None and len(seen) < 2:
        seen.add(pos)  # a window of one class still has the positive column to read
    if not seen:
        return None
    return np.array(sorted(seen), dtype=float if numeric else object)


def _resolve_positive(
    pos: Any, known: np.ndarray | None, yt: np.ndarray, yp: np.ndarray, notes: list[str]
) -> Any:
    """``positive`` when it is a class; for two classes otherwise the larger one (noted)."""
    if known is None:
        return pos
    if pos is not None and pos in set(known.tolist()):
        return pos
    if len(known) <= 2:
        chosen = sorted(known.tolist())[-1]
        notes.append(f"positive class {pos!r} not among {known.tolist()}; using {chosen!r}")
        return chosen
    notes.append(f"positive class {pos!r} not among the classes; fairness needs it")
    return pos


def _proba_matrix(frame: pd.DataFrame, column: str, width: int | None) -> np.ndarray | None:
    """``(n, width)`` probabilities, ``nan`` rows where none (or the wrong number) was logged."""
    if column not in frame.columns or width is None:
        return None
    column_values = frame[column]
    present = np.flatnonzero(column_values.notna().to_numpy())
    rows = column_values.to_numpy(dtype=object)[present]
    fits = np.fromiter((len(r) == width for r in rows), dtype=bool, count=len(rows))
    if not fits.any():
        return None
    out = np.full((len(column_values), width), np.nan)
    out[present[fits]] = np.array(rows[fits].tolist(), dtype=float)  # None entries become nan
    return out


def _positive_score(
    frame: pd.DataFrame,
    score: str | None,
    proba: np.ndarray | None,
    known: np.ndarray | None,
    pos: Any,
) -> np.ndarray | None:
    if score is not None and score in frame.columns:
        return pd.to_numeric(frame[score], errors="coerce").to_numpy(float)
    if proba is None or known is None or pos not in set(known.tolist()):
        return None
    return proba[:, known.tolist().index(pos)]


# -- baseline, segments, fairness -------------------------------------------------------------


def _baseline(baseline: Mapping[str, float] | None, task: Task) -> dict[str, float]:
    """The baseline's metrics under this module's names (``val_auc`` -> ``roc_auc``)."""
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    out: dict[str, float] = {}
    for key, value in (baseline or {}).items():
        name = _baseline_name(str(key))
        number = _plain(value)
        usable = name in names and isinstance(number, int | float) and math.isfinite(number)
        if usable and (name not in out or key == name):  # an exact name beats a prefixed one
            out[name] = float(number)
    return out


def _baseline_name(key: str) -> str:
    for prefix in _BASELINE_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return ALIASES.get(key, key)


def _keys(values: pd.Series) -> np.ndarray:
    return _canonical(values, MISSING_KEY)


def _segments(
    data: _Regression | _Classification, column: pd.Series, top_k: int
) -> dict[str, dict[str, float | None]]:
    """Metrics for the ``top_k`` largest segments (by rows) and one ``other`` for the rest."""
    keys = _keys(column)
    if len(keys) == 0:
        return {}
    names, counts = np.unique(keys, return_counts=True)
    order = sorted(zip(names.tolist(), counts.tolist(), strict=True), key=lambda x: (-x[1], x[0]))
    top = [name for name, _ in order[:top_k]]
    out = {name: _segment(data, keys == name) for name in top}
    if len(order) > top_k:
        other = "other" if "other" not in out else "__other__"
        out[other] = _segment(data, ~np.isin(keys, top))
    return out


def _segment(data: _Regression | _Classification, rows: np.ndarray) -> dict[str, float | None]:
    n, labelled = int(rows.sum()), int((rows & data.labelled).sum())
    return {
        "n": float(n),
        "n_labelled": float(labelled),
        "label_coverage": labelled / n if n else None,
        **data.evaluate(rows, None),
    }


def _fairness(
    data: _Regression | _Classification,
    column: pd.Series,
    min_group_size: int,
    notes: list[str],
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """The gates' parity and opportunity differences, on this window's traffic.

    Selection rates need no labels, so they use every answered request; true positive rates use
    the labelled ones. Groups under ``min_group_size`` rows are reported but not counted.
    """
    empty: dict[str, float | None] = dict.fromkeys(FAIRNESS_MEASURES)
    if not isinstance(data, _Classification):
        notes.append("fairness measures need a classifier")
        return empty, {}
    if data.positive is None or data.classes is None or data.positive not in data.classes:
        notes.append("fairness measures need the positive class")
        return empty, {}
    groups = _keys(column)
    pos, answered = data.positive, data.predicted
    scored = answered & data.labelled
    if not answered.any():
        return empty, {}
    yp, ga = data.y_pred[answered], groups[answered]
    selection = fair.selection_rates(yp, ga, positive=pos)
    dpd = fair.demographic_parity_difference(yp, ga, positive=pos, min_group_size=min_group_size)
    tpr: dict[Any, float] = {}
    eod = float("nan")
    if scored.any():
        yt, yl, gl = data.y_true[scored], data.y_pred[scored], groups[scored]
        tpr = fair.true_positive_rates(yt, yl, gl, positive=pos)
        eod = fair.equal_opportunity_difference(
            yt, yl, gl, positive=pos, min_group_size=min_group_size
        )
    if not math.isfinite(eod):
        notes.append("equal_opportunity_difference undefined: no group has a labelled positive")
    sizes = fair.group_sizes(ga)
    labelled_sizes = fair.group_sizes(groups[scored]) if scored.any() else {}
    detail = {
        str(g): {
            "n": float(sizes[g]),
            "n_labelled": float(labelled_sizes.get(g, 0)),
            "selection_rate": _finite(selection.get(g)),
            "true_positive_rate": _finite(tpr.get(g)),
        }
        for g in sizes
    }
    measures = {
        "demographic_parity_difference": _finite(dpd),
        "equal_opportunity_difference": _finite(eod),
    }
    return measures, detail


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
