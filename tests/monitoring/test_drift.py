"""Drift statistics equal scipy's on the same samples; verdicts find the planted drifts only."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from loopwright.errors import InvalidInput
from loopwright.monitoring.drift import (
    DriftOptions,
    DriftReport,
    compute_drift,
    ks_wasserstein,
    psi,
)
from loopwright.monitoring.profiles import ReferenceProfile, profile_frame

# -- a population with planted drifts and known truth ----------------------------------------------

PLANTED = {
    "shift_subtle": "mean +0.2 std",
    "shift_strong": "mean +1 std",
    "variance": "std x1.3",
    "shape": "normal -> bimodal, same mean and variance",
    "cat_new": "a new category takes 8%",
    "cat_freq": "category frequencies shift",
}
STABLE = ["s_normal", "s_lognormal", "s_int", "s_uniform", "s_missing", "s_cat", "s_bool"]


def population(n: int, seed: int, drifted: bool) -> pd.DataFrame:
    """``n`` rows of the reference population, or of the drifted one (``PLANTED`` moves)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    if drifted:
        side = np.where(rng.random(n) < 0.5, -0.9, 0.9)
        shape = side + np.sqrt(1 - 0.81) * rng.normal(size=n)
    else:
        shape = rng.normal(size=n)
    missing = rng.normal(50, 5, n)
    missing[rng.random(n) < 0.1] = np.nan
    new_p = [0.46, 0.276, 0.184, 0.08] if drifted else [0.5, 0.3, 0.2, 0.0]
    freq_p = [0.3, 0.3, 0.25, 0.15] if drifted else [0.4, 0.3, 0.2, 0.1]
    return pd.DataFrame(
        {
            "shift_subtle": rng.normal(10 + (0.4 if drifted else 0.0), 2, n),
            "shift_strong": z + (1.0 if drifted else 0.0),
            "variance": rng.normal(5, 1.3 if drifted else 1.0, n),
            "shape": shape,
            "cat_new": rng.choice(["a", "b", "c", "new"], n, p=new_p),
            "cat_freq": rng.choice(["x", "y", "z", "w"], n, p=freq_p),
            "s_normal": rng.normal(100, 15, n),
            "s_lognormal": rng.lognormal(10, 0.6, n),
            "s_int": rng.integers(0, 10, n),
            "s_uniform": rng.uniform(-1, 1, n),
            "s_missing": missing,
            "s_cat": rng.choice(list("pqrstu"), n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1]),
            "s_bool": rng.random(n) < 0.35,
        }
    )


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    return profile_frame(population(50_000, seed=1, drifted=False), now_ms=0)


# -- exactness against scipy -----------------------------------------------------------------------


def _bin_counts(x: np.ndarray, bounds: np.ndarray) -> list[int]:
    return [int(((x >= a) & (x < b)).sum()) for a, b in itertools.pairwise(bounds)]


def _valid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.sort(x[np.isfinite(x)])


