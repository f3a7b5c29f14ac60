"""Performance from late labels: the numbers equal scikit-learn's on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from loopwright.errors import InvalidInput
from loopwright.governance import fairness as fair
from loopwright.monitoring.performance import PerformanceReport, performance_report
from loopwright.serving.predlog import (
    LabelStore,
    PredictionLog,
    join_labels,
    read_labels,
    read_predictions,
)

TS0 = 1_700_000_000_000


def _binary_frame(n: int = 600, seed: int = 0, coverage: float = 0.7) -> pd.DataFrame:
    """A window as join_labels returns it: text + float twins, probabilities as lists."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + (truth - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.01, 0.99)
    pred = (p1 >= 0.5).astype(int)
    labelled = rng.random(n) < coverage
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "prediction": [str(v) for v in pred],
            "prediction_value": pred.astype(float),
            "probabilities": [[1 - p, p] for p in p1],
            "label": [str(t) if m else None for t, m in zip(truth, labelled, strict=True)],
            "label_value": np.where(labelled, truth.astype(float), np.nan),
            "in_region": rng.choice(["north", "south", "east", "west", None], n),
            "in_sex": rng.choice(["f", "m"], n),
        }
    )


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["label"].notna()]


def _sk_binary(frame: pd.DataFrame) -> dict[str, float]:
    rows = _labelled(frame)
    yt, yp = rows["label_value"].to_numpy(int), rows["prediction_value"].to_numpy(int)
    p1 = np.array([p[1] for p in rows["probabilities"]])
    return {
        "accuracy": skm.accuracy_score(yt, yp),
        "precision": skm.precision_score(yt, yp, zero_division=0),
        "recall": skm.recall_score(yt, yp, zero_division=0),
        "f1": skm.f1_score(yt, yp, zero_division=0),
        "roc_auc": skm.roc_auc_score(yt, p1),
        "log_loss": skm.log_loss(yt, p1, labels=[0, 1]),
    }


def _assert_close(got: dict, want: dict) -> None:
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


# -- classification ---------------------------------------------------------------------------


def test_binary_metrics_equal_sklearn_on_the_labelled_rows() -> None:
    frame = _binary_frame()
    report = performance_report(frame, task="classification")
    _assert_close(report.metrics, _sk_binary(frame))
    assert report.n == len(frame)
    assert report.n_labelled == frame["label"].notna().sum()
    assert report.label_coverage == pytest.approx(report.n_labelled / report.n)
    assert report.classes == [0.0, 1.0] and report.positive == 1.0


def test_a_score_column_gives_the_same_numbers_as_the_probabilities() -> None:
    frame = _binary_frame(seed=1)
    with_score = frame.drop(columns=["probabilities"]).assign(
        score=[p[1] for p in frame["probabilities"]]
    )
    a = performance_report(frame, task="classification").metrics
    b = performance_report(with_score, task="classification").metrics
    assert a == pytest.approx(b)


def test_positive_class_other_than_the_larger_reads_its_own_probability_column() -> None:
    frame = _binary_frame(seed=2)
    names = {"0": "bad", "1": "good"}  # sorted classes: bad, good -> columns [p(bad), p(good)]
    text = frame.assign(
        prediction=frame["prediction"].map(names),
        label=frame["label"].map(names),
        prediction_value=np.nan,
        label_value=np.nan,
    )
    report = performance_report(text, task="classification", positive="bad")
    rows = _labelled(text)
    yt, yp = rows["label"].to_numpy(), rows["prediction"].to_numpy()
    p_bad = np.array([p[0] for p in rows["probabilities"]])
    _assert_close(
        report.metrics,
        {
            "precision": skm.precision_score(yt, yp, pos_label="bad"),
            "recall": skm.recall_score(yt, yp, pos_label="bad"),
            "f1": skm.f1_score(yt, yp, pos_label="bad"),
            "roc_auc": skm.roc_auc_score(yt == "bad", p_bad),
            "log_loss": skm.log_loss(yt, np.vstack(rows["probabilities"].to_numpy())),
        },
    )
    assert report.classes == ["bad", "good"] and report.positive == "bad"


