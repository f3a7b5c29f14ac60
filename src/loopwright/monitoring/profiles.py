"""Reference profiles: what a model's training data looked like, kept small enough to store.

A profile is computed once, from the training frame, and every drift report afterwards compares a
window of traffic with it -- the raw reference rows are never needed again. Per feature it keeps:

numeric
    count, missing rate, min/max, mean/std (ddof=1), quartiles; ``bins`` quantile bins of the
    non-missing values with their exact counts (interior edges only, so the first and last bins
    are open-ended and catch values outside the reference range); and a seeded uniform sample
    without replacement of at most ``reservoir_size`` values (sorted) for the statistics that
    need samples -- the Kolmogorov-Smirnov statistic and p-value and the Wasserstein distance.
categorical
    the ``max_categories`` most frequent values with their exact counts, the rest summed in an
    "other" bucket, the missing rate and the kind of value seen (``str``, ``number``, ``bool``;
    a current value of another kind counts as a type error).

Bins are left-closed, ``[e[k-1], e[k])``; edges are data values (the inverted-CDF quantiles) so
no reference bin is empty. Non-finite numbers (``inf``) are treated as missing. Booleans and
object/string/category columns are categorical; other numeric dtypes are numeric unless named in
``categorical``. :meth:`ReferenceProfile.to_dict` is JSON-safe and round-trips exactly through
:meth:`ReferenceProfile.from_dict` (floats are Python floats; JSON keeps their repr).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput

__all__ = [
    "FeatureProfile",
    "ReferenceProfile",
    "category_key",
    "float_column",
    "profile_frame",
    "value_kind",
]

FORMAT = 1
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureProfile:
    """One feature of the reference data (see the module docstring for what each kind keeps)."""

    name: str
    kind: Kind
    dtype: str
    rows: int  # rows of the reference frame
    count: int  # non-missing (finite) values
    missing_rate: float
    # numeric
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quartiles: tuple[float, float, float] | None = None
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    sample: tuple[float, ...] = ()
    # categorical
    categories: tuple[tuple[str, int], ...] = ()
    other_count: int = 0
    value_type: str = ""

    @cached_property
    def edges_array(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=np.float64)

    @cached_property
    def counts_array(self) -> np.ndarray:
        return np.asarray(self.counts, dtype=np.int64)

    @cached_property
    def sample_array(self) -> np.ndarray:
        return np.asarray(self.sample, dtype=np.float64)

    @property
    def scale(self) -> float:
        """The spread distances are divided by: the std, else the IQR, else 1 (constant)."""
        if self.std is not None and self.std > 0:
            return self.std
        if self.quartiles is not None and self.quartiles[2] > self.quartiles[0]:
            return self.quartiles[2] - self.quartiles[0]
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "rows": self.rows,
            "count": self.count,
            "missing_rate": self.missing_rate,
        }
        if self.kind == "numeric":
            body |= {
                "min": self.min,
                "max": self.max,
                "mean": self.mean,
                "std": self.std,
                "quartiles": None if self.quartiles is None else list(self.quartiles),
                "edges": list(self.edges),
                "counts": list(self.counts),
                "sample": list(self.sample),
            }
        else:
            body |= {
                "categories": dict(self.categories),
                "other_count": self.other_count,
                "value_type": self.value_type,
            }
        return body

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureProfile:
        try:
            common: dict[str, Any] = {
                "name": str(d["name"]),
                "kind": d["kind"],
                "dtype": str(d["dtype"]),
                "rows": int(d["rows"]),
                "count": int(d["count"]),
                "missing_rate": float(d["missing_rate"]),
            }
            if d["kind"] == "numeric":
                q = d.get("quartiles")
                return cls(
                    **common,
                    min=_opt_float(d.get("min")),
                    max=_opt_float(d.get("max")),
                    mean=_opt_float(d.get("mean")),
                    std=_opt_float(d.get("std")),
                    quartiles=None if q is None else (float(q[0]), float(q[1]), float(q[2])),
                    edges=tuple(float(e) for e in d["edges"]),
                    counts=tuple(int(c) for c in d["counts"]),
                    sample=tuple(float(v) for v in d["sample"]),
                )
            if d["kind"] == "categorical":
                cats = tuple((str(k), int(v)) for k, v in dict(d["categories"]).items())
                return cls(
                    **common,
                    categories=cats,
                    other_count=int(d.get("other_count", 0)),
                    value_type=str(d.get("value_type", "")),
                )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InvalidInput(
                f"malformed feature profile {d.get('name')!r}: {exc!r}", field="profile"
            ) from None
        raise InvalidInput(f"unknown feature kind {d['kind']!r}", field="profile")


@dataclass(frozen=True)
class ReferenceProfile:
    """The profile of a whole reference frame; ``features`` keeps the frame's column order."""

    rows: int
    features: dict[str, FeatureProfile]
    created_at_ms: int
    bins: int = 20
    reservoir_size: int = 5000
    max_categories: int = 50
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "created_at_ms": self.created_at_ms,
            "bins": self.bins,
            "reservoir_size": self.reservoir_size,
            "max_categories": self.max_categories,
            "seed": self.seed,
            "meta": dict(self.meta),
            "features": [f.to_dict() for f in self.features.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        if not isinstance(d, Mapping) or "features" not in d:
            raise InvalidInput(
                "a reference profile must be a mapping with features", field="profile"
            )
        if d.get("format", FORMAT) != FORMAT:
            raise InvalidInput(f"unknown profile format {d.get('format')!r}", field="profile")
        feats = [FeatureProfile.from_dict(f) for f in d["features"]]
        return cls(
            rows=int(d["rows"]),
            features={f.name: f for f in feats},
            created_at_ms=int(d["created_at_ms"]),
            bins=int(d.get("bins", 20)),
            reservoir_size=int(d.get("reservoir_size", 5000)),
            max_categories=int(d.get("max_categories", 50)),
            seed=int(d.get("seed", 0)),
            meta=dict(d.get("meta") or {}),
        )

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceProfile:
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"reference profile is not JSON: {exc}", field="profile") from None
        return cls.from_dict(body)


