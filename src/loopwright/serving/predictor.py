"""Requests made into model input, and one loaded model version answering them.

:func:`validate_records` (JSON records) and :func:`validate_columns` (the V2 protocol's named
columns) turn a request body into a frame. With a signature every problem is reported at once
(:class:`~loopwright.errors.InvalidInput` with ``details["problems"]``, ``field`` the first
offending column) and the frame holds the signature's columns, in order, cast to its types;
extra columns are dropped. Without one, the frame is what was sent.

A :class:`ModelSlot` is one version behind a route. It answers through a
:class:`~loopwright.serving.batching.MicroBatcher` over one function that returns predictions
and probabilities together: a classifier's ``predict_proba`` runs once and the predictions are
``classes_[argmax]``, so a request costs one model call; a regressor only predicts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput
from loopwright.registry.model import LoadedModel
from loopwright.registry.signature import Signature, check_input
from loopwright.serving.batching import Arrivals, MicroBatcher
from loopwright.serving.deployment import Batching

__all__ = [
    "Inputs",
    "ModelSlot",
    "Rows",
    "numeric_matrix",
    "validate_columns",
    "validate_records",
]


class Rows:
    """Validated rows of an all-numeric signature: one float64 matrix in signature order.

    Why not a DataFrame: building one costs ~30 µs, about as much as the HTTP server spends on a
    whole request, and a batch of them must be concatenated again before the model sees them.
    Rows are stacked with one ``np.vstack`` and, for a model fitted on exactly these columns,
    handed to it as they are; :meth:`to_frame` makes the frame for every other model.
    """

    __slots__ = ("columns", "values")

    def __init__(self, values: np.ndarray, columns: pd.Index) -> None:
        self.values = values
        self.columns = columns

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Rows({len(self)} x {len(self.columns)})"

    def to_numpy(self) -> np.ndarray:
        return self.values

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=self.columns, copy=False)


#: What the validators return and a slot predicts on.
Inputs = pd.DataFrame | Rows


def as_frame(inputs: Inputs) -> pd.DataFrame:
    return inputs.to_frame() if isinstance(inputs, Rows) else inputs


def validate_records(records: Any, signature: Signature | None, field: str = "records") -> Inputs:
    """A frame (or :class:`Rows`) from a non-empty list of JSON objects, checked against
    ``signature``."""
    if not isinstance(records, list):
        raise InvalidInput(f"{field} must be a list of objects", field=field)
    if not records:
        raise InvalidInput(f"{field} is empty; send at least one record", field=field)
    fast = _numeric_rows(records, signature)
    if fast is not None:
        return fast
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            kind = type(record).__name__
            raise InvalidInput(f"{field}[{i}] must be an object, got {kind}", field=f"{field}[{i}]")
    return _conform(pd.DataFrame.from_records(records), signature, field)


_NUMERIC = {"float64"}


#: id(signature) -> (signature, its input names if all are float64): asked on every request,
#: answered once per signature (a served version keeps its one Signature object).
_FLOAT_NAMES: dict[int, tuple[Signature, list[str] | None]] = {}


def _all_float(signature: Signature | None) -> list[str] | None:
    if signature is None:
        return None
    known = _FLOAT_NAMES.get(id(signature))
    if known is not None and known[0] is signature:
        return known[1]
    names = signature.input_names
    floats = names if all(s.type in _NUMERIC for s in signature.inputs) else None
    if len(_FLOAT_NAMES) > 256:
        _FLOAT_NAMES.clear()
    _FLOAT_NAMES[id(signature)] = (signature, floats)
    return floats


def _numeric_rows(records: list[Any], signature: Signature | None) -> Rows | None:
    """All-float64 signature and plain int/float values: one array, no per-column work
    (anything else takes the general path, with its error messages)."""
    names = _all_float(signature)
    if names is None:
        return None
    try:
        rows = [[r[n] for n in names] for r in records]
    except (KeyError, TypeError):
        return None
    for row in rows:
        for v in row:
            t = type(v)
            if t is not float and t is not int:
                return None
    return Rows(np.array(rows, dtype=np.float64), _index(names))


_INDEXES: dict[tuple[str, ...], pd.Index] = {}


def _index(names: list[str]) -> pd.Index:
    key = tuple(names)
    index = _INDEXES.get(key)
    if index is None:
        index = _INDEXES[key] = pd.Index(names)
    return index


def numeric_matrix(data: Any, rows: int, width: int, signature: Signature | None) -> Rows | None:
    """Rows from a flat row-major list of ``rows x width`` plain numbers, when the signature is
    all ``float64`` with ``width`` inputs (a V2 ``[N, k]`` tensor); None for anything else,
    which then takes the general path and its error messages."""
    names = _all_float(signature)
    if names is None or len(names) != width or not isinstance(data, list):
        return None
    if len(data) != rows * width or not rows:
        return None
    for v in data:
        t = type(v)
        if t is not float and t is not int:
            return None
    return Rows(np.array(data, dtype=np.float64).reshape(rows, width), _index(names))


def validate_columns(columns: Any, signature: Signature | None, field: str = "inputs") -> Inputs:
    """A frame (or :class:`Rows`) from ``{name: [values...]}`` with equal, non-zero lengths,
    checked likewise."""
    if not isinstance(columns, Mapping) or not columns:
        raise InvalidInput(f"{field} must be a non-empty mapping of column -> list", field=field)
    lengths: dict[str, int] = {}
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InvalidInput(f"{field}.{name} must be a list of values", field=f"{field}.{name}")
        lengths[str(name)] = len(values)
    if len(set(lengths.values())) > 1:
        raise InvalidInput(
            f"{field} columns have different lengths: {lengths}", field=field, lengths=lengths
        )
    if not next(iter(lengths.values())):
        raise InvalidInput(f"{field} has no rows", field=field)
    names = _all_float(signature)
    if names is not None and all(n in columns for n in names):
        data = [columns[n] for n in names]
        if all((type(v) is float or type(v) is int) for col in data for v in col):
            return Rows(np.array(data, dtype=np.float64).T, _index(names))
    frame = pd.DataFrame({str(k): v for k, v in columns.items()})
    return _conform(frame, signature, field)


def _conform(frame: pd.DataFrame, signature: Signature | None, field: str) -> pd.DataFrame:
    if signature is None:
        return frame
    problems = check_input(signature, frame)
    if problems:
        raise InvalidInput(
            f"{field} do not fit the model's signature: " + "; ".join(problems),
            field=_first_column(signature, problems[0]) or field,
            problems=problems,
        )
    conformed = frame.reindex(columns=signature.input_names)
    for spec in signature.inputs:
        conformed[spec.name] = _cast(conformed[spec.name], spec.type)
    return conformed


def _first_column(signature: Signature, problem: str) -> str | None:
    """The column a :func:`check_input` problem names (it writes ``column {name!r}``)."""
    for spec in signature.inputs:
        if f"column {spec.name!r}" in problem:
            return spec.name
    return None


def _cast(column: pd.Series, kind: str) -> pd.Series:
    """Values ``check_input`` accepted, in the signature's type; missing values stay missing."""
    has_na = bool(column.isna().any())
    if kind == "float64" or (kind == "int64" and has_na):
        return column.astype("float64")
    if kind == "int64":
        return column.astype("int64")
    if kind == "bool":
        return column.astype("boolean" if has_na else "bool")
    if kind == "category":
        return column.astype("category")
    if kind == "datetime":
        return pd.to_datetime(column, format="ISO8601")
    return column  # string: JSON strings already