def test_an_explicit_class_order_maps_the_probability_columns() -> None:
    frame = _binary_frame(seed=3)
    swapped = frame.assign(probabilities=[[p[1], p[0]] for p in frame["probabilities"]])
    report = performance_report(swapped, task="classification", classes=[1, 0])
    _assert_close(report.metrics, _sk_binary(frame))


def test_a_label_posted_as_text_matches_the_logged_prediction() -> None:
    frame = _binary_frame(seed=4)
    # labels posted as "1.0" (no float twin): compared as text, 1.0 and 1 are the same class
    posted = frame.assign(
        label=frame["label_value"].map(lambda v: None if np.isnan(v) else f"{v:.1f}"),
        label_value=np.nan,
    )
    report = performance_report(posted, task="classification")
    _assert_close(report.metrics, _sk_binary(frame))
    assert report.positive == "1"


def test_multiclass_macro_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(5)
    n, classes = 900, np.array(["a", "b", "c"])
    truth = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[truth]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = classes[proba.argmax(axis=1)]
    labelled = rng.random(n) < 0.8
    frame = pd.DataFrame(
        {
            "prediction": pred,
            "probabilities": list(proba),
            "label": np.where(labelled, classes[truth], None),
        }
    )
    report = performance_report(frame, task="classification", positive="c")
    yt, yp, p = classes[truth][labelled], pred[labelled], proba[labelled]
    _assert_close(
        report.metrics,
        {
            "accuracy": skm.accuracy_score(yt, yp),
            "precision": skm.precision_score(yt, yp, average="macro", zero_division=0),
            "recall": skm.recall_score(yt, yp, average="macro", zero_division=0),
            "f1": skm.f1_score(yt, yp, average="macro", zero_division=0),
            "roc_auc": skm.roc_auc_score(yt, p, multi_class="ovr", average="macro"),
            "log_loss": skm.log_loss(yt, p, labels=classes),
        },
    )


def test_prediction_errors_are_left_out_of_the_metrics_and_noted() -> None:
    frame = _binary_frame(seed=6)
    errored = frame.copy()
    errored.loc[:9, ["prediction", "prediction_value", "probabilities"]] = None
    report = performance_report(errored, task="classification")
    kept = errored[errored["prediction"].notna()]
    _assert_close(report.metrics, _sk_binary(kept))
    assert report.n == len(frame)
    assert any("without a prediction" in n for n in report.notes)


# -- degenerate windows -----------------------------------------------------------------------


def test_a_window_without_labels_gives_none_and_a_note() -> None:
    frame = _binary_frame(coverage=0.0)
    report = performance_report(frame, task="classification", baseline={"roc_auc": 0.8})
    assert report.n_labelled == 0 and report.label_coverage == 0.0
    assert all(v is None for v in report.metrics.values())
    assert report.vs_baseline == {}
    assert any("no labelled rows" in n for n in report.notes)
    assert "perf.roc_auc" not in report.series()
    assert report.series()["labels.coverage"] == 0.0


def test_one_class_only_leaves_roc_auc_undefined_not_an_error() -> None:
    frame = _binary_frame(seed=7)
    negatives = frame[frame["label_value"] == 0.0]
    report = performance_report(negatives, task="classification")
    assert report.metrics["roc_auc"] is None
    assert report.metrics["recall"] is None  # no truly positive row
    assert report.metrics["accuracy"] == pytest.approx(
        skm.accuracy_score(negatives["label_value"], negatives["prediction_value"])
    )
    p1 = [p[1] for p in negatives["probabilities"]]
    assert report.metrics["log_loss"] == pytest.approx(
        skm.log_loss(negatives["label_value"], p1, labels=[0, 1])
    )
    assert any("roc_auc undefined" in n for n in report.notes)
    assert report.classes == [0.0, 1.0]  # the positive column is still found


def test_no_predicted_positive_leaves_precision_undefined() -> None:
    frame = _binary_frame(seed=8)
    frame = frame[frame["prediction_value"] == 0.0]
    report = performance_report(frame, task="classification")
    assert report.metrics["precision"] is None
    assert report.metrics["recall"] == 0.0
    assert any("precision undefined" in n for n in report.notes)


