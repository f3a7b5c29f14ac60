"""Drift between a reference profile and a window of traffic: statistics, data quality, verdicts.

:func:`compute_drift` compares each profiled feature of a current frame with its
:class:`~loopwright.monitoring.profiles.FeatureProfile`. It never needs the raw reference rows.

What is computed (``FeatureDrift.stats``)
    numeric      ``psi``, ``js`` (Jensen-Shannon distance, base 2, in [0, 1]), ``chi2``/``chi2_p``
                 (two-sample chi-square on the reference bins: the reference's exact bin counts
                 against the window's), ``ks``/``ks_p`` (two-sample Kolmogorov-Smirnov between the
                 reference sample and the *full* current column), ``wasserstein`` and
                 ``wasserstein_norm`` (W1 between the same two, divided by the reference std),
                 ``mean_p`` (Welch's t-test from the reference's exact mean/std/count and the
                 window's), ``mean_ref``/``mean_cur``/``std_ref``/``std_cur``, ``missing_p``.
    categorical  ``psi``, ``js``, ``chi2``/``chi2_p`` over the kept reference categories plus one
                 "other" cell (values outside them, including new ones), ``missing_p``.
    quality      missing rates and their change, ``out_of_range_share`` (non-missing values
                 outside the reference [min, max]), ``type_errors`` (values that do not convert to
                 the reference kind), ``new_categories``, ``vanished_categories``.

The verdict (default, ``method: auto``)
    At large n every p-value is tiny, so a test alone flags everything; at small n distances are
    noise, so a fixed distance threshold flags noise or misses subtle drifts. The default is:

    * the test: numeric features take the smallest of the KS, binned chi-square and Welch p-values,
      multiplied by the number of tests (Bonferroni); categorical features the chi-square p-value.
      It is significant when below ``alpha`` (0.01) divided by the number of features compared
      (``correction: bonferroni``), so a report of 50 stable features has a ~1% chance of any
      false alarm.
    * below ``small_n`` (1,000) current rows, the significant test alone decides;
    * from ``small_n`` rows up, the test must be significant AND one effect size must reach its
      floor: PSI >= 0.1, normalised Wasserstein >= 0.05 (a mean shift of 5% of a std) or
      JS >= 0.05;
    * below ``min_rows`` (30) rows nothing is judged;
    * independently, a missing-rate change of at least ``missing_rate_change`` (0.05) that is
      significant (2x2 chi-square) flags the feature (``method: missing_rate``).

    ``features: {name: {method, threshold}}`` replaces the rule for one feature by a single
    statistic (``psi``, ``js``, ``wasserstein``: drifted when >= threshold; ``ks``, ``chi2``,
    ``mean``: drifted when p < threshold); ``alpha`` and ``min_effect`` can also be set per feature,
    and ``skip: true`` leaves a feature out.

Exactness: every statistic is computed on exactly the counts or samples it names and equals
scipy's on them (``ks_2samp(sample, current, method="asymp")``, ``wasserstein_distance``,
``chi2_contingency(correction=False)``, ``ttest_ind_from_stats(equal_var=False)``,
``jensenshannon(base=2)``); the tests check this.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from loopwright.errors import InvalidInput
from loopwright.monitoring.profiles import (
    FeatureProfile,
    ReferenceProfile,
    category_counts,
    finite_sorted,
    float_column,
)
from loopwright.yamldoc import YamlDocument

__all__ = [
    "METHODS",
    "DriftOptions",
    "DriftReport",
    "EffectFloors",
    "FeatureDrift",
    "FeatureOverride",
    "Method",
    "compute_drift",
    "ks_wasserstein",
    "psi",
]

PSI_EPS = 1e-4  # proportions are clipped here in PSI only, so an empty bin costs a finite amount
OTHER = "(other)"
MAX_LISTED = 20  # new / vanished categories listed per feature


# -- the statistics a verdict can use -------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A statistic a per-feature override can decide by."""

    name: str
    stat: str  # key in FeatureDrift.stats
    kinds: frozenset[str]
    direction: Literal["p_value", "distance"]  # p < threshold, or value >= threshold, is drift
    default_threshold: float
    label: str


