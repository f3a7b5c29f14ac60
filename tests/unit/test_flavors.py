"""The sklearn and pickle flavors: faithful round trips, and nothing untrusted loads by default."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loopwright.errors import InvalidInput, PermissionDenied
from loopwright.registry.flavors import (
    FLAVOR_SKLEARN,
    FLAVORS,
    SKLEARN_FILE_NAME,
    load_pickle,
    load_sklearn,
    save_pickle,
    save_sklearn,
)


class MajorityClassifier(ClassifierMixin, BaseEstimator):
    """A custom estimator: skops cannot know it, so loading it must need explicit trust."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> MajorityClassifier:
        values, counts = np.unique(y, return_counts=True)
        self.majority_ = values[np.argmax(counts)]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.majority_)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


def _fitted_logreg(data: tuple[np.ndarray, np.ndarray]) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*data)


def test_flavor_record() -> None:
    assert FLAVOR_SKLEARN == "sklearn"
    assert SKLEARN_FILE_NAME == "model.skops"
    assert FLAVORS[FLAVOR_SKLEARN].file_name == SKLEARN_FILE_NAME
    assert FLAVORS[FLAVOR_SKLEARN].save is save_sklearn


def test_logistic_regression_pipeline_round_trip(data: tuple[np.ndarray, np.ndarray]) -> None:
    model = _fitted_logreg(data)
    blob = save_sklearn(model)
    assert isinstance(blob, bytes)
    loaded = load_sklearn(blob)
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), model.predict_proba(data[0]))


def test_hist_gradient_boosting_loads_without_extra_trust(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """Its TreePredictor is on loopwright's short list of scikit-learn data holders."""
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(*data)
    blob = save_sklearn(model)
    for trusted in (False, [], True):
        loaded = load_sklearn(blob, trusted=trusted)
        np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))


def test_custom_type_is_refused_without_trust(data: tuple[np.ndarray, np.ndarray]) -> None:
    blob = save_sklearn(MajorityClassifier().fit(*data))
    with pytest.raises(PermissionDenied, match="MajorityClassifier") as info:
        load_sklearn(blob)
    assert "trusted=" in info.value.message
    assert info.value.field == "trusted"
    with pytest.raises(PermissionDenied):
        load_sklearn(blob, trusted=["some.other.Type"])
    loaded = load_sklearn(blob, trusted=info.value.details["untrusted_types"])
    assert isinstance(loaded, MajorityClassifier)
    assert load_sklearn(blob, trusted=True).majority_ == loaded.majority_


def test_trusted_must_be_bool_or_list(data: tuple[np.ndarray, np.ndarray]) -> None:
    blob = save_sklearn(_fitted_logreg(data))
    with pytest.raises(InvalidInput) as info:
        load_sklearn(blob, trusted="sklearn.linear_model.LogisticRegression")  # type: ignore[arg-type]
    assert info.value.field == "trusted"


def test_not_a_skops_file_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        load_sklearn(b"definitely not a zip file")
    assert info.value.field == "data"


def test_pickle_is_refused_unless_trusted() -> None:
    blob = save_pickle({"weights": [1, 2, 3]})
    for trusted in (False, "yes", 1):
        with pytest.raises(PermissionDenied, match="pickle"):
            load_pickle(blob, trusted=trusted)  # type: ignore[arg-type]
    assert load_pickle(blob, trusted=True) == {"weights": [1, 2, 3]}


def test_pickle_round_trips_a_fitted_model(data: tuple[np.ndarray, np.ndarray]) -> None:
    model = _fitted_logreg(data)
    loaded = load_pickle(save_pickle(model), trusted=True)
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))