def test_an_empty_window_is_a_report_not_an_exception() -> None:
    empty = pd.DataFrame({"prediction": [], "label": []})
    for task in ("classification", "regression"):
        report = performance_report(empty, task=task, segment_by="region", sensitive="sex")  # type: ignore[arg-type]
        assert report.n == 0 and report.label_coverage is None
        assert all(v is None for v in report.metrics.values())
        assert report.notes


def test_a_missing_label_column_is_an_input_error() -> None:
    with pytest.raises(InvalidInput) as err:
        performance_report(pd.DataFrame({"prediction": ["1"]}), task="classification")
    assert err.value.field == "label"
    with pytest.raises(InvalidInput):
        performance_report(_binary_frame(), task="ranking")  # type: ignore[arg-type]


# -- regression -------------------------------------------------------------------------------


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(9)
    n = 400
    truth = rng.normal(100, 20, n)
    pred = truth + rng.normal(0, 8, n)
    labelled = rng.random(n) < 0.6
    frame = pd.DataFrame(
        {
            "prediction": [f"{v}" for v in pred],
            "prediction_value": pred,
            "label": np.where(labelled, truth.astype(str), None),
            "label_value": np.where(labelled, truth, np.nan),
        }
    )
    report = performance_report(frame, task="regression", baseline={"val_rmse": 7.0, "mae": 6})
    yt, yp = truth[labelled], pred[labelled]
    _assert_close(
        report.metrics,
        {
            "mae": skm.mean_absolute_error(yt, yp),
            "rmse": skm.root_mean_squared_error(yt, yp),
            "r2": skm.r2_score(yt, yp),
        },
    )
    assert report.label_coverage == pytest.approx(labelled.mean())
    assert report.vs_baseline["rmse"] == pytest.approx(report.metrics["rmse"] - 7.0)
    assert report.vs_baseline["mae"] == pytest.approx(report.metrics["mae"] - 6.0)


def test_a_constant_target_leaves_r2_undefined() -> None:
    frame = pd.DataFrame({"prediction": [1.0, 2.0, 3.0], "label": [2.0, 2.0, 2.0]})
    report = performance_report(frame, task="regression")
    assert report.metrics["r2"] is None
    assert report.metrics["mae"] == pytest.approx(2 / 3)
    assert any("r2 undefined" in n for n in report.notes)


# -- baseline, segments, fairness -------------------------------------------------------------


def test_deltas_against_the_versions_validation_metrics() -> None:
    frame = _binary_frame(seed=10)
    baseline = {"val_auc": 0.95, "accuracy": 0.9, "val_accuracy": 0.1, "train_loss": 0.2}
    report = performance_report(frame, task="classification", baseline=baseline)
    assert set(report.vs_baseline) == {"roc_auc", "accuracy"}
    assert report.baseline == {"roc_auc": 0.95, "accuracy": 0.9}  # the exact name wins
    assert report.vs_baseline["roc_auc"] == pytest.approx(report.metrics["roc_auc"] - 0.95)
    assert report.series()["perf.roc_auc.delta"] == pytest.approx(report.vs_baseline["roc_auc"])


def test_segments_are_the_top_k_by_rows_plus_other() -> None:
    frame = _binary_frame(n=1000, seed=11)
    report = performance_report(frame, task="classification", segment_by="region", top_k=2)
    counts = frame["in_region"].fillna("null").value_counts()
    top = sorted(counts.index, key=lambda k: (-counts[k], k))[:2]
    assert report.segment_by == "in_region"
    assert list(report.segments) == [*top, "other"]
    for name in top:
        part = frame[frame["in_region"].fillna("null") == name]
        seg = report.segments[name]
        assert seg["n"] == len(part)
        assert seg["n_labelled"] == part["label"].notna().sum()
        _assert_close(seg, _sk_binary(part))
    rest = frame[~frame["in_region"].fillna("null").isin(top)]
    _assert_close(report.segments["other"], _sk_binary(rest))
    assert sum(s["n"] for s in report.segments.values()) == len(frame)


