"""Per-group rates and disparities, cross-checked against fairlearn on a frame with planted bias."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from loopwright.errors import InvalidInput
from loopwright.governance.fairness import (
    demographic_parity_difference,
    equal_opportunity_difference,
    excluded_groups,
    group_metrics,
    group_sizes,
    selection_rates,
    spread,
    true_positive_rates,
)

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")


@pytest.fixture(scope="module")
def biased() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions favouring group "a", probabilities and a 3-valued attribute."""
    rng = np.random.default_rng(7)
    groups = rng.choice(np.array(["a", "b", "c"]), size=2000, p=[0.5, 0.45, 0.05])
    y = rng.integers(0, 2, size=2000)
    boost = np.where(groups == "a", 0.35, 0.0)
    score = np.clip(0.25 + 0.4 * y + boost + rng.normal(scale=0.15, size=2000), 0.0, 1.0)
    pred = (score > 0.5).astype(int)
    return y, pred, np.column_stack([1 - score, score]), groups


def test_demographic_parity_matches_fairlearn(biased) -> None:  # type: ignore[no-untyped-def]
    y, pred, _, groups = biased
    expected = fairlearn_metrics.demographic_parity_difference(y, pred, sensitive_features=groups)
    assert demographic_parity_difference(pred, groups) == pytest.approx(expected, abs=1e-12)
    assert expected > 0.2  # the planted bias shows


def test_equal_opportunity_matches_fairlearn(biased) -> None:  # type: ignore[no-untyped-def]
    y, pred, _, groups = biased
    expected = fairlearn_metrics.equal_opportunity_difference(y, pred, sensitive_features=groups)
    assert equal_opportunity_difference(y, pred, groups) == pytest.approx(expected, abs=1e-12)


def test_rates_per_group_are_reported_with_sizes(biased) -> None:  # type: ignore[no-untyped-def]
    y, pred, _, groups = biased
    sizes = group_sizes(groups)
    assert sizes == {g: int(np.sum(groups == g)) for g in ("a", "b", "c")}
    rates = selection_rates(pred, groups)
    tpr = true_positive_rates(y, pred, groups)
    for g in sizes:
        rows = groups == g
        assert rates[g] == pytest.approx(pred[rows].mean(), abs=1e-12)
        assert tpr[g] == pytest.approx(skm.recall_score(y[rows], pred[rows]), abs=1e-12)


def test_small_groups_are_reported_but_not_counted(biased) -> None:  # type: ignore[no-untyped-def]
    y, pred, _, groups = biased
    sizes = group_sizes(groups)
    assert excluded_groups(sizes, 200) == ["c"]
    big = groups != "c"
    expected = fairlearn_metrics.demographic_parity_difference(
        y[big], pred[big], sensitive_features=groups[big]
    )
    got = demographic_parity_difference(pred, groups, min_group_size=200)
    assert got == pytest.approx(expected, abs=1e-12)
    assert "c" in selection_rates(pred, groups)  # still reported


def test_spread_edge_cases() -> None:
    assert spread({"a": 0.4}, {"a": 50}) == 0.0
    assert np.isnan(spread({"a": 0.4, "b": 0.9}, {"a": 5, "b": 5}, min_group_size=10))
    assert spread({"a": 0.4, "b": float("nan"), "c": 0.5}, {"a": 9, "b": 9, "c": 9}) == (
        pytest.approx(0.1)
    )


def test_group_metrics_use_the_metric_registry(biased) -> None:  # type: ignore[no-untyped-def]
    y, pred, proba, groups = biased
    auc = group_metrics("roc_auc", y, pred, proba, groups, classes=[0, 1])
    f1 = group_metrics("f1", y, pred, None, groups)
    for g in ("a", "b", "c"):
        rows = groups == g
        assert auc[g] == pytest.approx(skm.roc_auc_score(y[rows], proba[rows, 1]), abs=1e-12)
        assert f1[g] == pytest.approx(skm.f1_score(y[rows], pred[rows]), abs=1e-12)
    with pytest.raises(InvalidInput, match="expected one of"):
        group_metrics("auroc", y, pred, proba, groups)


def test_missing_attribute_values_form_their_own_group() -> None:
    groups = np.array(["a", None, "a", None], dtype=object)
    sizes = group_sizes(groups)
    assert sorted(sizes.values()) == [2, 2] and None in sizes
    assert demographic_parity_difference(np.array([1, 0, 1, 1]), groups) == 0.5


def test_multiclass_needs_the_positive_class_named() -> None:
    with pytest.raises(InvalidInput) as info:
        selection_rates([0, 1, 2], ["a", "b", "a"])
    assert info.value.field == "positive"
    assert selection_rates([0, 1, 2], ["a", "b", "a"], positive=2) == {"a": 0.5, "b": 0.0}