def profile_frame(
    df: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    reservoir_size: int = 5000,
    seed: int = 0,
    categorical: list[str] | None = None,
    bins: int = 20,
    max_categories: int = 50,
    now_ms: int | None = None,
) -> ReferenceProfile:
    """Profile ``df`` (all supported columns, or ``columns``) once, for every later drift report.

    Columns of unsupported dtypes (datetimes, timedeltas, complex) are skipped when ``columns`` is
    not given and refused when they are named. Deterministic for a given ``seed``: each column's
    sample is drawn from a generator seeded with ``(seed, crc32(name))``.
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidInput("profile_frame needs a pandas DataFrame", field="df")
    if len(df) == 0:
        raise InvalidInput("cannot profile an empty frame", field="df")
    if reservoir_size < 1 or bins < 2 or max_categories < 1:
        raise InvalidInput(
            "reservoir_size >= 1, bins >= 2 and max_categories >= 1 are required",
            field="reservoir_size"
            if reservoir_size < 1
            else "bins"
            if bins < 2
            else "max_categories",
        )
    forced = set(categorical or ())
    unknown = sorted(str(c) for c in (set(columns or ()) | forced) - set(df.columns))
    if unknown:
        field_name = "columns" if set(unknown) & set(columns or ()) else "categorical"
        raise InvalidInput(f"no such column(s): {', '.join(unknown)}", field=field_name)
    names = list(df.columns) if columns is None else list(columns)
    features: dict[str, FeatureProfile] = {}
    for name in names:
        s = df[name]
        kind = _kind_of(s, forced=name in forced)
        if kind is None:
            if columns is None:
                continue
            raise InvalidInput(f"column {name!r} has unsupported dtype {s.dtype}", field=str(name))
        key = str(name)
        if kind == "numeric":
            features[key] = _numeric_profile(key, s, bins, reservoir_size, seed)
        else:
            features[key] = _categorical_profile(key, s, max_categories)
    if not features:
        raise InvalidInput("no column of a supported dtype to profile", field="columns")
    return ReferenceProfile(
        rows=len(df),
        features=features,
        created_at_ms=int(time.time() * 1000) if now_ms is None else int(now_ms),
        bins=bins,
        reservoir_size=reservoir_size,
        max_categories=max_categories,
        seed=seed,
    )


# -- helpers shared with drift -------------------------------------------------------------------


def float_column(s: pd.Series) -> tuple[np.ndarray, int]:
    """(float64 values, type errors) of a column meant to be numeric; NaN marks missing.

    A float64 column is returned without a copy; other numeric and boolean dtypes are converted;
    anything else is coerced with :func:`pandas.to_numeric`, and the non-missing values that do
    not convert are the type errors.
    """
    dtype = s.dtype
    if dtype == np.float64:
        return s.to_numpy(), 0
    numeric = pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)
    if numeric and not pd.api.types.is_complex_dtype(dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan), 0
    coerced = pd.to_numeric(s.astype(object), errors="coerce")
    errors = int(s.notna().sum() - coerced.notna().sum())
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan), max(errors, 0)


def finite_sorted(values: np.ndarray) -> np.ndarray:
    """The finite values of ``values``, sorted (one copy: the sort; the slice is a view)."""
    xs = np.sort(values)
    lo = int(np.searchsorted(xs, -np.inf, side="right"))
    hi = int(np.searchsorted(xs, np.inf, side="left"))
    return xs[lo:hi]


def category_key(value: Any) -> str:
    """The string a category is kept under: ``1``, ``1.0`` and ``np.int64(1)`` are all ``"1"``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def value_kind(value: Any) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    return type(value).__name__


