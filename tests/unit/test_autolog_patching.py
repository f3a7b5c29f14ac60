"""autolog against an in-memory stand-in for the run API: what is logged, once, and safely."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import loopwright
from loopwright.data.datasets import describe_dataset
from loopwright.registry.flavors import SKLEARN_FILE_NAME, load_sklearn, save_sklearn
from loopwright.tracking.autolog import MODEL_ARTIFACT, autolog


class FakeRun:
    """Records what autolog sends, with the write-once params of the real run."""

    def __init__(self) -> None:
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.datasets: list[Any] = []
        self.artifacts: dict[str, bytes] = {}
        self.status: str | None = None

    def log_params(self, params: dict[str, str]) -> None:
        assert not set(params) & set(self.params), "a param was re-logged"
        assert all(isinstance(v, str) for v in params.values())
        self.params.update(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_dataset(self, data: Any, name: str = "train", context: str = "train") -> Any:
        ds = describe_dataset(data, name, context)
        self.datasets.append(ds)
        return ds

    def log_model(self, model: Any, artifact_path: str = "model") -> None:
        self.artifacts[f"{artifact_path}/{SKLEARN_FILE_NAME}"] = save_sklearn(model)
        self.tags["lw.model.flavor"] = "sklearn"

    def end(self, status: str = "FINISHED") -> None:
        self.status = status


class FakeRuns:
    def __init__(self) -> None:
        self.active: FakeRun | None = None
        self.started: list[FakeRun] = []

    def active_run(self) -> FakeRun | None:
        return self.active

    def start_run(self, *args: Any, **kwargs: Any) -> FakeRun:
        run = FakeRun()
        self.started.append(run)
        return run


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuns]:
    fake = FakeRuns()
    monkeypatch.setattr(loopwright, "active_run", fake.active_run, raising=False)
    monkeypatch.setattr(loopwright, "start_run", fake.start_run, raising=False)
    autolog()
    yield fake
    autolog(disable=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


def _pipeline() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def test_pipeline_fit_logs_one_run(runs: FakeRuns, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    model = _pipeline().fit(X, y)
    assert len(runs.started) == 1
    run = runs.started[0]
    assert run.status == "FINISHED"
    assert set(run.params) == set(model.get_params(deep=False))
    assert run.tags == {"lw.estimator": "sklearn.pipeline.Pipeline", "lw.model.flavor": "sklearn"}
    assert run.metrics["training_score"] == pytest.approx(model.score(X, y))
    assert run.metrics["fit_duration_s"] > 0
    assert [(d.name, d.context) for d in run.datasets] == [
        ("train", "train"),
        ("train_labels", "train_labels"),
    ]
    assert run.datasets[0].digest == describe_dataset(X, "train").digest
    loaded = load_sklearn(run.artifacts[MODEL_ARTIFACT])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_grid_search_logs_only_the_outer_fit(
    runs: FakeRuns, data: tuple[np.ndarray, np.ndarray]
) -> None:
    search = GridSearchCV(_pipeline(), {"logisticregression__C": [0.1, 1.0]}, cv=2)
    search.fit(*data)
    assert len(runs.started) == 1
    run = runs.started[0]
    assert run.tags["lw.estimator"] == "sklearn.model_selection._search.GridSearchCV"
    assert run.params["best.logisticregression__C"] == str(
        search.best_params_["logisticregression__C"]
    )
    assert run.metrics["best_cv_score"] == pytest.approx(search.best_score_)


def test_inherited_fit_is_patched(runs: FakeRuns, data: tuple[np.ndarray, np.ndarray]) -> None:
    RandomForestClassifier(n_estimators=3, random_state=0).fit(*data)  # fit lives on BaseForest
    assert len(runs.started) == 1
    assert runs.started[0].tags["lw.estimator"].endswith("RandomForestClassifier")


def test_active_run_is_used_and_not_ended(
    runs: FakeRuns, data: tuple[np.ndarray, np.ndarray]
) -> None:
    runs.active = FakeRun()
    _pipeline().fit(*data)
    _pipeline().set_params(logisticregression__C=0.5).fit(*data)  # same keys: not re-logged
    assert runs.started == []
    assert runs.active.status is None
    assert "steps" in runs.active.params


def test_options_turn_off_models_and_datasets(
    runs: FakeRuns, data: tuple[np.ndarray, np.ndarray]
) -> None:
    autolog(log_models=False, log_datasets=False)
    _pipeline().fit(*data)
    run = runs.started[0]
    assert run.artifacts == {} and run.datasets == []
    assert "lw.model.flavor" not in run.tags
    assert "training_score" in run.metrics


def test_unsupervised_fit_has_no_score_or_labels(runs: FakeRuns) -> None:
    StandardScaler().fit([[1.0, 2.0], [3.0, 4.0]])
    run = runs.started[0]
    assert "training_score" not in run.metrics
    assert [d.name for d in run.datasets] == ["train"]


def test_failed_fit_ends_run_failed(runs: FakeRuns) -> None:
    with pytest.raises(ValueError):
        LogisticRegression().fit([[1.0], [2.0]], [0, 0])  # one class only
    assert runs.started[0].status == "FAILED"


def test_logging_failures_never_break_fit(
    runs: FakeRuns,
    data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("store is down")

    for method in ("log_params", "log_metrics", "log_dataset", "log_model", "set_tags"):
        monkeypatch.setattr(FakeRun, method, broken)
    with caplog.at_level(logging.WARNING, logger="loopwright.tracking.autolog"):
        model = _pipeline().fit(*data)
    assert model.predict(data[0]).shape == (len(data[0]),)
    assert "store is down" in caplog.text
    assert runs.started[0].status == "FINISHED"


def test_no_run_can_be_started_still_fits(
    runs: FakeRuns, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> FakeRun:
        raise ConnectionError("no server")

    monkeypatch.setattr(loopwright, "start_run", unavailable)
    assert _pipeline().fit(*data).predict(data[0][:2]).shape == (2,)


def test_disable_restores_the_original_fit() -> None:
    from sklearn.ensemble._forest import BaseForest

    before = (LogisticRegression.fit, BaseForest.fit, Pipeline.fit)
    autolog()
    autolog()  # idempotent: no double wrapping
    assert LogisticRegression.fit._lw_original is before[0]
    assert BaseForest.fit._lw_original is before[1]
    autolog(disable=True)
    assert (LogisticRegression.fit, BaseForest.fit, Pipeline.fit) == before