_BOTH = frozenset({"numeric", "categorical"})
_NUM = frozenset({"numeric"})
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("psi", "psi", _BOTH, "distance", 0.2, "PSI"),
        Method("js", "js", _BOTH, "distance", 0.1, "Jensen-Shannon distance"),
        Method("wasserstein", "wasserstein_norm", _NUM, "distance", 0.1, "normalised Wasserstein"),
        Method("ks", "ks_p", _NUM, "p_value", 0.01, "KS p-value"),
        Method("chi2", "chi2_p", _BOTH, "p_value", 0.01, "chi-square p-value"),
        Method("mean", "mean_p", _NUM, "p_value", 0.01, "Welch t-test p-value"),
    )
}
_TEST_LABEL = {"ks": "KS", "chi2": "chi-square", "mean": "Welch"}
_EFFECTS = (("psi", "psi", "PSI"), ("wasserstein", "wasserstein_norm", "Wasserstein/std"),
            ("js", "js", "JS"))  # fmt: skip


# -- options ---------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EffectFloors(_Section):
    """The smallest effect that counts as drift once the test is significant (n >= small_n)."""

    psi: float = Field(default=0.1, ge=0)
    wasserstein: float = Field(default=0.05, ge=0)  # W1 / reference std
    js: float = Field(default=0.05, ge=0)


class FeatureOverride(_Section):
    """How one feature is judged instead of the default rule."""

    method: Literal["auto", "psi", "js", "wasserstein", "ks", "chi2", "mean"] = "auto"
    threshold: float | None = Field(default=None, ge=0)
    alpha: float | None = Field(default=None, gt=0, lt=1)
    min_effect: EffectFloors | None = None
    skip: bool = False


class DriftOptions(YamlDocument, _Section):
    """Defaults and per-feature overrides for :func:`compute_drift` (YAML-able)::

    alpha: 0.01
    correction: bonferroni
    min_effect: {psi: 0.1, wasserstein: 0.05, js: 0.05}
    features:
      income: {method: psi, threshold: 0.2}
      customer_id: {skip: true}
    """

    document_name: ClassVar[str] = "drift options"
    document_field: ClassVar[str] = "drift"

    alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["bonferroni", "none"] = "bonferroni"
    small_n: int = Field(default=1000, ge=0)
    min_rows: int = Field(default=30, ge=1)
    min_effect: EffectFloors = Field(default_factory=EffectFloors)
    missing_rate_change: float = Field(default=0.05, gt=0, le=1)
    features: dict[str, FeatureOverride] = Field(default_factory=dict)

    def restricted_to(self, names: Sequence[str]) -> DriftOptions:
        """These options with only the overrides of ``names`` (e.g. for a prediction profile)."""
        keep = {k: v for k, v in self.features.items() if k in set(names)}
        return self.model_copy(update={"features": keep})


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature, the statistic that decided it and everything measured."""

    name: str
    kind: str
    drifted: bool
    method: str
    value: float
    threshold: float
    p_value: float | None
    stats: dict[str, float]
    quality: dict[str, Any]
    reason: str
    severity: float
    n_current: int = 0
    histogram: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "drifted": self.drifted,
            "method": self.method,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "p_value": _finite(self.p_value),
            "stats": {k: _finite(v) for k, v in self.stats.items()},
            "quality": dict(self.quality),
            "reason": self.reason,
            "severity": _finite(self.severity),
            "n_current": self.n_current,
            "histogram": dict(self.histogram),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureDrift:
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            drifted=bool(d["drifted"]),
            method=str(d["method"]),
            value=_float(d.get("value")),
            threshold=_float(d.get("threshold")),
            p_value=None if d.get("p_value") is None else float(d["p_value"]),
            stats={k: _float(v) for k, v in dict(d.get("stats") or {}).items()},
            quality=dict(d.get("quality") or {}),
            reason=str(d.get("reason", "")),
            severity=_float(d.get("severity")),
            n_current=int(d.get("n_current", 0)),
            histogram=dict(d.get("histogram") or {}),
        )


@dataclass(frozen=True)
class DriftReport:
    """Per-feature verdicts, drifted first and then by severity."""

    features: list[FeatureDrift]
    n_reference: int
    n_current: int
    drift_share: float
    drifted: list[str]
    alpha: float  # the per-feature significance level after the correction

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [f.to_dict() for f in self.features],
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "drift_share": self.drift_share,
            "drifted": list(self.drifted),
            "alpha": self.alpha,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReport:
        return cls(
            features=[FeatureDrift.from_dict(f) for f in d["features"]],
            n_reference=int(d["n_reference"]),
            n_current=int(d["n_current"]),
            drift_share=float(d["drift_share"]),
            drifted=[str(x) for x in d["drifted"]],
            alpha=float(d["alpha"]),
        )


# -- entry point ----------------------------------------------------------------------------------


def compute_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    options: DriftOptions | None = None,
    *,
    columns: list[str] | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Compare ``current`` with ``profile`` feature by feature (see the module docstring).

    Columns of ``current`` that are not profiled are ignored; a profiled feature (or one named in
    ``columns``) that ``current`` lacks, an override of a feature the profile does not know, an
    override method that does not apply to the feature's kind, or an empty frame raise
    :class:`InvalidInput` naming the field. Work is spread over ``workers`` threads (default: the
    CPU count, up to 8, for big frames) -- the sorts and searches release the GIL.
    """
    opts = options if options is not None else DriftOptions()
    names = _selected(profile, current, opts, columns)
    k = len(names)
    alpha = opts.alpha / k if opts.correction == "bonferroni" else opts.alpha
    series = [(profile.features[n], current[n], opts.features.get(n)) for n in names]

    def one(item: tuple[FeatureProfile, pd.Series, FeatureOverride | None]) -> FeatureDrift:
        fp, s, override = item
        return _judge(fp, s, override, opts, alpha)

    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(current) * k >= 200_000 else 1
    if workers > 1 and k > 1:
        with ThreadPoolExecutor(max_workers=min(workers, k)) as pool:
            results = list(pool.map(one, series))
    else:
        results = [one(item) for item in series]
    results.sort(key=lambda f: (not f.drifted, -f.severity, f.name))
    drifted = [f.name for f in results if f.drifted]
    return DriftReport(
        features=results,
        n_reference=profile.rows,
        n_current=len(current),
        drift_share=len(drifted) / k,
        drifted=drifted,
        alpha=alpha,
    )