def _kind_of(s: pd.Series, *, forced: bool) -> Kind | None:
    dtype = s.dtype
    if forced:
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return "categorical"
    return None


def _numeric_profile(
    name: str, s: pd.Series, bins: int, reservoir_size: int, seed: int
) -> FeatureProfile:
    values, _ = float_column(s)
    xs = finite_sorted(values)
    n, rows = int(xs.size), len(values)
    base: dict[str, Any] = {
        "name": name,
        "kind": "numeric",
        "dtype": str(s.dtype),
        "rows": rows,
        "count": n,
        "missing_rate": (rows - n) / rows,
    }
    if n == 0:
        return FeatureProfile(**base, counts=(0,))
    # inverted-CDF quantiles: the smallest value whose ECDF reaches k/bins, so edges are data values
    positions = np.ceil(np.arange(1, bins) * n / bins).astype(np.int64) - 1
    edges = np.unique(xs[np.clip(positions, 0, n - 1)])
    edges = edges[edges > xs[0]]  # an edge at the minimum would leave the first bin empty
    below = np.searchsorted(xs, edges, side="left")
    counts = np.diff(np.concatenate(([0], below, [n])))
    if n <= reservoir_size:
        sample = xs
    else:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        sample = np.sort(xs[rng.choice(n, reservoir_size, replace=False)])
    q = np.quantile(xs, [0.25, 0.5, 0.75])
    std = float(np.std(xs, ddof=1)) if n > 1 else 0.0
    return FeatureProfile(
        **base,
        min=float(xs[0]),
        max=float(xs[-1]),
        mean=float(np.mean(xs)),
        std=std,
        quartiles=(float(q[0]), float(q[1]), float(q[2])),
        edges=tuple(edges.tolist()),
        counts=tuple(counts.tolist()),
        sample=tuple(sample.tolist()),
    )


def category_counts(s: pd.Series) -> tuple[dict[str, int], dict[str, int], int]:
    """(counts by category key, counts by value kind, missing) of a column, hashed in C.

    Only the distinct values are visited in Python.
    """
    vc = s.value_counts(dropna=True, sort=False)
    counts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for value, c in zip(vc.index.tolist(), vc.to_numpy().tolist(), strict=True):
        if c == 0:  # unobserved levels of a pandas Categorical
            continue
        key = category_key(value)
        counts[key] = counts.get(key, 0) + int(c)
        kind = value_kind(value)
        kinds[kind] = kinds.get(kind, 0) + int(c)
    missing = len(s) - sum(counts.values())
    return counts, kinds, missing


def _categorical_profile(name: str, s: pd.Series, max_categories: int) -> FeatureProfile:
    counts, kinds, missing = category_counts(s)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = tuple(ranked[:max_categories])
    other = sum(c for _, c in ranked[max_categories:])
    rows = len(s)
    return FeatureProfile(
        name=name,
        kind="categorical",
        dtype=str(s.dtype),
        rows=rows,
        count=rows - missing,
        missing_rate=missing / rows,
        categories=kept,
        other_count=other,
        value_type=next(iter(kinds)) if len(kinds) == 1 else "mixed" if kinds else "",
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)
