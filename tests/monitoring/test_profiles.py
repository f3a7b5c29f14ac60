"""Reference profiles: what they keep, bounded and deterministic, with exact round trips."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from loopwright.errors import InvalidInput
from loopwright.monitoring.profiles import ReferenceProfile, profile_frame


def _frame(n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 0.5, n)
    income[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "income": income,
            "age": rng.integers(18, 80, n),
            "score": rng.normal(0, 1, n).astype(np.float32),
            "grade": rng.choice(["A", "B", "C", "D"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "flag": rng.random(n) < 0.3,
            "nullable": pd.array(np.where(rng.random(n) < 0.5, 1, 2), dtype="Int64"),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), unit="s"),
        }
    )


def test_numeric_profile_keeps_exact_bins_moments_and_a_bounded_sorted_sample() -> None:
    df = _frame()
    p = profile_frame(df, reservoir_size=1000, bins=20)
    f = p.features["income"]
    valid = df["income"].dropna().to_numpy()
    assert f.kind == "numeric" and f.rows == len(df) and f.count == valid.size
    assert f.missing_rate == pytest.approx(1 - valid.size / len(df))
    assert (f.min, f.max) == (valid.min(), valid.max())
    assert f.mean == pytest.approx(valid.mean(), rel=1e-12)
    assert f.std == pytest.approx(valid.std(ddof=1), rel=1e-12)
    assert f.quartiles == pytest.approx(tuple(np.quantile(valid, [0.25, 0.5, 0.75])))
    edges = np.asarray(f.edges)
    assert len(edges) == 19 and np.all(np.diff(edges) > 0) and edges[0] > f.min
    assert set(edges) <= set(valid)  # inverted-CDF quantiles are data values
    # counts are exact on the left-closed bins [e[k-1], e[k]) with open ends
    bounds = np.concatenate(([-np.inf], edges, [np.inf]))
    expected = [int(((valid >= lo) & (valid < hi)).sum()) for lo, hi in itertools.pairwise(bounds)]
    assert list(f.counts) == expected and sum(f.counts) == f.count
    assert max(f.counts) - min(f.counts) <= 2  # continuous data: equal-frequency bins
    sample = np.asarray(f.sample)
    assert sample.size == 1000 and np.all(np.diff(sample) >= 0) and set(sample) <= set(valid)


def test_discrete_and_other_numeric_dtypes() -> None:
    p = profile_frame(_frame())
    age = p.features["age"]
    assert age.kind == "numeric" and age.dtype == "int64"
    assert len(age.counts) == len(age.edges) + 1 and all(c > 0 for c in age.counts)
    assert p.features["score"].kind == "numeric"  # float32 is converted, not refused
    nullable = p.features["nullable"]
    assert nullable.kind == "numeric" and nullable.edges == (2.0,)
    assert "when" not in p.features  # datetimes are skipped when columns are not named


def test_categorical_profile_caps_categories_with_an_other_bucket() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"city": rng.choice([f"c{i:02d}" for i in range(30)], 5000)})
    p = profile_frame(df, max_categories=10)
    f = p.features["city"]
    assert f.kind == "categorical" and f.value_type == "str"
    assert len(f.categories) == 10
    counts = df["city"].value_counts()
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert list(f.categories) == [(k, int(v)) for k, v in top]
    assert f.other_count == 5000 - sum(v for _, v in top)


def test_bool_and_forced_categorical_columns() -> None:
    p = profile_frame(_frame(), categorical=["age"])
    flag = p.features["flag"]
    assert flag.kind == "categorical" and flag.value_type == "bool"
    assert {k for k, _ in flag.categories} == {"True", "False"}
    age = p.features["age"]
    assert age.kind == "categorical" and age.value_type == "number"
    assert all(k.isdigit() for k, _ in age.categories)


def test_infinities_count_as_missing() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, np.inf, -np.inf, np.nan, 3.0]})
    f = profile_frame(df).features["x"]
    assert f.count == 3 and f.missing_rate == pytest.approx(0.5) and (f.min, f.max) == (1.0, 3.0)


def test_sample_is_deterministic_by_seed() -> None:
    df = _frame()
    a = profile_frame(df, reservoir_size=500, seed=3, now_ms=1)
    b = profile_frame(df, reservoir_size=500, seed=3, now_ms=1)
    c = profile_frame(df, reservoir_size=500, seed=4, now_ms=1)
    assert a == b
    assert a.features["income"].sample != c.features["income"].sample


def test_round_trip_is_exact_through_dict_and_json() -> None:
    p = profile_frame(_frame(), reservoir_size=300)
    assert ReferenceProfile.from_dict(p.to_dict()) == p
    text = json.dumps(p.to_dict(), allow_nan=False)  # JSON-safe: no NaN, no numpy scalars
    assert ReferenceProfile.from_dict(json.loads(text)) == p
    assert ReferenceProfile.from_json(p.to_json()) == p
    assert list(ReferenceProfile.from_json(p.to_json()).features) == list(p.features)


def test_all_missing_numeric_column_round_trips() -> None:
    p = profile_frame(pd.DataFrame({"x": [np.nan] * 4, "y": [1.0, 2.0, 3.0, 4.0]}))
    assert p.features["x"].count == 0 and p.features["x"].min is None
    assert ReferenceProfile.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda df: profile_frame(df.iloc[:0]), "df"),
        (lambda df: profile_frame(df, columns=["income", "nope"]), "columns"),
        (lambda df: profile_frame(df, categorical=["nope"]), "categorical"),
        (lambda df: profile_frame(df, columns=["when"]), "when"),
        (lambda df: profile_frame(df, bins=1), "bins"),
        (lambda df: ReferenceProfile.from_dict({"rows": 1}), "profile"),
        (lambda df: ReferenceProfile.from_json(b"{not json"), "profile"),
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as err:
        call(_frame(100))
    assert err.value.field == field