def _selected(
    profile: ReferenceProfile, current: Any, opts: DriftOptions, columns: list[str] | None
) -> list[str]:
    if not isinstance(current, pd.DataFrame):
        raise InvalidInput("the current data must be a pandas DataFrame", field="current")
    if len(current) == 0:
        raise InvalidInput("the current window has no rows", field="current")
    for name, override in opts.features.items():
        fp = profile.features.get(name)
        if fp is None:
            known = ", ".join(profile.features)
            raise InvalidInput(
                f"drift options name feature {name!r}, which the reference profile does not "
                f"have (it has: {known})",
                field=f"features.{name}",
            )
        method = METHODS.get(override.method)
        if method is not None and fp.kind not in method.kinds:
            valid = ["auto", *(m.name for m in METHODS.values() if fp.kind in m.kinds)]
            raise InvalidInput(
                f"method {override.method!r} does not apply to {fp.kind} feature {name!r}; "
                f"use one of {', '.join(valid)}",
                field=f"features.{name}.method",
            )
    if columns is not None:
        unknown = [c for c in columns if c not in profile.features]
        if unknown:
            raise InvalidInput(
                f"not in the reference profile: {', '.join(map(str, unknown))}", field="columns"
            )
    names = [
        n
        for n in (columns if columns is not None else list(profile.features))
        if not (n in opts.features and opts.features[n].skip)
    ]
    present = set(current.columns)
    for n in names:
        if n not in present:
            raise InvalidInput(
                f"feature {n!r} of the reference profile is missing from the current data", field=n
            )
    if not names:
        raise InvalidInput("no feature left to compare", field="columns")
    return names


# -- measuring one feature ------------------------------------------------------------------------


@dataclass
class _Measured:
    n: int  # non-missing current values
    stats: dict[str, float]
    quality: dict[str, Any]
    histogram: dict[str, Any]
    tests: dict[str, float]  # test name -> p-value