@pytest.mark.parametrize("column", ["shift_strong", "s_int", "s_missing", "s_lognormal"])
def test_numeric_statistics_equal_scipy_on_the_same_samples(column: str) -> None:
    ref_df = population(20_000, seed=2, drifted=False)
    cur_df = population(3_000, seed=3, drifted=True)
    cur_df[column] = cur_df[column].astype(np.float64)
    cur_df.loc[:4, column] = [np.inf, -np.inf, np.nan, 1e12, -1e12]  # missing and out of range
    profile = profile_frame(ref_df, reservoir_size=2_000)
    f = compute_drift(profile, cur_df).feature(column)
    fp = profile.features[column]
    sample, ref, cur = np.asarray(fp.sample), _valid(ref_df[column]), _valid(cur_df[column])
    st = f.stats

    ks = sps.ks_2samp(sample, cur, method="asymp")
    assert st["ks"] == pytest.approx(ks.statistic, rel=1e-12, abs=1e-15)
    assert st["ks_p"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    w = sps.wasserstein_distance(sample, cur)
    assert st["wasserstein"] == pytest.approx(w, rel=1e-10)
    assert st["wasserstein_norm"] == pytest.approx(w / ref.std(ddof=1), rel=1e-10)
    t = sps.ttest_ind(ref, cur, equal_var=False)
    assert st["mean_p"] == pytest.approx(t.pvalue, rel=1e-6, abs=1e-300)
    assert st["mean_cur"] == pytest.approx(cur.mean(), rel=1e-12)
    assert st["std_cur"] == pytest.approx(cur.std(ddof=1), rel=1e-12)

    # the histogram: the reference's exact bin counts and the window's on the same bins
    bounds = np.concatenate(([-np.inf], fp.edges, [np.inf]))
    assert f.histogram["reference"] == _bin_counts(ref, bounds)
    assert f.histogram["current"] == _bin_counts(cur, bounds)
    r, c = np.asarray(f.histogram["reference"]), np.asarray(f.histogram["current"])
    assert st["js"] == pytest.approx(jensenshannon(r / r.sum(), c / c.sum(), base=2), rel=1e-12)
    rp, cp = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
    assert st["psi"] == pytest.approx(np.sum((cp - rp) * np.log(cp / rp)), rel=1e-12)
    used = (r + c) > 0
    chi = sps.chi2_contingency(np.stack([r[used], c[used]]), correction=False)
    assert st["chi2"] == pytest.approx(chi.statistic, rel=1e-12)
    assert st["chi2_p"] == pytest.approx(chi.pvalue, rel=1e-9, abs=1e-300)

    q = f.quality
    assert q["missing_rate_cur"] == pytest.approx(1 - cur.size / len(cur_df))
    assert q["out_of_range_share"] == pytest.approx(
        np.mean((cur < ref.min()) | (cur > ref.max())), abs=1e-12
    )
    assert q["out_of_range_share"] >= 2 / cur.size
    assert q["type_errors"] == 0


def test_ks_and_wasserstein_equal_scipy_with_ties_and_tiny_samples() -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        m, n = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        if trial % 2:  # heavy ties, shared values across both samples
            u, v = rng.integers(0, 5, m).astype(float), rng.integers(0, 6, n).astype(float)
        else:
            u, v = rng.normal(size=m), rng.normal(0.3, 1.5, n)
        d, w = ks_wasserstein(np.sort(u), np.sort(v))
        assert d == pytest.approx(sps.ks_2samp(u, v).statistic, rel=1e-12, abs=1e-15), trial
        assert w == pytest.approx(sps.wasserstein_distance(u, v), rel=1e-12, abs=1e-15), trial


def test_categorical_statistics_equal_scipy(reference: ReferenceProfile) -> None:
    cur_df = population(4_000, seed=5, drifted=True)
    cur_df.loc[:9, "cat_freq"] = None
    report = compute_drift(reference, cur_df)
    f = report.feature("cat_new")
    assert f.kind == "categorical"
    assert f.histogram["categories"] == ["a", "b", "c", "(other)"]
    counts = cur_df["cat_new"].value_counts()
    assert f.histogram["current"] == [int(counts.get(k, 0)) for k in "abc"] + [int(counts["new"])]
    r, c = np.asarray(f.histogram["reference"]), np.asarray(f.histogram["current"])
    assert r[-1] == 0
    assert f.stats["js"] == pytest.approx(jensenshannon(r, c, base=2), rel=1e-12)
    assert f.stats["psi"] == pytest.approx(psi(r, c), rel=1e-12)
    chi = sps.chi2_contingency(np.stack([r, c]), correction=False)
    assert f.stats["chi2_p"] == pytest.approx(chi.pvalue, rel=1e-9, abs=1e-300)
    assert f.quality["new_categories"] == ["new"]
    assert f.quality["new_category_share"] == pytest.approx(counts["new"] / len(cur_df))
    assert f.quality["vanished_categories"] == []
    g = report.feature("cat_freq")
    assert g.quality["missing_rate_cur"] == pytest.approx(10 / len(cur_df))
    assert sum(g.histogram["current"]) == len(cur_df) - 10


def test_psi_formula() -> None:
    r, c = np.array([50, 30, 20, 0]), np.array([40, 30, 20, 10])
    rp, cp = np.maximum(r / 100, 1e-4), np.maximum(c / 100, 1e-4)
    assert psi(r, c) == pytest.approx(float(np.sum((cp - rp) * np.log(cp / rp))), rel=1e-15)
    assert psi(r, r) == 0.0


# -- verdicts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_planted_drifts_are_found_and_stable_columns_are_not(
    reference: ReferenceProfile, n: int
) -> None:
    report = compute_drift(reference, population(n, seed=100 + n, drifted=True))
    verdicts = {f.name: f for f in report.features}
    missed = [name for name in PLANTED if not verdicts[name].drifted]
    false_alarms = [name for name in STABLE if verdicts[name].drifted]
    assert not missed, [verdicts[m].reason for m in missed]
    assert not false_alarms, [verdicts[f].reason for f in false_alarms]
    assert set(report.drifted) == set(PLANTED)
    assert report.drift_share == pytest.approx(len(PLANTED) / len(verdicts))
    assert [f.drifted for f in report.features] == sorted(
        (f.drifted for f in report.features), reverse=True
    )  # drifted first, then by severity
    for f in report.features:
        assert f.reason and f.threshold >= 0 and f.method
        if f.drifted and n >= 1_000:  # large n: a significant test AND an effect size decided
            assert f.p_value is not None and f.p_value < report.alpha
            assert f.method in ("psi", "wasserstein", "js") and f.value >= f.threshold


