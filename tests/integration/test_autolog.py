"""autolog end to end: fit real scikit-learn models, read the runs back through the Client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import loopwright as lw
from loopwright.data.datasets import describe_dataset
from loopwright.registry.flavors import load_sklearn
from loopwright.tracking.autolog import MODEL_ARTIFACT, autolog


@pytest.fixture
def tracking_dir(tmp_path: Path) -> Iterator[Path]:
    lw.set_tracking_uri(str(tmp_path))
    autolog()
    yield tmp_path
    autolog(disable=True)
    run = lw.active_run()
    if run is not None:  # a failing test must not leak its run into the next one
        run.end(status="KILLED")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


def _pipeline() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def _all_runs(client: lw.Client) -> list:
    """Every run of the store, through the client's search (all experiments)."""
    experiments = [e.id for e in client.list_experiments()]
    return client.search_runs(experiments).items


def test_pipeline_fit_is_logged(
    tracking_dir: Path, data: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    X, y = data
    with (
        caplog.at_level(logging.WARNING, logger="loopwright.tracking.autolog"),
        lw.start_run() as active,
    ):
        model = _pipeline().fit(X, y)
        run_id = active.id
    assert caplog.records == []  # every logging step succeeded
    client = lw.Client(str(tracking_dir))
    run = client.get_run(run_id)

    assert run.params["memory"] == "None"
    assert "steps" in run.params
    assert run.tags["lw.model.flavor"] == "sklearn"
    assert run.tags["lw.model.path"] == MODEL_ARTIFACT
    assert run.tags["lw.estimator"] == "sklearn.pipeline.Pipeline"
    assert run.metrics["training_score"] == pytest.approx(model.score(X, y))
    assert run.metrics["fit_duration_s"] > 0

    train = next(d for d in run.inputs if d.context == "train")
    assert train.digest == describe_dataset(X, "train").digest
    assert train.num_rows == len(X)

    assert MODEL_ARTIFACT in {a.path for a in client.list_artifacts(run_id)}
    loaded = load_sklearn(client.download_artifact(run_id, MODEL_ARTIFACT))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_fit_without_active_run_gets_its_own_finished_run(
    tracking_dir: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    _pipeline().fit(*data)
    assert lw.active_run() is None
    runs = _all_runs(lw.Client(str(tracking_dir)))
    assert len(runs) == 1
    assert runs[0].status == "FINISHED"
    assert "training_score" in runs[0].metrics


def test_pipeline_fit_logs_one_run(tracking_dir: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    _pipeline().fit(*data)
    assert len(_all_runs(lw.Client(str(tracking_dir)))) == 1


def test_grid_search_logs_one_run(tracking_dir: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    search = GridSearchCV(_pipeline(), {"logisticregression__C": [0.1, 1.0]}, cv=3)
    search.fit(*data)
    runs = _all_runs(lw.Client(str(tracking_dir)))
    assert len(runs) == 1
    run = runs[0]
    assert run.tags["lw.estimator"] == "sklearn.model_selection._search.GridSearchCV"
    assert run.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert "estimator" in run.params and "param_grid" in run.params