def _numeric(fp: FeatureProfile, s: pd.Series) -> _Measured:
    values, type_errors = float_column(s)
    rows = len(values)
    xs = finite_sorted(values)
    n = int(xs.size)
    quality: dict[str, Any] = _missing_quality(fp, rows, n)
    quality["type_errors"] = type_errors
    quality["type_error_share"] = type_errors / rows
    stats: dict[str, float] = {}
    tests: dict[str, float] = {}
    _missing_test(fp, rows, n, stats)
    ref_counts = fp.counts_array
    below = np.searchsorted(xs, fp.edges_array, side="left")
    cur_counts = np.diff(np.concatenate(([0], below, [n])))
    histogram = {
        "edges": list(fp.edges),
        "reference": ref_counts.tolist(),
        "current": cur_counts.tolist(),
    }
    if fp.min is not None and fp.max is not None and n:
        below_min = int(np.searchsorted(xs, fp.min, "left"))
        quality["out_of_range_share"] = (
            below_min + n - int(np.searchsorted(xs, fp.max, "right"))
        ) / n
    else:
        quality["out_of_range_share"] = 0.0
    if n == 0 or fp.count == 0:
        return _Measured(n, stats, quality, histogram, tests)
    _binned(ref_counts, cur_counts, stats, tests)
    mean_cur = float(np.mean(xs))
    dev = xs - mean_cur
    std_cur = math.sqrt(float(np.dot(dev, dev)) / (n - 1)) if n > 1 else 0.0
    del dev
    stats |= {"mean_ref": float(fp.mean), "mean_cur": mean_cur}  # type: ignore[arg-type]
    stats |= {"std_ref": float(fp.std), "std_cur": std_cur}  # type: ignore[arg-type]
    sample = fp.sample_array
    d, w = ks_wasserstein(sample, xs)
    stats["ks"] = d
    stats["ks_p"] = ks_pvalue(d, sample.size, n)
    tests["ks"] = stats["ks_p"]
    stats["wasserstein"] = w
    stats["wasserstein_norm"] = w / fp.scale
    if n > 1 and fp.count > 1 and (std_cur > 0 or (fp.std or 0) > 0):
        t = sps.ttest_ind_from_stats(
            fp.mean, fp.std, fp.count, mean_cur, std_cur, n, equal_var=False
        )
        stats["mean_p"] = float(t.pvalue)
        tests["mean"] = stats["mean_p"]
    return _Measured(n, stats, quality, histogram, tests)


def _categorical(fp: FeatureProfile, s: pd.Series) -> _Measured:
    counts, kinds, missing = category_counts(s)
    rows = len(s)
    n = rows - missing
    quality: dict[str, Any] = _missing_quality(fp, rows, n)
    stats: dict[str, float] = {}
    tests: dict[str, float] = {}
    _missing_test(fp, rows, n, stats)
    kept = dict(fp.categories)
    labels = list(kept)
    ref = [c for _, c in fp.categories]
    cur = [counts.get(k, 0) for k in labels]
    cur_other = n - sum(cur)
    if fp.other_count or cur_other:
        labels.append(OTHER)
        ref.append(fp.other_count)
        cur.append(cur_other)
    ref_counts, cur_counts = np.asarray(ref, np.int64), np.asarray(cur, np.int64)
    # with an "other" bucket in the reference, a value outside the kept ones may be a rare old one
    new = [] if fp.other_count else [k for k in counts if k not in kept]
    new.sort(key=lambda k: (-counts[k], k))
    quality["new_categories"] = new[:MAX_LISTED]
    quality["new_category_share"] = sum(counts[k] for k in new) / n if n else 0.0
    quality["vanished_categories"] = [k for k in kept if counts.get(k, 0) == 0][:MAX_LISTED]
    wrong = sum(c for kind, c in kinds.items() if kind != fp.value_type)
    type_errors = wrong if fp.value_type in ("str", "number", "bool") else 0
    quality["type_errors"] = type_errors
    quality["type_error_share"] = type_errors / rows
    histogram = {"categories": labels, "reference": ref, "current": cur}
    if n and fp.count:
        _binned(ref_counts, cur_counts, stats, tests)
    return _Measured(n, stats, quality, histogram, tests)