@pytest.mark.parametrize("n", [1_000, 100_000])
def test_no_false_alarm_when_nothing_moved(reference: ReferenceProfile, n: int) -> None:
    report = compute_drift(reference, population(n, seed=7 + n, drifted=False))
    assert report.drifted == [], [f.reason for f in report.features if f.drifted]


def test_at_large_n_a_significant_but_tiny_change_is_not_drift(
    reference: ReferenceProfile,
) -> None:
    cur = population(100_000, seed=11, drifted=False)
    cur["s_normal"] += 0.03 * 15  # a real but negligible shift: 3% of a std
    report = compute_drift(reference, cur)
    f = report.feature("s_normal")
    assert f.p_value is not None and f.p_value < report.alpha
    assert not f.drifted and "too small" in f.reason
    strict = DriftOptions(min_effect={"wasserstein": 0.02})
    assert compute_drift(reference, cur, strict).feature("s_normal").drifted


def test_small_windows_lean_on_the_test_and_tiny_ones_are_not_judged(
    reference: ReferenceProfile,
) -> None:
    f = compute_drift(reference, population(400, seed=3, drifted=True)).feature("shift_strong")
    assert f.drifted and f.method in ("ks", "chi2", "mean") and "the test decides" in f.reason
    g = compute_drift(reference, population(20, seed=3, drifted=True)).feature("shift_strong")
    assert not g.drifted and g.method == "rows" and g.value == 20


def test_prediction_drift_is_the_same_computation() -> None:
    rng = np.random.default_rng(0)
    baseline = pd.DataFrame({"prediction": rng.beta(2, 5, 5_000)})
    profile = profile_frame(baseline)
    shifted = pd.DataFrame({"prediction": rng.beta(3, 4, 2_000)})
    same = pd.DataFrame({"prediction": rng.beta(2, 5, 2_000)})
    assert compute_drift(profile, shifted).drifted == ["prediction"]
    assert compute_drift(profile, same).drifted == []
    labels = pd.DataFrame({"prediction": rng.choice(["yes", "no"], 5_000, p=[0.2, 0.8])})
    cat_profile = profile_frame(labels)
    moved = pd.DataFrame({"prediction": rng.choice(["yes", "no"], 3_000, p=[0.4, 0.6])})
    assert compute_drift(cat_profile, moved).drifted == ["prediction"]


