"""Model flavors: how a model becomes bytes in the registry and back, and what loading may trust.

Loading a model is running code the model's author chose, so every loader here is safe by
default:

=========  ===============  ==========================================================  ========
flavor     file             format                                                      trusted
=========  ===============  ==========================================================  ========
sklearn    model.skops      skops (JSON + arrays); only known-harmless types rebuild    types
xgboost    model.xgb.json   XGBoost's native JSON; the sklearn wrapper is a name        no
lightgbm   model.lgbm.json  LightGBM's text model inside a small JSON header            no
onnx       model.onnx       an ONNX ``ModelProto`` run by onnxruntime                   no
pyfunc     model.pyfunc     cloudpickle of any object with ``predict``                  always
pickle     model.pkl        plain pickle                                                always
=========  ===============  ==========================================================  ========

"trusted: always" means the loader refuses unless the caller passes ``trusted=True``: unpickling
runs code chosen by whoever wrote the bytes. The native formats hold data only; where a file
names a Python class (the XGBoost wrapper) the name is looked up in a fixed allow-list, never
imported. Heavy libraries are imported lazily, so a missing one fails only when its flavor is
used, with :class:`InvalidInput` naming the pip extra; :func:`flavor_for` never imports one just
to look at a model (an object of a library's type exists only if the library is imported).
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopwright.errors import InvalidInput, PermissionDenied

__all__ = [
    "FLAVORS",
    "FLAVOR_LIGHTGBM",
    "FLAVOR_ONNX",
    "FLAVOR_PICKLE",
    "FLAVOR_PYFUNC",
    "FLAVOR_SKLEARN",
    "FLAVOR_XGBOOST",
    "KNOWN_SAFE_TYPES",
    "PICKLE_FILE_NAME",
    "SKLEARN_FILE_NAME",
    "Flavor",
    "LightGBMModel",
    "flavor_for",
    "get_flavor",
    "load_native",
    "load_pickle",
    "load_sklearn",
    "save_model",
    "save_pickle",
    "save_sklearn",
]

FLAVOR_SKLEARN = "sklearn"
SKLEARN_FILE_NAME = "model.skops"
FLAVOR_PICKLE = "pickle"
PICKLE_FILE_NAME = "model.pkl"
FLAVOR_XGBOOST = "xgboost"
FLAVOR_LIGHTGBM = "lightgbm"
FLAVOR_ONNX = "onnx"
FLAVOR_PYFUNC = "pyfunc"

_PICKLE_PROTOCOL = 5  # fixed, not HIGHEST_PROTOCOL, so the bytes do not depend on the Python

Trusted = bool | Sequence[str]


def _never(model: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Flavor:
    """A way of storing models: its name, the artifact's file name, and the codecs.

    ``detect(model)`` answers "is this object of my kind?" without importing anything;
    ``load(data, *, trusted=...)`` returns the native object.
    """

    name: str
    file_name: str
    save: Callable[[Any], bytes]
    load: Callable[..., Any]  # load(data, *, trusted=...)
    detect: Callable[[Any], bool] = _never


# -- shared helpers ---------------------------------------------------------------------------


def _require(module: str, extra: str) -> Any:
    """Import ``module`` or explain which extra to install (a user error, not a crash)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InvalidInput(
            f"the {extra} flavor needs {module.split('.')[0]} ({exc}): "
            f"pip install 'loopwright[{extra}]'",
            field="flavor",
            extra=extra,
        ) from exc


def _instance_of(model: Any, module: str, *names: str) -> bool:
    """``isinstance`` against classes of ``module`` only if it is already imported."""
    mod = sys.modules.get(module)
    classes = tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))
    return bool(classes) and isinstance(model, classes)


def _as_bytes(data: Any) -> bytes:
    """Bytes, never empty: no model is, and some native readers abort on an empty buffer."""
    if isinstance(data, bytes | bytearray | memoryview) and len(data):
        return bytes(data)
    if isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput("the model file is empty", field="data")
    raise InvalidInput(f"model data must be bytes, got {type(data).__name__}", field="data")


def _corrupt(flavor: str, exc: BaseException) -> InvalidInput:
    return InvalidInput(
        f"the bytes are not a loadable {flavor} model: {type(exc).__name__}: {exc}"[:500],
        field="data",
    )