def _missing_quality(fp: FeatureProfile, rows: int, n: int) -> dict[str, Any]:
    cur = (rows - n) / rows
    return {
        "missing_rate_ref": fp.missing_rate,
        "missing_rate_cur": cur,
        "missing_rate_change": cur - fp.missing_rate,
    }


def _missing_test(fp: FeatureProfile, rows: int, n: int, stats: dict[str, float]) -> None:
    table = np.array([[fp.rows - fp.count, fp.count], [rows - n, n]], dtype=np.int64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] == 2:
        stats["missing_p"] = float(sps.chi2_contingency(table, correction=False).pvalue)


def _binned(
    ref: np.ndarray, cur: np.ndarray, stats: dict[str, float], tests: dict[str, float]
) -> None:
    stats["psi"] = psi(ref, cur)
    stats["js"] = float(jensenshannon(ref, cur, base=2))
    used = (ref + cur) > 0
    if int(used.sum()) >= 2:
        res = sps.chi2_contingency(np.stack([ref[used], cur[used]]), correction=False)
        stats["chi2"] = float(res.statistic)
        stats["chi2_p"] = float(res.pvalue)
    else:
        stats["chi2"], stats["chi2_p"] = 0.0, 1.0
    tests["chi2"] = stats["chi2_p"]


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index of two count vectors over the same bins.

    ``sum((c - r) * ln(c / r))`` over proportions clipped below at ``eps``.
    """
    r = np.maximum(reference / max(int(reference.sum()), 1), eps)
    c = np.maximum(current / max(int(current.sum()), 1), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_wasserstein(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(KS statistic, Wasserstein-1 distance) between two *sorted*, finite samples.

    One merge of the two ECDFs gives both, in O(m + n) after the sorts -- with ``u`` the bounded
    reference sample and ``v`` the whole current column. Equal to ``ks_2samp(u, v).statistic``
    and ``wasserstein_distance(u, v)``.
    """
    m, n = u.size, v.size
    pos = np.searchsorted(v, u, side="right")
    steps = np.diff(np.insert(v, pos, u))  # widths between consecutive points of the union
    # at union position k (< m + n - 1) F_u = cu / m and F_v = (k + 1 - cu) / n, where cu, the
    # number of u among the first k + 1 points, is a step function of k: one np.repeat
    lengths = np.diff(np.concatenate(([0], pos + np.arange(m), [m + n - 1])))
    gap = np.repeat(np.arange(m + 1) * (1 / m + 1 / n), lengths)
    k = np.arange(1.0, float(m + n))
    k *= 1 / n
    gap -= k
    del k
    np.abs(gap, out=gap)
    w = float(np.dot(gap, steps))
    if not steps.all():
        gap[steps == 0] = 0.0  # inside a run of ties the ECDFs are not complete yet
    d = float(gap.max()) if gap.size else 0.0
    return d, w


