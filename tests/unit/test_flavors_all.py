"""Every flavor: faithful round trips through bytes, the right guess, and safe failures.

Models are small (a few trees, a linear model) so the module runs in a few seconds.
"""

from __future__ import annotations

import sys
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import pandas as pd
import pytest
import xgboost as xgb
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loopwright.errors import InvalidInput, PermissionDenied
from loopwright.registry.flavors import (
    FLAVORS,
    LightGBMModel,
    flavor_for,
    load_native,
    save_model,
)
from loopwright.registry.model import LoadedModel, load_model
from loopwright.registry.signature import infer_signature

Data = tuple[pd.DataFrame, pd.Series]


class MeanModel:
    """A plain Python model: only the pyfunc flavor can store it."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.value)


@pytest.fixture(scope="module")
def cancer() -> Data:
    frame = load_breast_cancer(as_frame=True)
    X = frame.data.iloc[:, :8].rename(columns=lambda c: c.replace(" ", "_"))
    return X, frame.target


@pytest.fixture(scope="module")
def three_classes() -> Data:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    y = pd.Series(np.array(["low", "mid", "high"])[np.digitize(X["a"] + X["b"], [-0.5, 0.5])])
    return X, y


@pytest.fixture(scope="module")
def regression() -> Data:
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["x1", "x2", "x3"])
    return X, pd.Series(3 * X["x1"] - X["x2"] + rng.normal(scale=0.1, size=200), name="y")


def _round_trip(model: Any, flavor: str, X: Any, **kw: Any) -> LoadedModel:
    chosen, blob = save_model(model, **kw)
    assert chosen.name == flavor and isinstance(blob, bytes)
    return load_model(flavor, blob, signature=infer_signature(X))


def _same_classifier(loaded: LoadedModel, model: Any, X: Any, rtol: float = 1e-6) -> None:
    assert loaded.is_classifier
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=rtol)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)


# -- round trips ------------------------------------------------------------------------------


def test_sklearn_round_trip(cancer: Data) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*cancer)
    loaded = _round_trip(model, "sklearn", cancer[0])
    _same_classifier(loaded, model, cancer[0], rtol=0)


def test_xgboost_classifier_round_trip(three_classes: Data) -> None:
    X, y = three_classes
    codes = y.astype("category").cat.codes  # XGBoost wants 0..k-1 labels
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, codes)
    loaded = _round_trip(model, "xgboost", X)
    assert type(loaded.native) is xgb.XGBClassifier
    _same_classifier(loaded, model, X)


def test_xgboost_binary_and_regressor_round_trip(cancer: Data, regression: Data) -> None:
    clf = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(*cancer)
    _same_classifier(_round_trip(clf, "xgboost", cancer[0]), clf, cancer[0])
    reg = xgb.XGBRegressor(n_estimators=8, max_depth=3).fit(*regression)
    loaded = _round_trip(reg, "xgboost", regression[0])
    assert not loaded.is_classifier and loaded.classes_ is None
    np.testing.assert_allclose(loaded.predict(regression[0]), reg.predict(regression[0]), rtol=1e-6)


def test_xgboost_file_is_plain_xgboost_and_leaves_the_model_alone(cancer: Data) -> None:
    model = xgb.XGBClassifier(n_estimators=4, max_depth=2).fit(*cancer)
    _, blob = save_model(model)
    assert model.get_booster().attributes() == {}
    other = xgb.XGBClassifier()
    other.load_model(bytearray(blob))  # XGBoost's own loader reads it
    np.testing.assert_allclose(other.predict_proba(cancer[0]), model.predict_proba(cancer[0]))


def test_raw_xgboost_booster_is_read_by_its_objective(cancer: Data) -> None:
    X, y = cancer
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, y), 5)
    _, blob = save_model(booster)
    assert isinstance(load_native("xgboost", blob), xgb.Booster)
    loaded = load_model("xgboost", blob)
    expected = booster.predict(xgb.DMatrix(X))
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], expected, rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X), (expected > 0.5).astype(int))


def test_lightgbm_classifier_keeps_string_labels(three_classes: Data) -> None:
    X, y = three_classes
    model = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1).fit(X, y)
    loaded = _round_trip(model, "lightgbm", X)
    assert isinstance(loaded.native, LightGBMModel)
    assert isinstance(loaded.native.booster, lgb.Booster)
    _same_classifier(loaded, model, X)


def test_lightgbm_binary_regressor_and_booster(cancer: Data, regression: Data) -> None:
    clf = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1).fit(*cancer)
    _same_classifier(_round_trip(clf, "lightgbm", cancer[0]), clf, cancer[0])
    reg = lgb.LGBMRegressor(n_estimators=8, num_leaves=7, verbose=-1).fit(*regression)
    loaded = _round_trip(reg, "lightgbm", regression[0])
    assert not loaded.is_classifier
    np.testing.assert_allclose(loaded.predict(regression[0]), reg.predict(regression[0]))
    with pytest.raises(InvalidInput) as info:
        loaded.predict_proba(regression[0])
    assert info.value.field == "predict_proba"
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(*cancer), 5)
    loaded = _round_trip(booster, "lightgbm", cancer[0])
    np.testing.assert_allclose(loaded.predict_proba(cancer[0])[:, 1], booster.predict(cancer[0]))


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_classifier_with_and_without_zipmap(cancer: Data, zipmap: bool) -> None:
    X, y = cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X.to_numpy(), y)
    proto = to_onnx(model, X.to_numpy()[:1].astype(np.float32), options={"zipmap": zipmap})
    loaded = _round_trip(proto, "onnx", X)
    assert loaded.is_classifier
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    shuffled = X[X.columns[::-1]].assign(extra="ignored")  # the signature restores the order
    np.testing.assert_array_equal(loaded.predict(shuffled), model.predict(X.to_numpy()))
    expected = model.predict_proba(X.to_numpy())
    np.testing.assert_allclose(loaded.predict_proba(shuffled), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(X.to_numpy()), expected, rtol=1e-4, atol=1e-5)


def test_onnx_regressor(regression: Data) -> None:
    X, y = regression
    model = LinearRegression().fit(X.to_numpy(), y)
    loaded = _round_trip(to_onnx(model, X.to_numpy()[:1].astype(np.float32)), "onnx", X)
    assert not loaded.is_classifier
    np.testing.assert_allclose(loaded.predict(X), model.predict(X.to_numpy()), rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidInput):
        loaded.predict_proba(X)


def test_pyfunc_needs_trust() -> None:
    _, blob = save_model(MeanModel(2.5), flavor="pyfunc")
    for trusted in (False, ["tests.unit.test_flavors_all.MeanModel"], 1):
        with pytest.raises(PermissionDenied, match="pickle") as info:
            load_model("pyfunc", blob, trusted=trusted)  # type: ignore[arg-type]
        assert info.value.field == "trusted"
    loaded = load_model("pyfunc", blob, trusted=True)
    np.testing.assert_array_equal(loaded.predict(np.zeros((3, 2))), [2.5, 2.5, 2.5])
    assert not loaded.is_classifier
    with pytest.raises(InvalidInput) as proba:
        loaded.predict_proba(np.zeros((3, 2)))
    assert proba.value.field == "predict_proba"


def test_pyfunc_needs_a_predict_method() -> None:
    with pytest.raises(InvalidInput, match="predict"):
        save_model(object(), flavor="pyfunc")


# -- choosing a flavor ------------------------------------------------------------------------


def test_auto_detection(cancer: Data) -> None:
    X, y = cancer
    cases = {
        "xgboost": xgb.XGBClassifier(n_estimators=2).fit(X, y),
        "lightgbm": lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y),
        "sklearn": make_pipeline(StandardScaler(), LogisticRegression()),
        "onnx": onnx.ModelProto(),
    }
    for expected, model in cases.items():
        assert flavor_for(model).name == expected
    assert flavor_for(xgb.Booster()).name == "xgboost"
    assert flavor_for(cases["xgboost"], "sklearn").name == "sklearn"  # explicit wins


def test_unknown_objects_and_names_are_refused() -> None:
    with pytest.raises(InvalidInput, match="flavor='pyfunc'") as info:
        flavor_for(MeanModel(1.0))
    assert info.value.field == "flavor"
    assert flavor_for(MeanModel(1.0), "pyfunc").name == "pyfunc"
    with pytest.raises(InvalidInput, match="lightgbm, onnx, pickle, pyfunc, sklearn, xgboost"):
        flavor_for(MeanModel(1.0), "tensorflow")
    with pytest.raises(InvalidInput, match="xgboost flavor stores XGBoost Boosters"):
        flavor_for(MeanModel(1.0), "xgboost")
    with pytest.raises(InvalidInput, match="valid flavors"):
        load_native("nope", b"")


def test_file_names_are_distinct() -> None:
    """The registry finds a run's model by file name, so no two flavors may share one."""
    names = [f.file_name for f in FLAVORS.values()]
    assert len(set(names)) == len(names)