def _refuse_unless_trusted(trusted: Any, what: str) -> None:
    if trusted is not True:
        raise PermissionDenied(
            f"refusing to unpickle {what}: pickle can execute arbitrary code on load; pass "
            "trusted=True only for bytes you produced or reviewed",
            field="trusted",
        )


# -- sklearn (skops) --------------------------------------------------------------------------


def save_sklearn(model: Any) -> bytes:
    """Serialise a scikit-learn estimator with skops (a zip of JSON + arrays, not a pickle)."""
    sio = _skops_io()
    return sio.dumps(model)


def load_sklearn(data: bytes, *, trusted: Trusted = False) -> Any:
    """Rebuild an estimator saved by :func:`save_sklearn`.

    Types skops does not trust by default are refused with :class:`PermissionDenied`, which
    lists them; review them and pass ``trusted=[...]`` (or ``trusted=True`` for bytes you
    produced yourself). Bytes that are not a skops file raise :class:`InvalidInput`.
    """
    sio = _skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    data = _as_bytes(data)
    try:
        if trusted is True:
            return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        # One pass in the common case: skops itself refuses anything outside ``allowed``; only
        # then do we walk the file again to name every offending type.
        allowed = _allowed_types([], trusted) + sorted(KNOWN_SAFE_TYPES)
        try:
            return sio.loads(data, trusted=allowed)
        except UntrustedTypesFoundException:
            untrusted = sio.get_untrusted_types(data=data)
            _refuse_untrusted([t for t in untrusted if t not in allowed])
            raise
    except zipfile.BadZipFile as exc:
        raise InvalidInput("the bytes are not a skops model file", field="data") from exc


