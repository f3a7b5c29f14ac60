"""The second reference: a plain NumPy/SciPy pass over the raw rows of both frames.

No profile, no sketch: what a careful engineer would write in an afternoon, one column at a time,
each statistic straight from SciPy on every row of both frames. It does not import loopwright.

Per numeric column: one sort of each side, then the Kolmogorov-Smirnov statistic and the
Wasserstein-1 distance from the two sorted arrays (:func:`ks_wasserstein`; the same values as
``ks_2samp`` and ``wasserstein_distance``, about eight times faster than calling those, which
search unsorted queries and sort again), the asymptotic KS p-value ``kstwo.sf`` as
``ks_2samp(method="asymp")``, Welch's ``ttest_ind``, and PSI / Jensen-Shannon / chi-square over
20 reference-quantile bins.
Per categorical column: PSI / Jensen-Shannon / chi-square over the union of the categories.

The verdict uses the same rule as loopwright's default, so this pass is also an *exact* check of
that rule's accuracy on the raw rows: the smallest p-value times the number of tests must be below
0.01 / columns (Bonferroni), and one effect must reach its floor -- PSI >= 0.1, Wasserstein/std
>= 0.05 or JS >= 0.05. It is deliberately not parallelised: one core, like Evidently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

ALPHA = 0.01
BINS = 20
FLOORS = {"psi": 0.1, "wasserstein_norm": 0.05, "js": 0.05}
EPS = 1e-4


def load(tool: str, data: Path, profile: Path | None) -> Any:
    return pd.read_parquet(data / "reference.parquet"), pd.read_parquet(data / "current.parquet")


def compute(tool: str, inputs: Any, profiling: bool = False) -> dict[str, dict[str, Any]]:
    reference, current = inputs
    alpha = ALPHA / reference.shape[1]
    out = {}
    for name in reference.columns:
        r, c = reference[name], current[name]
        numeric = pd.api.types.is_numeric_dtype(r.dtype) and not pd.api.types.is_bool_dtype(r)
        found = _numeric(r, c) if numeric else _categorical(r, c)
        out[name] = _decide(found, alpha)
    return out


def _numeric(r: pd.Series, c: pd.Series) -> dict[str, Any]:
    xs = _sorted_finite(r)
    ys = _sorted_finite(c)
    n, m = xs.size, ys.size
    d, w = ks_wasserstein(xs, ys)
    en = round(n * m / (n + m))
    ks_p = float(sps.kstwo.sf(d, en))  # what ks_2samp(method="asymp") returns
    std = float(np.std(xs, ddof=1)) or 1.0
    welch = sps.ttest_ind(xs, ys, equal_var=False)
    edges = np.unique(np.quantile(xs, np.linspace(0, 1, BINS + 1)[1:-1]))
    rc = np.diff(np.concatenate(([0], np.searchsorted(xs, edges, side="right"), [n])))
    cc = np.diff(np.concatenate(([0], np.searchsorted(ys, edges, side="right"), [m])))
    stats = _binned(rc, cc)
    stats["wasserstein_norm"] = w / std
    tests = [ks_p, stats.pop("chi2_p"), float(welch.pvalue)]
    return {"stats": stats, "p": min(1.0, min(tests) * len(tests)), "n": m}


def _sorted_finite(s: pd.Series) -> np.ndarray:
    values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.sort(values[np.isfinite(values)])


def ks_wasserstein(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """(KS statistic, W1) of two sorted samples: ``ks_2samp`` and ``wasserstein_distance``'s values.

    KS: the ECDFs differ most at a data point, and each sample's ECDF at the other's points is one
    ``searchsorted`` of sorted queries. W1: the integral of |F^-1(t) - G^-1(t)| over t in (0, 1],
    whose breakpoints are i/n and j/m -- one sort of those, and index arithmetic, no search.
    """
    n, m = xs.size, ys.size
    x_last = np.append(xs[1:] != xs[:-1], True)  # the last of each run of ties
    y_last = np.append(ys[1:] != ys[:-1], True)
    fx = np.arange(1, n + 1) / n
    fy = np.arange(1, m + 1) / m
    d_x = np.abs(fx - np.searchsorted(ys, xs, side="right") / m)[x_last].max()
    d_y = np.abs(fy - np.searchsorted(xs, ys, side="right") / n)[y_last].max()
    if n == m:  # the breakpoints coincide: W1 is the mean gap between order statistics
        return float(max(d_x, d_y)), float(np.mean(np.abs(xs - ys)))
    t = np.unique(np.concatenate((fx, fy)))
    ix = np.minimum(np.ceil(t * n - 1e-9).astype(np.int64) - 1, n - 1)
    iy = np.minimum(np.ceil(t * m - 1e-9).astype(np.int64) - 1, m - 1)
    w = float(np.dot(np.diff(t, prepend=0.0), np.abs(xs[ix] - ys[iy])))
    return float(max(d_x, d_y)), w


def _categorical(r: pd.Series, c: pd.Series) -> dict[str, Any]:
    both = pd.concat(
        [r.value_counts(dropna=True), c.value_counts(dropna=True)], axis=1, sort=False
    ).fillna(0)
    stats = _binned(both.iloc[:, 0].to_numpy(np.int64), both.iloc[:, 1].to_numpy(np.int64))
    return {"stats": stats, "p": stats.pop("chi2_p"), "n": int(c.notna().sum())}


def _binned(rc: np.ndarray, cc: np.ndarray) -> dict[str, float]:
    rp = np.maximum(rc / rc.sum(), EPS)
    cp = np.maximum(cc / cc.sum(), EPS)
    used = (rc + cc) > 0
    chi = sps.chi2_contingency(np.stack([rc[used], cc[used]]), correction=False)
    return {
        "psi": float(np.sum((cp - rp) * np.log(cp / rp))),
        "js": float(jensenshannon(rc, cc, base=2)),
        "chi2_p": float(chi.pvalue),
    }


def _decide(found: dict[str, Any], alpha: float) -> dict[str, Any]:
    stats, p = found["stats"], found["p"]
    effect, name = max((stats[k] / f, k) for k, f in FLOORS.items() if k in stats)
    drifted = p < alpha and (found["n"] < 1000 or effect >= 1)
    return {"drifted": bool(drifted), "method": name, "value": stats[name], "p": p}


def verdict(tool: str, result: Any, inputs: Any, profile: Path | None) -> dict[str, Any]:
    return {"drifted": sorted(k for k, v in result.items() if v["drifted"]), "features": result}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("pandas", "numpy", "scipy", "pyarrow")}
