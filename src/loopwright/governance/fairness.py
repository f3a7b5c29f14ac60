"""Per-group analysis across a sensitive attribute: rates, metrics and their spread.

The two disparity measures follow fairlearn's ``between_groups`` definitions, so the numbers can be
cross-checked against it:

- **demographic parity difference**: max - min over groups of the *selection rate*, the share of
  rows predicted as the positive class.
- **equal opportunity difference**: max - min over groups of the *true positive rate*, the share of
  truly positive rows predicted positive.

Small groups make these numbers noise: a group of 5 rows swings its rate by 0.2 per row. Every
function therefore reports every group (rate and size), but a difference only spans groups with at
least ``min_group_size`` rows (default 1, i.e. all groups, as fairlearn). A group with no truly
positive rows has no true positive rate (``nan``) and is left out of the equal opportunity
difference too. With one eligible group the difference is ``0.0``; with none it is ``nan`` (not
measurable — a gate fails on it rather than certify data it could not judge).

The positive class defaults to the larger label seen (``1`` of ``{0, 1}``); callers that know the
model's classes pass ``positive`` explicitly. Missing attribute values (``None``, ``NaN``)
form one group, keyed ``None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput
from loopwright.governance.metrics import compute_metric


def _factorize(groups: Any) -> tuple[np.ndarray, list[Any]]:
    """Integer codes per row and the sorted group keys (plain Python values, JSON-friendly)."""
    codes, uniques = pd.factorize(
        pd.Series(np.asarray(groups, dtype=object)), sort=True, use_na_sentinel=False
    )
    keys = [None if pd.isna(u) else u.item() if isinstance(u, np.generic) else u for u in uniques]
    return np.asarray(codes), keys


def _positive(*labels: Any) -> Any:
    """The larger label seen; more than two labels needs an explicit positive class."""
    seen = np.unique(np.concatenate([np.asarray(lab) for lab in labels]))
    if len(seen) > 2:
        raise InvalidInput(
            f"{len(seen)} classes seen; fairness rates need the positive class named",
            field="positive",
        )
    return seen[-1]


def _per_group(codes: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per group code (``nan`` for a group without rows)."""
    counts = np.bincount(codes, minlength=n).astype(float)
    sums = np.bincount(codes, weights=values.astype(float), minlength=n)
    out = np.full(n, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def group_sizes(groups: Any) -> dict[Any, int]:
    """Rows per group, so a report shows how much each rate can be trusted."""
    codes, keys = _factorize(groups)
    return dict(zip(keys, np.bincount(codes, minlength=len(keys)).tolist(), strict=True))


def selection_rates(y_pred: Any, groups: Any, *, positive: Any = None) -> dict[Any, float]:
    """Per group, the share of rows predicted as the positive class."""
    yp = np.asarray(y_pred)
    pos = _positive(yp) if positive is None else positive
    codes, keys = _factorize(groups)
    rates = _per_group(codes, len(keys), yp == pos)
    return dict(zip(keys, rates.tolist(), strict=True))


def true_positive_rates(
    y_true: Any, y_pred: Any, groups: Any, *, positive: Any = None
) -> dict[Any, float]:
    """Per group, the share of truly positive rows predicted positive (``nan``: no positives)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    pos = _positive(yt, yp) if positive is None else positive
    codes, keys = _factorize(groups)
    actual = yt == pos
    rates = _per_group(codes[actual], len(keys), (yp == pos)[actual])
    return dict(zip(keys, rates.tolist(), strict=True))


def spread(values: dict[Any, float], sizes: dict[Any, int], min_group_size: int = 1) -> float:
    """max - min of ``values`` over groups with enough rows and a defined value."""
    kept = [v for g, v in values.items() if sizes.get(g, 0) >= min_group_size and np.isfinite(v)]
    if not kept:
        return float("nan")
    return float(max(kept) - min(kept))


def excluded_groups(sizes: dict[Any, int], min_group_size: int) -> list[Any]:
    """Groups too small to count in a difference; reported so the omission is visible."""
    return [g for g, n in sizes.items() if n < min_group_size]


def demographic_parity_difference(
    y_pred: Any, groups: Any, *, positive: Any = None, min_group_size: int = 1
) -> float:
    """Spread of selection rates between groups (0 = every group selected equally often)."""
    return spread(
        selection_rates(y_pred, groups, positive=positive), group_sizes(groups), min_group_size
    )


def equal_opportunity_difference(
    y_true: Any, y_pred: Any, groups: Any, *, positive: Any = None, min_group_size: int = 1
) -> float:
    """Spread of true positive rates between groups (0 = positives found equally in each)."""
    rates = true_positive_rates(y_true, y_pred, groups, positive=positive)
    return spread(rates, group_sizes(groups), min_group_size)


def group_metrics(
    metric_name: str,
    y_true: Any,
    y_pred: Any,
    proba: Any,
    groups: Any,
    *,
    classes: Any = None,
) -> dict[Any, float]:
    """A registered metric computed on each group's rows alone (every group, small ones too)."""
    yt = np.asarray(y_true)
    yp = None if y_pred is None else np.asarray(y_pred)
    p = None if proba is None else np.asarray(proba)
    codes, keys = _factorize(groups)
    out: dict[Any, float] = {}
    for i, key in enumerate(keys):
        rows = codes == i
        out[key] = compute_metric(
            metric_name,
            yt[rows],
            None if yp is None else yp[rows],
            None if p is None else p[rows],
            classes=classes,
        )
    return out