#: scikit-learn's own plain data holders that skops does not list as trusted (yet). Loading them
#: sets attributes on a known class and runs no code from the file, so they need no review.
KNOWN_SAFE_TYPES = frozenset({"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})


def _allowed_types(untrusted: list[str], trusted: Trusted) -> list[str]:
    if trusted is True:
        return list(untrusted)
    if trusted is False:
        return [t for t in untrusted if t in KNOWN_SAFE_TYPES]
    if isinstance(trusted, str | bytes) or not isinstance(trusted, Sequence):
        raise InvalidInput(
            "trusted must be True, False or a list of fully qualified type names",
            field="trusted",
        )
    return [str(t) for t in trusted] + [t for t in untrusted if t in KNOWN_SAFE_TYPES]


def _refuse_untrusted(missing: list[str]) -> None:
    if missing:
        raise PermissionDenied(
            f"the model file contains types that are not trusted: {', '.join(missing)}; "
            f"review them, then pass trusted={missing!r} to load it",
            field="trusted",
            untrusted_types=missing,
        )


def _skops_io() -> Any:
    return _require("skops.io", FLAVOR_SKLEARN)


def _is_sklearn(model: Any) -> bool:
    return _instance_of(model, "sklearn.base", "BaseEstimator")


# -- pickle and pyfunc ------------------------------------------------------------------------


def save_pickle(obj: Any) -> bytes:
    """Plain pickle, for objects skops cannot store; loading them needs ``trusted=True``."""
    return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def load_pickle(data: bytes, *, trusted: Trusted = False) -> Any:
    """Unpickle only on an explicit ``trusted=True``: unpickling runs code chosen by whoever
    wrote the bytes, so it must be a decision, never a default."""
    _refuse_unless_trusted(trusted, "a pickle")
    return _unpickle(data, FLAVOR_PICKLE)


def _unpickle(data: bytes, flavor: str) -> Any:
    try:
        return pickle.loads(_as_bytes(data))
    except InvalidInput:
        raise
    except Exception as exc:  # unpickling runs arbitrary code: anything may come out
        raise _corrupt(flavor, exc) from exc


def _save_pyfunc(model: Any) -> bytes:
    """cloudpickle when installed: it stores classes defined in ``__main__`` or a notebook by
    value, so the version loads where that code does not exist. Plain pickle otherwise."""
    if not callable(getattr(model, "predict", None)):
        raise InvalidInput(
            f"a pyfunc model needs a predict() method; {type(model).__qualname__} has none",
            field="model",
        )
    try:
        import cloudpickle
    except ImportError:
        return save_pickle(model)
    return cloudpickle.dumps(model, protocol=_PICKLE_PROTOCOL)


def _load_pyfunc(data: bytes, *, trusted: Trusted = False) -> Any:
    _refuse_unless_trusted(trusted, "a pyfunc model")
    return _unpickle(data, FLAVOR_PYFUNC)


def _is_anything(model: Any) -> bool:
    return True


def _is_pyfunc(model: Any) -> bool:
    return callable(getattr(model, "predict", None))


# -- xgboost ----------------------------------------------------------------------------------

#: The sklearn wrappers a file may name; the name is looked up here, never imported.
_XGB_WRAPPERS = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
_XGB_ATTR = "loopwright_wrapper"


def _is_xgboost(model: Any) -> bool:
    return _instance_of(model, "xgboost.core", "Booster") or _instance_of(
        model, "xgboost.sklearn", "XGBModel"
    )


def _save_xgboost(model: Any) -> bytes:
    """XGBoost's native JSON of the booster. For a sklearn wrapper the booster also carries the
    wrapper's class name and, like XGBoost's own ``save_model``, its estimator type — so the
    file stays a plain XGBoost model any XGBoost can read.

    JSON rather than UBJSON: XGBoost's C++ readers abort the process on some truncated or
    inconsistent input, so the loader parses and checks the document in Python first, which
    needs a format Python reads.
    """
    xgb = _require("xgboost", FLAVOR_XGBOOST)
    if isinstance(model, xgb.Booster):
        return bytes(model.save_raw(raw_format="json"))
    booster = _xgb_fitted_booster(model).copy()  # a copy: the caller's model stays untouched
    wrapper = _xgb_wrapper_name(model)
    meta = json.dumps({"_estimator_type": model._get_type()})
    booster.set_attr(**{_XGB_ATTR: wrapper, "scikit_learn": meta})
    return bytes(booster.save_raw(raw_format="json"))


def _xgb_fitted_booster(model: Any) -> Any:
    try:
        return model.get_booster()
    except (AttributeError, ValueError) as exc:  # sklearn's NotFittedError is both
        message = f"cannot save an unfitted {type(model).__name__}"
        raise InvalidInput(message, field="model") from exc


def _xgb_wrapper_name(model: Any) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in _XGB_WRAPPERS and cls.__module__.startswith("xgboost"):
            return cls.__name__
    return "XGBClassifier" if model._get_type() == "classifier" else "XGBRegressor"


def _load_xgboost(data: bytes, *, trusted: Trusted = False) -> Any:
    """The sklearn wrapper the file names (so ``predict_proba`` works), else the Booster."""
    xgb = _require("xgboost", FLAVOR_XGBOOST)
    raw = bytearray(_as_bytes(data))
    _check_xgb_document(raw)
    try:
        booster = xgb.Booster(model_file=raw)
        wrapper = _xgb_wrapper_for(booster)
        if wrapper is None:
            return booster
        model = getattr(xgb, wrapper)()
        model.load_model(raw)
    except (xgb.core.XGBoostError, ValueError, TypeError) as exc:
        raise _corrupt(FLAVOR_XGBOOST, exc) from exc
    model.get_booster().set_attr(**{_XGB_ATTR: None})
    return model


def _check_xgb_document(raw: bytearray) -> None:
    """Refuse what would crash XGBoost's reader instead of raising: bytes that are not a JSON
    model, and trees whose node arrays disagree in length or point outside the tree."""
    try:
        doc = json.loads(raw)
        learner = doc["learner"]
        n_features = int(learner["learner_model_param"]["num_feature"])
        n_groups = max(int(learner["learner_model_param"].get("num_class", 0)), 1)
        trees = _xgb_trees(learner["gradient_booster"])
        for i, tree in enumerate(trees):
            _ensure(int(tree["id"]) == i, "tree ids out of order")
            _check_xgb_tree(tree, n_features)
        for info in _xgb_find(learner["gradient_booster"], "tree_info"):
            _ensure(len(info) == len(trees), "tree_info disagrees with the trees")
            _ensure(all(0 <= g < n_groups for g in info), "a tree for an unknown class")
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise _corrupt(FLAVOR_XGBOOST, exc) from exc


def _ensure(condition: bool, problem: str) -> None:
    """A check that survives ``python -O`` (which strips ``assert``)."""
    if not condition:
        raise ValueError(problem)


def _xgb_trees(booster: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for trees in _xgb_find(booster, "trees") for t in trees]


def _xgb_find(node: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, list):
        return [found for item in node for found in _xgb_find(item, key)]
    if not isinstance(node, dict):
        return []
    here = [node[key]] if key in node else []
    return here + [f for k, v in node.items() if k != key for f in _xgb_find(v, key)]


_XGB_ROOT = 2**31 - 1  # the "parent" XGBoost records for a tree's root
_XGB_NODE_ARRAYS = ("right_children", "parents", "split_indices", "split_conditions",
                    "default_left", "split_type", "loss_changes", "sum_hessian")  # fmt: skip


def _check_xgb_tree(tree: dict[str, Any], n_features: int) -> None:
    left, right = tree["left_children"], tree["right_children"]
    n = int(tree["tree_param"]["num_nodes"])
    _ensure(len(left) == n > 0, "num_nodes disagrees with the node arrays")
    _ensure(all(len(tree[k]) == n for k in _XGB_NODE_ARRAYS if k in tree), "node array lengths")
    _ensure(all(c == -1 or 0 < c < n for c in left + right), "a child outside the tree")
    _ensure(all(0 <= i < max(n_features, 1) for i in tree["split_indices"]), "a bad feature")
    parents = tree["parents"]
    _ensure(all(0 <= p < n for p in parents[1:]) and parents[0] == _XGB_ROOT, "a bad parent")


def _xgb_wrapper_for(booster: Any) -> str | None:
    """Our own attribute, else XGBoost's ``scikit_learn`` one (files from ``save_model``)."""
    named = booster.attr(_XGB_ATTR)
    if named is not None:
        if named not in _XGB_WRAPPERS:
            raise InvalidInput(f"unknown XGBoost wrapper {named!r} in the file", field="data")
        return named
    meta = booster.attr("scikit_learn")
    kind = json.loads(meta).get("_estimator_type") if meta else None
    return {"classifier": "XGBClassifier", "regressor": "XGBRegressor"}.get(str(kind))


# -- lightgbm ---------------------------------------------------------------------------------

_LGB_FORMAT = "loopwright.lightgbm/1"


@dataclass(frozen=True, slots=True)
class LightGBMModel:
    """A LightGBM booster with what its sklearn wrapper knew: the task and the class labels.

    LightGBM cannot rebuild ``LGBMClassifier`` from a model string (its fitted state is private
    attributes), so the lightgbm flavor loads this instead: ``booster`` is the native
    ``lightgbm.Booster``; ``predict`` and ``predict_proba`` behave like the wrapper's.
    """

    booster: Any
    task: str  # "classifier" or "regressor" (rankers and other objectives predict scores)
    classes: tuple[Any, ...] | None = None

    @property
    def classes_(self) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("a LightGBM regressor has no classes_")
        return np.asarray(self.classes)

    def predict(self, X: Any) -> np.ndarray:
        if self.task != "classifier":
            return np.asarray(self.booster.predict(X))
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != "classifier":
            raise InvalidInput("a LightGBM regressor gives no probabilities", field="predict_proba")
        proba = np.asarray(self.booster.predict(X))
        return proba if proba.ndim == 2 else np.column_stack([1.0 - proba, proba])


def _is_lightgbm(model: Any) -> bool:
    return (
        isinstance(model, LightGBMModel)
        or _instance_of(model, "lightgbm.basic", "Booster")
        or _instance_of(model, "lightgbm.sklearn", "LGBMModel")
    )


def _save_lightgbm(model: Any) -> bytes:
    """JSON: the native text model plus the task and class labels the wrapper knew."""
    lgb = _require("lightgbm", FLAVOR_LIGHTGBM)
    header = _lgb_header(model, lgb)
    return json.dumps(header, sort_keys=True).encode()


def _lgb_header(model: Any, lgb: Any) -> dict[str, Any]:
    if isinstance(model, LightGBMModel):
        classes = None if model.classes is None else list(model.classes)
        return _lgb_doc(model.booster.model_to_string(), model.task, classes)
    if isinstance(model, lgb.Booster):
        text = model.model_to_string()
        return _lgb_doc(text, *_lgb_task_from_text(text))
    if not getattr(model, "fitted_", False):
        raise InvalidInput(f"cannot save an unfitted {type(model).__name__}", field="model")
    text = model.booster_.model_to_string()
    if isinstance(model, lgb.LGBMClassifier):
        return _lgb_doc(text, "classifier", np.asarray(model.classes_).tolist())
    return _lgb_doc(text, "regressor", None)


def _lgb_doc(text: str, task: str, classes: list[Any] | None) -> dict[str, Any]:
    return {"format": _LGB_FORMAT, "task": task, "classes": classes, "model": text}


def _lgb_task_from_text(text: str) -> tuple[str, list[int] | None]:
    """A raw booster's task from its objective line (``objective=binary sigmoid:1``)."""
    fields = dict(line.split("=", 1) for line in text.splitlines()[:20] if "=" in line)
    objective = fields.get("objective", "").split(" ")[0]
    if objective == "binary":
        return "classifier", [0, 1]
    if objective in ("multiclass", "multiclassova", "softmax", "ova"):
        return "classifier", list(range(int(fields.get("num_class", "2"))))
    return "regressor", None


def _load_lightgbm(data: bytes, *, trusted: Trusted = False) -> LightGBMModel:
    lgb = _require("lightgbm", FLAVOR_LIGHTGBM)
    doc = _lgb_parse(_as_bytes(data))
    try:
        booster = lgb.Booster(model_str=doc["model"])
    except (lgb.basic.LightGBMError, ValueError) as exc:
        raise _corrupt(FLAVOR_LIGHTGBM, exc) from exc
    classes = doc.get("classes")
    return LightGBMModel(booster, doc["task"], None if classes is None else tuple(classes))


def _lgb_parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(FLAVOR_LIGHTGBM, exc) from exc
    ok = (
        isinstance(doc, dict)
        and doc.get("format") == _LGB_FORMAT
        and doc.get("task") in ("classifier", "regressor")
        and isinstance(doc.get("model"), str)
        and (doc.get("classes") is None or isinstance(doc["classes"], list))
    )
    if not ok:
        raise InvalidInput(f"the bytes are not a {_LGB_FORMAT} document", field="data")
    return doc


# -- onnx -------------------------------------------------------------------------------------


def _is_onnx(model: Any) -> bool:
    return _instance_of(model, "onnx", "ModelProto")


def _save_onnx(model: Any) -> bytes:
    _require("onnx", FLAVOR_ONNX)
    return bytes(model.SerializeToString())


def _load_onnx(data: bytes, *, trusted: Trusted = False) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU.

    onnxruntime runs only the operators it implements (custom-op libraries must be registered
    explicitly, which this never does). Tensors stored outside the file are refused: their
    locations are paths the file's author chose, and would be read from this machine's disk.
    """
    onnx = _require("onnx", FLAVOR_ONNX)
    ort = _require("onnxruntime", FLAVOR_ONNX)
    raw = _as_bytes(data)
    try:
        proto = onnx.load_model_from_string(raw)
    except Exception as exc:  # protobuf's DecodeError and friends share no narrower base
        raise _corrupt(FLAVOR_ONNX, exc) from exc
    _refuse_external_data(proto, onnx)
    try:
        return ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors derive from Exception only
        raise _corrupt(FLAVOR_ONNX, exc) from exc


def _refuse_external_data(proto: Any, onnx: Any) -> None:
    external = onnx.TensorProto.EXTERNAL
    for tensor in _onnx_tensors(proto.graph):
        if tensor.data_location == external:
            raise InvalidInput(
                f"ONNX tensor {tensor.name!r} is stored outside the model file; embed it "
                "(onnx.save_model(..., save_as_external_data=False)) before registering",
                field="data",
            )


def _onnx_tensors(graph: Any) -> list[Any]:
    """Every tensor of a graph: initializers and node attributes, subgraphs included."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            tensors.extend([attr.t] if attr.HasField("t") else [])
            tensors.extend(attr.tensors)
            for sub in [attr.g] if attr.HasField("g") else []:
                tensors.extend(_onnx_tensors(sub))
            for sub in attr.graphs:
                tensors.extend(_onnx_tensors(sub))
    return tensors


# -- the registry -----------------------------------------------------------------------------

FLAVORS: dict[str, Flavor] = {
    FLAVOR_SKLEARN: Flavor(
        FLAVOR_SKLEARN, SKLEARN_FILE_NAME, save_sklearn, load_sklearn, _is_sklearn
    ),
    FLAVOR_XGBOOST: Flavor(
        FLAVOR_XGBOOST, "model.xgb.json", _save_xgboost, _load_xgboost, _is_xgboost
    ),
    FLAVOR_LIGHTGBM: Flavor(
        FLAVOR_LIGHTGBM, "model.lgbm.json", _save_lightgbm, _load_lightgbm, _is_lightgbm
    ),
    FLAVOR_ONNX: Flavor(FLAVOR_ONNX, "model.onnx", _save_onnx, _load_onnx, _is_onnx),
    FLAVOR_PYFUNC: Flavor(FLAVOR_PYFUNC, "model.pyfunc", _save_pyfunc, _load_pyfunc, _is_pyfunc),
    FLAVOR_PICKLE: Flavor(FLAVOR_PICKLE, PICKLE_FILE_NAME, save_pickle, load_pickle, _is_anything),
}

#: Auto-detection order: the sklearn wrappers of XGBoost and LightGBM are sklearn estimators
#: too, and their native formats are better. pyfunc and pickle are never guessed: they need
#: trust to load, so choosing them must be the caller's decision.
_AUTO_DETECT = (FLAVOR_XGBOOST, FLAVOR_LIGHTGBM, FLAVOR_SKLEARN, FLAVOR_ONNX)


#: What each flavor stores, for the error when an explicit flavor does not fit the model.
_STORES = {
    FLAVOR_SKLEARN: "scikit-learn estimators",
    FLAVOR_XGBOOST: "XGBoost Boosters and XGBoost's sklearn wrappers",
    FLAVOR_LIGHTGBM: "LightGBM Boosters and LightGBM's sklearn wrappers",
    FLAVOR_ONNX: "onnx.ModelProto objects",
    FLAVOR_PYFUNC: "objects with a predict() method",
    FLAVOR_PICKLE: "any picklable object",
}


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``; an unknown name lists the valid ones."""
    flavor = FLAVORS.get(name) if isinstance(name, str) else None
    if flavor is None:
        raise InvalidInput(
            f"unknown flavor {name!r}; valid flavors: {', '.join(sorted(FLAVORS))}",
            field="flavor",
        )
    return flavor


def flavor_for(model: Any, flavor: str | None = None) -> Flavor:
    """The flavor to store ``model`` with: ``flavor`` if given (and it fits), else detected."""
    if flavor is not None:
        chosen = get_flavor(flavor)
        if not chosen.detect(model):
            raise InvalidInput(
                f"the {chosen.name} flavor stores {_STORES[chosen.name]}, "
                f"not a {type(model).__qualname__}",
                field="flavor",
            )
        return chosen
    for name in _AUTO_DETECT:
        if FLAVORS[name].detect(model):
            return FLAVORS[name]
    raise InvalidInput(
        f"cannot tell the flavor of a {type(model).__qualname__}; pass flavor='pyfunc' "
        "explicitly (any object with predict(), stored with pickle: loading it will need "
        "trusted=True)",
        field="flavor",
    )


def save_model(model: Any, flavor: str | None = None) -> tuple[Flavor, bytes]:
    """The model's bytes and the flavor that wrote them (record ``flavor.name`` with them)."""
    chosen = flavor_for(model, flavor)
    return chosen, chosen.save(model)


def load_native(flavor_name: str, data: bytes, *, trusted: Trusted = False) -> Any:
    """The native object stored in ``data`` (a Booster, an estimator, an ONNX session, ...)."""
    return get_flavor(flavor_name).load(data, trusted=trusted)