def test_missing_rate_change_and_type_errors(reference: ReferenceProfile) -> None:
    cur = population(5_000, seed=9, drifted=False)
    cur.loc[:1_499, "s_normal"] = np.nan
    cur["s_uniform"] = cur["s_uniform"].astype(object)
    cur.loc[:99, "s_uniform"] = "oops"
    cur.loc[100:149, "s_uniform"] = "0.5"  # converts: not a type error
    cur["s_cat"] = cur["s_cat"].astype(object)
    cur.loc[:9, "s_cat"] = 3
    report = compute_drift(reference, cur)
    f = report.feature("s_normal")
    assert f.drifted and f.method == "missing_rate" and f.value == pytest.approx(0.3)
    u = report.feature("s_uniform")
    assert u.quality["type_errors"] == 100
    assert u.quality["missing_rate_cur"] == pytest.approx(100 / 5_000)
    assert report.feature("s_cat").quality["type_errors"] == 10
    assert "3" in report.feature("s_cat").quality["new_categories"]


def test_a_vanished_category_is_reported(reference: ReferenceProfile) -> None:
    cur = population(5_000, seed=4, drifted=False)
    cur["s_cat"] = cur["s_cat"].replace({"u": "p"})
    f = compute_drift(reference, cur).feature("s_cat")
    assert f.quality["vanished_categories"] == ["u"] and f.drifted


# -- options ---------------------------------------------------------------------------------------


def test_options_from_yaml_with_per_feature_overrides(reference: ReferenceProfile) -> None:
    opts = DriftOptions.from_yaml(
        """
alpha: 0.001
features:
  shift_subtle: {method: psi, threshold: 0.5}
  s_normal: {method: wasserstein, threshold: 0.0}
  cat_freq: {skip: true}
"""
    )
    assert DriftOptions.from_yaml(opts.to_yaml()) == opts
    report = compute_drift(reference, population(10_000, seed=5, drifted=True), opts)
    names = {f.name for f in report.features}
    assert "cat_freq" not in names
    sub = report.feature("shift_subtle")
    assert not sub.drifted and sub.method == "psi" and sub.threshold == 0.5
    assert "override" in sub.reason
    forced = report.feature("s_normal")
    assert forced.drifted and forced.method == "wasserstein"
    assert report.alpha == pytest.approx(0.001 / len(names))


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("alpha: 2", "alpha"),
        ("features: {x: {method: magic}}", "features.x.method"),
        ("features: {x: {threshhold: 1}}", "features.x.threshhold"),
        ("min_effect: {psi: 0.1, ks: 1}", "min_effect.ks"),
    ],
)
def test_bad_options_name_the_yaml_path(yaml_text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        DriftOptions.from_yaml(yaml_text)
    assert err.value.field == field


def test_bad_input_names_the_field(reference: ReferenceProfile) -> None:
    cur = population(500, seed=1, drifted=False)
    cases = [
        (lambda: compute_drift(reference, cur.iloc[:0]), "current"),
        (lambda: compute_drift(reference, cur.drop(columns=["s_int"])), "s_int"),
        (lambda: compute_drift(reference, cur, columns=["nope"]), "columns"),
        (
            lambda: compute_drift(reference, cur, DriftOptions(features={"nope": {}})),
            "features.nope",
        ),
        (
            lambda: compute_drift(
                reference, cur, DriftOptions(features={"s_cat": {"method": "ks"}})
            ),
            "features.s_cat.method",
        ),
        (lambda: compute_drift(reference, cur.to_numpy()), "current"),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.field == field


def test_columns_subset_and_restricted_options(reference: ReferenceProfile) -> None:
    cur = population(2_000, seed=1, drifted=True)
    report = compute_drift(reference, cur, columns=["shift_strong", "s_cat"])
    assert {f.name for f in report.features} == {"shift_strong", "s_cat"}
    opts = DriftOptions(features={"s_cat": {"method": "chi2"}, "other": {}})
    assert list(opts.restricted_to(["s_cat"]).features) == ["s_cat"]


def test_report_round_trips_and_is_json_safe(reference: ReferenceProfile) -> None:
    report = compute_drift(reference, population(3_000, seed=2, drifted=True))
    body = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    again = DriftReport.from_dict(body)
    assert again == report
    assert again.feature("cat_new").histogram["categories"][-1] == "(other)"


def test_threads_do_not_change_the_result(reference: ReferenceProfile) -> None:
    cur = population(20_000, seed=8, drifted=True)
    assert compute_drift(reference, cur, workers=1) == compute_drift(reference, cur, workers=4)
