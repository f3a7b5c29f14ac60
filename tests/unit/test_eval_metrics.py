"""The evaluation metrics equal scikit-learn's on the same data, and the registry is explicit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from loopwright.errors import InvalidInput
from loopwright.governance.metrics import (
    METRICS,
    compute_metric,
    compute_metrics,
    get_metric,
    metric_names,
    roc_auc,
)

TOL = 1e-12


def _fitted(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=n_classes, random_state=seed
    )
    model = LogisticRegression(max_iter=500).fit(X[:200], y[:200])
    return y[200:], model.predict(X[200:]), model.predict_proba(X[200:]), model.classes_


def _sk_log_loss(y, proba, labels):  # type: ignore[no-untyped-def]
    """sklearn renamed y_pred -> y_proba in 1.9; pass it by keyword on either side."""
    try:
        return skm.log_loss(y, y_proba=proba, labels=labels)
    except TypeError:
        return skm.log_loss(y, proba, labels=labels)


def test_binary_classification_matches_sklearn() -> None:
    y, pred, proba, classes = _fitted(2)
    got = compute_metrics("classification", y, pred, proba, classes=classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred), abs=TOL)
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred), abs=TOL)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred), abs=TOL)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=TOL)
    assert got["log_loss"] == pytest.approx(_sk_log_loss(y, proba, classes), abs=TOL)


def test_multiclass_uses_macro_and_one_vs_rest() -> None:
    y, pred, proba, classes = _fitted(3, seed=1)
    got = compute_metrics("classification", y, pred, proba, classes=classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert got[name] == pytest.approx(fn(y, pred, average="macro"), abs=TOL), name
    expected_auc = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert got["roc_auc"] == pytest.approx(expected_auc, abs=TOL)
    assert got["log_loss"] == pytest.approx(_sk_log_loss(y, proba, classes), abs=TOL)


def test_string_labels_score_the_larger_label_as_positive() -> None:
    y = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
    pred = np.array(["no", "yes", "no", "no", "yes", "yes", "no", "yes"])
    score = np.array([0.1, 0.9, 0.4, 0.2, 0.8, 0.6, 0.3, 0.7])
    proba = np.column_stack([1 - score, score])
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert compute_metric(name, y, pred) == pytest.approx(fn(y, pred, pos_label="yes"), abs=TOL)
    assert roc_auc(y, proba, ["no", "yes"]) == pytest.approx(skm.roc_auc_score(y, score), abs=TOL)


def test_tied_scores_count_half_like_the_roc_curve() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) * 0.5 + y * 0.3, 1)  # few distinct values, many ties
    proba = np.column_stack([1 - score, score])
    assert roc_auc(y, proba) == pytest.approx(skm.roc_auc_score(y, score), abs=TOL)


def test_zero_division_is_zero_like_sklearn() -> None:
    y, pred = np.array([0, 1, 1, 0]), np.array([0, 0, 0, 0])
    assert compute_metric("precision", y, pred, classes=[0, 1]) == skm.precision_score(
        y, pred, zero_division=0
    )
    assert compute_metric("f1", y, pred, classes=[0, 1]) == 0.0


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    got = compute_metrics("regression", y, pred)
    assert set(got) == {"mae", "rmse", "r2"}
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=TOL)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=TOL)


def test_r2_of_a_constant_target_follows_sklearn() -> None:
    y = np.full(5, 2.0)
    assert compute_metric("r2", y, y) == skm.r2_score(y, y) == 1.0
    assert compute_metric("r2", y, y + 1) == skm.r2_score(y, y + 1) == 0.0


def test_registry_declares_task_needs_and_direction() -> None:
    assert set(METRICS) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "mae",
        "rmse",
        "r2",
    }
    assert [m.name for m in METRICS.values() if not m.higher_is_better] == [
        "log_loss",
        "mae",
        "rmse",
    ]
    assert {m.name for m in METRICS.values() if m.needs == "proba"} == {"roc_auc", "log_loss"}
    assert metric_names("classification", with_proba=False) == [
        "accuracy",
        "precision",
        "recall",
        "f1",
    ]
    assert get_metric("auc") is METRICS["roc_auc"]


def test_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidInput) as info:
        compute_metrics("classification", [0, 1], [0, 1], names=["acuracy"])
    assert info.value.field == "names"
    assert "acuracy" in info.value.message and "accuracy, precision" in info.value.message


def test_misuse_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="regression"):
        compute_metrics("classification", [0, 1], [0, 1], names=["rmse"])
    with pytest.raises(InvalidInput, match="task"):
        compute_metrics("ranking", [0, 1], [0, 1])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="probabilities"):
        compute_metric("roc_auc", [0, 1], [0, 1])
    with pytest.raises(InvalidInput) as info:
        roc_auc([0, 1, 2], np.full((3, 2), 0.5), classes=[0, 1])
    assert info.value.field == "y_true"
    with pytest.raises(InvalidInput, match="columns"):
        roc_auc([0, 1, 1], np.full((3, 3), 1 / 3), classes=[0, 1])


def test_auc_of_a_single_class_is_not_measurable() -> None:
    assert np.isnan(roc_auc([1, 1, 1], np.full((3, 2), 0.5), classes=[0, 1]))
