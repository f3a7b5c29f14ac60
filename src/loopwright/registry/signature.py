"""Model signatures: the columns a model reads and writes, in a small JSON-friendly vocabulary.

A signature is stored with each model version. Serving checks requests against it
(:func:`check_input`, every problem at once so the 4xx answer is complete), and the registry's
"schema compatible with the champion" gate compares two of them (:func:`compatibility`).

Types are one of :data:`TYPES`. ``nullable`` means the column may hold missing values *and* may
be left out of a request (it is then filled with missing values); a non-nullable input is
required.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput

__all__ = [
    "TYPES",
    "ColumnSpec",
    "Signature",
    "check_input",
    "compatibility",
    "extra_columns",
    "infer_signature",
]

TYPES = ("int64", "float64", "bool", "string", "category", "datetime")

#: (from, to) pairs where every value of ``from`` is a valid, equal value of ``to``.
_WIDENINGS = frozenset({("bool", "int64"), ("bool", "float64"), ("int64", "float64")})


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: its name, its type (one of :data:`TYPES`) and whether it may be missing."""

    name: str
    type: str
    nullable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput("a column name must be a non-empty string", field="name")
        if self.type not in TYPES:
            raise InvalidInput(
                f"column {self.name!r} has type {self.type!r}; valid types: {', '.join(TYPES)}",
                field="type",
            )
        if not isinstance(self.nullable, bool):
            raise InvalidInput(f"column {self.name!r}: nullable must be a bool", field="nullable")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass(frozen=True, slots=True)
class Signature:
    """The input columns a model reads, in order, and the output columns it writes."""

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()

    def __post_init__(self) -> None:
        for part in ("inputs", "outputs"):
            columns = tuple(getattr(self, part))
            object.__setattr__(self, part, columns)
            if not all(isinstance(c, ColumnSpec) for c in columns):
                raise InvalidInput(f"signature {part} must be ColumnSpec objects", field=part)
            _no_duplicates([c.name for c in columns], part)

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        """Validate a stored or sent signature; the error's ``field`` points at the bad part
        (``inputs[2].type``). Unknown keys are ignored, so newer writers stay readable."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a signature must be an object", field="signature")
        if "inputs" not in data:
            raise InvalidInput("a signature needs an 'inputs' list", field="inputs")
        return cls(_columns(data["inputs"], "inputs"), _columns(data.get("outputs", []), "outputs"))


def _columns(items: Any, part: str) -> tuple[ColumnSpec, ...]:
    if not isinstance(items, list | tuple):
        raise InvalidInput(f"signature {part} must be a list", field=part)
    return tuple(_column(item, f"{part}[{i}]") for i, item in enumerate(items))


def _column(item: Any, where: str) -> ColumnSpec:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object with name and type", field=where)
    values: dict[str, Any] = {k: item.get(k) for k in ("name", "type")}
    try:
        return ColumnSpec(**values, nullable=item.get("nullable", False))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", field=f"{where}.{exc.field}") from None


def _no_duplicates(names: list[str], part: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput(f"signature {part} repeat the column(s) {repeated}", field=part)


# -- inference --------------------------------------------------------------------------------


def infer_signature(X: Any, y: Any = None) -> Signature:
    """The signature of a training frame (and target): what the model was shown.

    Array columns are named ``"0"``, ``"1"``, ...; a column is nullable if it holds a missing
    value. Types outside the vocabulary (timedelta, complex, ...) are refused by name.
    """
    inputs = _specs(_frame(X, "X"))
    outputs = () if y is None else _specs(_frame(y, "y"))
    return Signature(inputs, outputs)


def _frame(data: Any, field: str) -> pd.DataFrame:
    """A DataFrame with string column names from a frame, a series or a 1-/2-D array."""
    if isinstance(data, pd.Series):
        return data.to_frame(name="0" if data.name is None else str(data.name))
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, np.ndarray) and data.ndim in (1, 2):
        frame = pd.DataFrame(data.reshape(len(data), -1))
    else:
        raise InvalidInput(
            f"{field} must be a DataFrame, Series or 1-/2-D ndarray, got {type(data).__name__}",
            field=field,
        )
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    _no_duplicates(list(frame.columns), field)
    return frame


def _specs(frame: pd.DataFrame) -> tuple[ColumnSpec, ...]:
    return tuple(
        ColumnSpec(name, _type_of(frame[name], name), bool(frame[name].isna().any()))
        for name in frame.columns
    )


def _type_of(column: pd.Series, name: str) -> str:
    """The vocabulary type of a column: by dtype, and by content for object columns."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "float64"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return _INFERRED.get(pd.api.types.infer_dtype(column, skipna=True), "string")
    raise InvalidInput(
        f"column {name!r} has type {dtype}, which signatures cannot describe "
        f"(valid types: {', '.join(TYPES)})",
        field=name,
    )