# -- refusing bad bytes -----------------------------------------------------------------------

GARBAGE = [b"", b"garbage", b"\x00" * 64, b'{"format": "x"}', bytes(range(256))]


@pytest.mark.parametrize("flavor", ["sklearn", "xgboost", "lightgbm", "onnx", "pyfunc"])
def test_garbage_is_invalid_input(flavor: str) -> None:
    for blob in GARBAGE:
        with pytest.raises(InvalidInput) as info:
            load_native(flavor, blob, trusted=True)
        assert info.value.field == "data", blob


def test_truncated_files_are_invalid_input(cancer: Data) -> None:
    X, y = cancer
    models = {
        "xgboost": xgb.XGBClassifier(n_estimators=2).fit(X, y),
        "lightgbm": lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y),
        "onnx": to_onnx(LogisticRegression(max_iter=500).fit(X.to_numpy(), y), X.to_numpy()[:1]),
        "pyfunc": MeanModel(1.0),
    }
    for flavor, model in models.items():
        _, blob = save_model(model, flavor)
        with pytest.raises(InvalidInput):
            load_native(flavor, blob[: len(blob) // 2], trusted=True)


def test_xgboost_file_cannot_name_an_arbitrary_class(cancer: Data) -> None:
    booster = xgb.XGBClassifier(n_estimators=2).fit(*cancer).get_booster().copy()
    booster.set_attr(loopwright_wrapper="os.system")
    with pytest.raises(InvalidInput, match=r"os\.system"):
        load_native("xgboost", bytes(booster.save_raw("json")))


def test_onnx_external_data_is_refused(tmp_path: Any) -> None:
    """A tensor stored "outside the file" would be read from a path the author chose."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/hostname")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [weight],
    )
    blob = helper.make_model(graph).SerializeToString()
    with pytest.raises(InvalidInput, match="outside the model file"):
        load_native("onnx", blob)


@pytest.mark.parametrize(
    ("flavor", "module"),
    [
        ("xgboost", "xgboost"),
        ("lightgbm", "lightgbm"),
        ("onnx", "onnxruntime"),
        ("onnx", "onnx"),
        ("sklearn", "skops.io"),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, flavor: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(InvalidInput, match=rf"pip install 'loopwright\[{flavor}\]'"):
        load_native(flavor, b"whatever")


# -- the uniform handle -----------------------------------------------------------------------


def test_signature_selects_orders_and_requires_columns(cancer: Data) -> None:
    X, y = cancer
    model = xgb.XGBClassifier(n_estimators=4).fit(X, y)
    loaded = _round_trip(model, "xgboost", X)
    shuffled = X[list(reversed(X.columns))].assign(unused=1)
    np.testing.assert_allclose(loaded.predict_proba(shuffled), model.predict_proba(X), rtol=1e-6)
    with pytest.raises(InvalidInput, match="mean_radius") as info:
        loaded.predict(X.drop(columns="mean_radius"))
    assert info.value.details["missing_columns"] == ["mean_radius"]
    with pytest.raises(InvalidInput, match="8 columns"):
        loaded.predict(X.to_numpy()[:, :3])


def test_absent_nullable_columns_are_filled_with_missing_values(regression: Data) -> None:
    X, y = regression
    X = X.assign(x3=X["x3"].where(X.index % 7 != 0))  # holes: x3 becomes nullable
    model = xgb.XGBRegressor(n_estimators=4).fit(X, y)
    loaded = _round_trip(model, "xgboost", X)
    assert loaded.signature is not None and loaded.signature.inputs[2].nullable
    expected = model.predict(X.assign(x3=np.nan))
    np.testing.assert_allclose(loaded.predict(X.drop(columns="x3")), expected, rtol=1e-6)


def test_wrapping_an_in_memory_model(cancer: Data) -> None:
    model = LogisticRegression(max_iter=500).fit(*cancer)
    loaded = LoadedModel("sklearn", model)
    assert loaded.signature is None and "sklearn" in repr(loaded)
    _same_classifier(loaded, model, cancer[0], rtol=0)