# -- a loaded version -------------------------------------------------------------------------


class VersionLike(Protocol):
    """What :class:`ModelSlot` reads of a registry ``ModelVersion``."""

    model: str
    version: int
    signature: dict[str, Any] | None

    @property
    def uri(self) -> str: ...


class ModelSlot:
    """One model version ready to answer: its identity, signature and micro-batcher.

    ``ref`` is what the route asked the registry for (``churn@champion``); ``uri`` is what
    answered (``churn/3``). ``predict`` returns ``{"predictions": [...], "probabilities":
    [[...], ...] | None}``, plain Python values ready for JSON.
    """

    def __init__(
        self,
        ref: str,
        version: VersionLike,
        model: LoadedModel,
        batching: Batching,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.ref = ref
        self.model_name = version.model
        self.version = int(version.version)
        self.uri = version.uri
        stored = version.signature
        self.signature: Signature | None = (
            Signature.from_dict(stored) if stored else model.signature
        )
        self.model = model
        self.loaded = True
        self.loaded_at = time.time()
        classes = model.classes_
        #: A classifier's labels, as plain values (None for a regressor).
        self.classes: list[Any] | None = None if classes is None else classes.tolist()
        self._has_proba = model.is_classifier and classes is not None
        native = getattr(model, "native", None)
        fitted = getattr(native, "feature_names_in_", None)
        self._raw = None
        if (
            model.flavor == "sklearn"
            and self.signature is not None
            and fitted is not None
            and list(fitted) == self.signature.input_names
            and hasattr(native, "predict_proba")  # (an SVC without probability=True has not)
            and all(spec.type in ("float64", "int64") for spec in self.signature.inputs)
        ):
            # The frame is already in the fitted column order (checked above), so the model is
            # called with its NumPy array: sklearn's per-call DataFrame checks cost ~1 ms. sklearn
            # then warns on every call that the array has no feature names; silence only that.
            import warnings

            warnings.filterwarnings(
                "ignore", message="X does not have valid feature names", category=UserWarning
            )
            self._raw = native
        run = batching.executor
        if run == "auto":
            run = "inline" if model.flavor == "sklearn" else "thread"
        self.batcher = MicroBatcher(
            self._infer,
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            run=run,
            arrivals=arrivals,
            max_queue=batching.max_queue,
        )

    def __repr__(self) -> str:
        return f"ModelSlot(ref={self.ref!r}, uri={self.uri!r})"

    async def predict(self, frame: Inputs) -> dict[str, Any]:
        predictions, probabilities = await self.batcher.submit(frame)
        return {
            "predictions": predictions.tolist(),
            "probabilities": None if probabilities is None else probabilities.tolist(),
        }

    async def close(self) -> None:
        self.loaded = False
        await self.batcher.close()

    def _infer(self, inputs: Inputs) -> tuple[np.ndarray, np.ndarray | None]:
        """Runs in the batcher's thread: one model call per batch."""
        if self._raw is not None and self._has_proba:
            try:
                proba = self._raw.predict_proba(inputs.to_numpy())
            except Exception:  # e.g. a Pipeline selecting columns by name: frames from now on
                self._raw = None
            else:
                return self._raw.classes_[np.argmax(proba, axis=1)], proba
        frame = as_frame(inputs)
        if self._has_proba:
            try:
                proba = self.model.predict_proba(frame)
            except InvalidInput as exc:
                if exc.field != "predict_proba":
                    raise
                self._has_proba = False  # e.g. an SVC without probability=True
            else:
                classes = self.model.classes_
                assert classes is not None
                return classes[np.argmax(proba, axis=1)], proba
        return self.model.predict(frame), None