#: pandas' content-based guess for object columns -> the vocabulary.
_INFERRED = {
    "integer": "int64",
    "floating": "float64",
    "mixed-integer-float": "float64",
    "boolean": "bool",
    "datetime": "datetime",
    "datetime64": "datetime",
    "date": "datetime",
}


# -- checking requests ------------------------------------------------------------------------


def check_input(signature: Signature, df: Any) -> list[str]:
    """Every problem of ``df`` against the signature's inputs (empty when it can be served).

    A missing required column, a missing value in a non-nullable column, and values that
    cannot be cast safely to the column's type (text where a number is expected, 2.5 for an
    int) are problems; extra columns are not (see :func:`extra_columns`).
    """
    frame = _frame(df, "X")
    problems: list[str] = []
    for spec in signature.inputs:
        if spec.name not in frame.columns:
            if not spec.nullable:
                problems.append(f"column {spec.name!r} ({spec.type}) is missing")
            continue
        problems.extend(_column_problems(spec, frame[spec.name]))
    return problems


def extra_columns(signature: Signature, df: Any) -> list[str]:
    """Columns of ``df`` the signature does not name: ignored when predicting, worth a note."""
    known = set(signature.input_names)
    return [c for c in _frame(df, "X").columns if c not in known]


def _column_problems(spec: ColumnSpec, column: pd.Series) -> list[str]:
    problems = []
    nulls = int(column.isna().sum())
    if nulls and not spec.nullable:
        problems.append(f"column {spec.name!r} has {nulls} missing value(s) but is not nullable")
    values = column.dropna()
    if len(values) and not _castable(values, spec.type):
        actual = _type_of(values, spec.name) if _describable(values) else str(values.dtype)
        problems.append(f"column {spec.name!r} should be {spec.type}, got {actual} values")
    return problems


def _describable(values: pd.Series) -> bool:
    try:
        _type_of(values, "")
    except InvalidInput:
        return False
    return True


def _castable(values: pd.Series, expected: str) -> bool:
    """Can these (non-missing) values become ``expected`` without changing any of them?"""
    actual = _type_of(values, "") if _describable(values) else None
    if actual == expected or (actual, expected) in _WIDENINGS:
        return True
    if expected == "int64" and actual == "float64":
        return bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    if expected == "bool" and actual == "int64":
        return bool(values.isin([0, 1]).all())
    if expected in ("string", "category"):
        return actual in ("string", "category") or (expected == "category" and actual == "int64")
    if expected == "datetime" and actual == "string":
        parsed = pd.to_datetime(values, errors="coerce", format="ISO8601")
        return not bool(parsed.isna().any())
    return False


# -- comparing versions -----------------------------------------------------------------------


def compatibility(old: Signature, new: Signature) -> list[str]:
    """Breaking changes from ``old`` (the champion's) to ``new`` (the candidate's).

    Requests that fit ``old`` must fit ``new``: a new required input, an input becoming
    required, or an input type that is not a safe widening (int64 -> float64) breaks them.
    Consumers of ``old``'s outputs must still find theirs: a removed output, an output
    becoming nullable, or a type the old one cannot hold breaks them. Removed inputs and
    added outputs do not.
    """
    return _input_changes(old, new) + _output_changes(old, new)


def _input_changes(old: Signature, new: Signature) -> list[str]:
    before = {c.name: c for c in old.inputs}
    changes = []
    for col in new.inputs:
        was = before.get(col.name)
        if was is None:
            if not col.nullable:
                changes.append(f"input {col.name!r} is new and required")
            continue
        if not _widens(was.type, col.type):
            changes.append(f"input {col.name!r} changed type {was.type} -> {col.type}")
        if was.nullable and not col.nullable:
            changes.append(f"input {col.name!r} no longer accepts missing values")
    return changes


def _output_changes(old: Signature, new: Signature) -> list[str]:
    after = {c.name: c for c in new.outputs}
    changes = []
    for col in old.outputs:
        now = after.get(col.name)
        if now is None:
            changes.append(f"output {col.name!r} was removed")
            continue
        if not _widens(now.type, col.type):
            changes.append(f"output {col.name!r} changed type {col.type} -> {now.type}")
        if now.nullable and not col.nullable:
            changes.append(f"output {col.name!r} may now be missing")
    return changes


def _widens(source: str, target: str) -> bool:
    return source == target or (source, target) in _WIDENINGS
