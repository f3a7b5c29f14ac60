"""One handle for every flavor: ``predict`` and ``predict_proba`` whatever stored the model.

Serving, gates and monitoring call :class:`LoadedModel` and never ask which library is behind
it. Two things differ per library and are settled here: how input reaches the model (a
signature picks and orders the columns; an ONNX graph wants named float32 tensors) and how
probabilities come back (a 2-D array, one column per class in ``classes_`` order — ONNX
classifiers may answer with a list of ``{class: probability}`` dicts).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput
from loopwright.registry.flavors import FLAVOR_ONNX, LightGBMModel, load_native
from loopwright.registry.signature import Signature

__all__ = ["LoadedModel", "load_model"]


class _Runner(Protocol):
    classes: np.ndarray | None
    is_classifier: bool

    def predict(self, X: Any) -> np.ndarray: ...

    def predict_proba(self, X: Any) -> np.ndarray: ...


class LoadedModel:
    """A model version ready to predict: the flavor, the native object and the signature.

    ``classes`` overrides what the native object reports (an ONNX session does not know its
    class labels; :func:`load_model` reads them from the graph).
    """

    def __init__(
        self,
        flavor: str,
        native: Any,
        signature: Signature | None = None,
        *,
        classes: Sequence[Any] | None = None,
    ) -> None:
        self.flavor = flavor
        self.native = native
        self.signature = signature
        self._runner = _runner_for(flavor, native, classes)

    def __repr__(self) -> str:
        sig = self.signature
        inputs = "no signature" if sig is None else f"{len(sig.inputs)} inputs"
        kind = type(self.native).__name__
        return f"LoadedModel(flavor={self.flavor!r}, native={kind}, {inputs})"

    @property
    def classes_(self) -> np.ndarray | None:
        """Class labels in ``predict_proba``'s column order; ``None`` when unknown."""
        return self._runner.classes

    @property
    def is_classifier(self) -> bool:
        return self._runner.is_classifier

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, one per row: labels for classifiers, values for regressors."""
        out = np.asarray(self._runner.predict(self._inputs(X)))
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(rows, classes)``; InvalidInput if the model has none."""
        proba = np.asarray(self._runner.predict_proba(self._inputs(X)), dtype=float)
        if proba.ndim != 2:
            raise InvalidInput(
                f"the model's probabilities have shape {proba.shape}, not (rows, classes)",
                field="predict_proba",
            )
        return proba

    def _inputs(self, X: Any) -> Any:
        """The signature's columns in its order; absent nullable (optional) ones become NA."""
        if self.signature is None or not isinstance(X, pd.DataFrame):
            return _check_array(X, self.signature)
        names = self.signature.input_names
        missing = [s.name for s in self.signature.inputs if not s.nullable and s.name not in X]
        if missing:
            raise InvalidInput(
                f"the input lacks the column(s) {missing} the model's signature requires",
                field="X",
                missing_columns=missing,
            )
        if all(n in X.columns for n in names):
            return X[names]
        return X.reindex(columns=names)


def load_model(
    flavor_name: str,
    data: bytes,
    *,
    signature: Signature | None = None,
    trusted: bool | Sequence[str] = False,
) -> LoadedModel:
    """Load stored bytes into a :class:`LoadedModel` (nothing unpickled without ``trusted``)."""
    native = load_native(flavor_name, data, trusted=trusted)
    classes = _onnx_classes(data) if flavor_name == FLAVOR_ONNX else None
    return LoadedModel(flavor_name, native, signature, classes=classes)


def _check_array(X: Any, signature: Signature | None) -> Any:
    if signature is None or isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != len(signature.inputs):
        raise InvalidInput(
            f"expected a 2-D array with {len(signature.inputs)} columns "
            f"({', '.join(signature.input_names)}), got shape {arr.shape}",
            field="X",
        )
    return arr


# -- runners ----------------------------------------------------------------------------------


def _runner_for(flavor: str, native: Any, classes: Sequence[Any] | None) -> _Runner:
    if flavor == FLAVOR_ONNX:
        return _OnnxRunner(native, classes)
    if _is_xgb_booster(native):
        native = _xgb_estimator(native)
    runner = _EstimatorRunner(native)
    if classes is not None:
        runner.classes = np.asarray(classes)
    return runner


class _EstimatorRunner:
    """Anything with scikit-learn's ``predict`` / ``predict_proba`` / ``classes_``."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self.classes = _classes_of(native)
        self.is_classifier = _is_classifier(native, self.classes)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.native.predict(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        method = getattr(self.native, "predict_proba", None)  # may raise (available_if)
        if method is None:
            raise _no_proba(self.native)
        try:
            return np.asarray(method(X))
        except (AttributeError, NotImplementedError) as exc:
            raise _no_proba(self.native) from exc


def _no_proba(native: Any) -> InvalidInput:
    return InvalidInput(
        f"a {type(native).__qualname__} cannot give class probabilities", field="predict_proba"
    )


def _classes_of(native: Any) -> np.ndarray | None:
    try:
        classes = getattr(native, "classes_", None)
    except ValueError:  # e.g. LightGBM's not-fitted error
        return None
    return None if classes is None else np.asarray(classes)


def _is_classifier(native: Any, classes: np.ndarray | None) -> bool:
    """scikit-learn's estimator tags when present, else "it knows its classes"."""
    tags = getattr(native, "__sklearn_tags__", None)
    if callable(tags):
        try:
            return tags().estimator_type == "classifier"
        except (AttributeError, TypeError):
            pass
    if isinstance(native, LightGBMModel):
        return native.task == "classifier"
    return classes is not None