def test_fairness_reuses_the_gates_measures_on_live_traffic() -> None:
    frame = _binary_frame(n=800, seed=12)
    report = performance_report(frame, task="classification", sensitive="sex")
    yp = frame["prediction_value"].to_numpy()
    rows = _labelled(frame)
    assert report.sensitive == "in_sex"
    # selection rates need no labels: every answered request counts
    rates = frame.assign(sel=yp == 1.0).groupby("in_sex")["sel"].mean()
    assert report.fairness["demographic_parity_difference"] == pytest.approx(
        rates.max() - rates.min()
    )
    positives = rows[rows["label_value"] == 1.0]
    tpr = positives.assign(hit=positives["prediction_value"] == 1.0).groupby("in_sex")["hit"].mean()
    assert report.fairness["equal_opportunity_difference"] == pytest.approx(tpr.max() - tpr.min())
    assert report.fairness["equal_opportunity_difference"] == pytest.approx(
        fair.equal_opportunity_difference(
            rows["label_value"], rows["prediction_value"], rows["in_sex"], positive=1.0
        )
    )
    assert report.fairness_groups["f"]["selection_rate"] == pytest.approx(rates["f"])
    assert report.fairness_groups["m"]["n"] == (frame["in_sex"] == "m").sum()
    assert "fairness.demographic_parity_difference" in report.series()


def test_fairness_min_group_size_leaves_small_groups_out() -> None:
    frame = _binary_frame(n=300, seed=13)
    frame.loc[:4, "in_sex"] = "x"  # a group of 5 rows
    big = performance_report(frame, task="classification", sensitive="sex", min_group_size=50)
    rates = frame[frame["in_sex"] != "x"].groupby("in_sex")["prediction_value"].mean()
    assert big.fairness["demographic_parity_difference"] == pytest.approx(rates.max() - rates.min())
    assert big.fairness_groups["x"]["n"] == 5


def test_a_missing_breakdown_column_is_noted() -> None:
    report = performance_report(_binary_frame(), task="classification", segment_by="planet")
    assert report.segments == {} and any("planet" in n for n in report.notes)


def test_report_round_trips_through_json() -> None:
    report = performance_report(
        _binary_frame(seed=14),
        task="classification",
        segment_by="region",
        sensitive="sex",
        baseline={"val_auc": 0.9},
    )
    again = PerformanceReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert again == report


# -- from the real prediction log -------------------------------------------------------------


def test_from_the_prediction_log_and_late_labels(tmp_path) -> None:
    rng = np.random.default_rng(15)
    n = 300
    p1 = rng.random(n)
    truth = (rng.random(n) < p1).astype(int)
    records = [
        {
            "request_id": f"q{i}",
            "ts": TS0 + i * 1000,
            "route": "champion",
            "model": "churn",
            "version": 1,
            "prediction": int(p1[i] >= 0.5),
            "probabilities": [1 - p1[i], p1[i]],
            "inputs": {"plan": ["basic", "pro"][i % 2], "tenure": float(i)},
        }
        for i in range(n)
    ]
    uri = str(tmp_path / "log")
    log = PredictionLog(uri, "churn")
    log.append(records)
    log.flush()
    labelled = [i for i in range(n) if i % 3]
    store = LabelStore(uri)
    store.add([{"request_id": f"q{i}", "label": 1 - int(truth[i]), "ts": TS0} for i in labelled])
    store.add([{"request_id": f"q{i}", "label": int(truth[i]), "ts": TS0 + 1} for i in labelled])
    frame = join_labels(read_predictions(uri, "churn"), read_labels(uri))

    report = performance_report(frame, task="classification", segment_by="plan")
    yt, s = truth[labelled], p1[labelled]
    yp = (s >= 0.5).astype(int)
    _assert_close(
        report.metrics,
        {
            "accuracy": skm.accuracy_score(yt, yp),
            "f1": skm.f1_score(yt, yp),
            "roc_auc": skm.roc_auc_score(yt, s),
            "log_loss": skm.log_loss(yt, s),
        },
    )
    assert report.n == n and report.n_labelled == len(labelled)
    assert set(report.segments) == {"basic", "pro"}