def ks_pvalue(d: float, m: int, n: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as ``ks_2samp(..., method="asymp")``."""
    big, small = max(m, n), min(m, n)
    en = big * small / (big + small)
    return float(sps.kstwo.sf(d, np.round(en)))


# -- the verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    drifted: bool
    method: str
    value: float
    threshold: float
    p_value: float | None
    reason: str


def _judge(
    fp: FeatureProfile,
    s: pd.Series,
    override: FeatureOverride | None,
    opts: DriftOptions,
    alpha: float,
) -> FeatureDrift:
    m = _numeric(fp, s) if fp.kind == "numeric" else _categorical(fp, s)
    ov = override or FeatureOverride()
    alpha = ov.alpha if ov.alpha is not None else alpha
    floors = ov.min_effect or opts.min_effect
    effects = _effects(m, floors)
    p_test, test = _combined(m.tests)
    if ov.method == "auto":
        verdict = _auto(m, effects, alpha, opts, p_test, test)
    else:
        verdict = _single(m, METHODS[ov.method], ov.threshold, p_test)
    if not verdict.drifted:
        verdict = _missing_verdict(m, alpha, opts) or verdict
    if m.n < opts.min_rows and verdict.method != "missing_rate":
        reason = f"only {m.n} non-missing values (< {opts.min_rows}): not judged"
        verdict = _Verdict(False, "rows", float(m.n), float(opts.min_rows), None, reason)
    return FeatureDrift(
        name=fp.name,
        kind=fp.kind,
        drifted=verdict.drifted,
        method=verdict.method,
        value=float(verdict.value),
        threshold=float(verdict.threshold),
        p_value=verdict.p_value,
        stats=m.stats,
        quality=m.quality,
        reason=verdict.reason,
        severity=min(max((e[0] for e in effects), default=0.0), 1e6),
        n_current=m.n,
        histogram=m.histogram,
    )


def _effects(m: _Measured, floors: EffectFloors) -> list[tuple[float, str, float, float, str]]:
    """(value / floor, method name, value, floor, label) of each defined effect size."""
    out = []
    for name, key, label in _EFFECTS:
        if key in m.stats:
            value, floor = m.stats[key], getattr(floors, name)
            out.append((value / floor if floor > 0 else math.inf, name, value, floor, label))
    return out


def _combined(tests: dict[str, float]) -> tuple[float | None, str]:
    """The smallest p-value times the number of tests (Bonferroni), and its test."""
    if not tests:
        return None, ""
    name = min(tests, key=lambda t: (tests[t], t))
    return min(1.0, tests[name] * len(tests)), name


def _auto(
    m: _Measured,
    effects: list[tuple[float, str, float, float, str]],
    alpha: float,
    opts: DriftOptions,
    p: float | None,
    test: str,
) -> _Verdict:
    if p is None:
        return _Verdict(False, "none", 0.0, alpha, None, "no values to compare")
    ptxt = f"{_TEST_LABEL[test]} p={_g(p)}"
    many = f" (min of {len(m.tests)} tests, x{len(m.tests)})" if len(m.tests) > 1 else ""
    if p >= alpha:
        return _Verdict(False, test, p, alpha, p, f"not significant: {ptxt} >= {_g(alpha)}{many}")
    if m.n < opts.small_n:
        why = f"{ptxt} < {_g(alpha)}{many}; n={m.n} < {opts.small_n}: the test decides"
        return _Verdict(True, test, p, alpha, p, why)
    ratio, name, value, floor, lbl = max(effects)
    if ratio >= 1:
        why = f"{lbl} {_g(value)} >= {_g(floor)} and {ptxt} < {_g(alpha)}{many}"
        return _Verdict(True, name, value, floor, p, why)
    small = ", ".join(f"{e[4]} {_g(e[2])} < {_g(e[3])}" for e in effects)
    why = f"too small to matter: {small} (though {ptxt} < {_g(alpha)}{many})"
    return _Verdict(False, name, value, floor, p, why)


def _single(m: _Measured, method: Method, threshold: float | None, p: float | None) -> _Verdict:
    thr = method.default_threshold if threshold is None else threshold
    value = m.stats.get(method.stat)
    if value is None:
        return _Verdict(False, method.name, 0.0, thr, p, f"{method.label} is not defined here")
    if method.direction == "p_value":
        drifted, op, p = value < thr, ("<" if value < thr else ">="), value
    else:
        drifted, op = value >= thr, (">=" if value >= thr else "<")
    why = f"{method.label} {_g(value)} {op} {_g(thr)} (per-feature override)"
    return _Verdict(bool(drifted), method.name, value, thr, p, why)


def _missing_verdict(m: _Measured, alpha: float, opts: DriftOptions) -> _Verdict | None:
    change = m.quality["missing_rate_change"]
    p = m.stats.get("missing_p")
    if p is None or abs(change) < opts.missing_rate_change or p >= alpha:
        return None
    ref, cur = m.quality["missing_rate_ref"], m.quality["missing_rate_cur"]
    why = f"missing rate {ref:.1%} -> {cur:.1%} (p={_g(p)} < {_g(alpha)})"
    return _Verdict(True, "missing_rate", abs(change), opts.missing_rate_change, p, why)


# -- small helpers --------------------------------------------------------------------------------


def _g(x: float) -> str:
    return f"{x:.3g}"


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)