def _is_xgb_booster(native: Any) -> bool:
    mod = sys.modules.get("xgboost.core")
    return mod is not None and isinstance(native, mod.Booster)


def _xgb_estimator(booster: Any) -> Any:
    """A raw Booster read through the sklearn wrapper its objective implies."""
    import json

    import xgboost as xgb

    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective.startswith(("binary:", "multi:")):
        model = xgb.XGBClassifier()
    elif objective.startswith("rank:"):
        model = xgb.XGBRanker()
    else:
        model = xgb.XGBRegressor()
    model.load_model(booster.save_raw(raw_format="ubj"))
    return model


# -- onnx -------------------------------------------------------------------------------------

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class _OnnxRunner:
    """An onnxruntime session read the way skl2onnx writes classifiers and regressors.

    The probability output is the one named like ``probabilities`` or typed as a sequence of
    maps (ZipMap); the label output is the first other one.
    """

    def __init__(self, session: Any, classes: Sequence[Any] | None) -> None:
        self.session = session
        self.classes = None if classes is None else np.asarray(classes)
        outputs = session.get_outputs()
        probas = [o.name for o in outputs if _is_proba_output(o)]
        self.proba_output = probas[0] if probas else None
        labels = [o.name for o in outputs if o.name != self.proba_output]
        self.label_output = labels[0] if labels else None
        self.is_classifier = self.proba_output is not None or self.classes is not None

    def predict(self, X: Any) -> np.ndarray:
        if self.label_output is None:
            proba = self.predict_proba(X)
            assert self.classes is not None  # set by predict_proba
            return self.classes[np.argmax(proba, axis=1)]
        return np.asarray(self._run(self.label_output, X))

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.proba_output is None:
            raise InvalidInput("this ONNX model has no probability output", field="predict_proba")
        out = self._run(self.proba_output, X)
        if isinstance(out, list) and out and isinstance(out[0], dict):
            return self._from_zipmap(out)
        return np.asarray(out, dtype=float)

    def _from_zipmap(self, rows: list[dict[Any, float]]) -> np.ndarray:
        if self.classes is None:
            self.classes = np.asarray(list(rows[0]))
        keys = self.classes.tolist()
        return np.array([[row[k] for k in keys] for row in rows], dtype=float)

    def _run(self, output: str, X: Any) -> Any:
        feeds = _onnx_feeds(self.session.get_inputs(), X)
        try:
            return self.session.run([output], feeds)[0]
        except Exception as exc:  # onnxruntime's pybind errors derive from Exception only
            message = f"the ONNX model rejected the input: {exc}"[:500]
            raise InvalidInput(message, field="X") from exc


def _is_proba_output(output: Any) -> bool:
    return "prob" in output.name.lower() or output.type.startswith("seq(map")


def _onnx_feeds(inputs: Sequence[Any], X: Any) -> dict[str, np.ndarray]:
    """One 2-D tensor for a single input; else one ``(rows, 1)`` column per named input."""
    if len(inputs) == 1:
        return {inputs[0].name: _as_tensor(X, inputs[0])}
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    if not isinstance(X, pd.DataFrame):
        frame.columns = [i.name for i in inputs][: frame.shape[1]]
    missing = [i.name for i in inputs if i.name not in frame.columns]
    if missing:
        raise InvalidInput(f"the ONNX model needs the input column(s) {missing}", field="X")
    return {i.name: _as_tensor(frame[[i.name]], i) for i in inputs}


def _as_tensor(X: Any, node: Any) -> np.ndarray:
    dtype = _ORT_DTYPES.get(node.type, np.float32)
    values = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
    try:
        arr = values.astype(str).astype(object) if dtype is np.object_ else values.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {node.name!r} must be {node.type}: {exc}", field="X") from exc
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _onnx_classes(data: bytes) -> list[Any] | None:
    """Class labels from the graph: a ZipMap's, else the first ``ai.onnx.ml`` classifier's."""
    import onnx

    graph = onnx.load_model_from_string(bytes(data)).graph
    found: list[Any] | None = None
    for node in graph.node:
        labels = _class_labels(node)
        if labels is not None and (node.op_type == "ZipMap" or found is None):
            found = labels
    return found


def _class_labels(node: Any) -> list[Any] | None:
    for attr in node.attribute:
        if attr.name in ("classlabels_int64s", "classlabels_ints") and attr.ints:
            return list(attr.ints)
        if attr.name == "classlabels_strings" and attr.strings:
            return [s.decode() for s in attr.strings]
    return None


def load_version(
    version: Any, artifacts: Any, *, trusted: bool | Sequence[str] = False
) -> LoadedModel:
    """Load a registered version through any artifact store (embedded or REST alike).

    ``artifacts.get_bytes`` verifies the SHA-256 against the version's digest, so a tampered file
    fails with :class:`~loopwright.errors.IntegrityError` before anything parses it.
    """
    from loopwright.registry.signature import Signature

    data = artifacts.get_bytes(version.digest)
    signature = Signature.from_dict(version.signature) if version.signature else None
    return load_model(version.flavor, data, signature=signature, trusted=trusted)
