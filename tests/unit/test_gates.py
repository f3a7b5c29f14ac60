"""Gate policies and evaluation on real models: every check passes and fails when it should, with
the measured numbers scikit-learn and fairlearn compute for the same data."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from loopwright.errors import GateFailed, InvalidInput
from loopwright.governance.gates import (
    MB,
    CheckResult,
    EvaluationReport,
    GatePolicy,
    evaluate,
    gate_failed,
)

FEATURES = ["x1", "x2", "proxy"]

# -- data and models ------------------------------------------------------------------------------


def _frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Labels favour group "a"; ``proxy`` leaks the group, so a model that reads it is biased."""
    group = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.48, 0.48, 0.04])
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    proxy = (group == "a") * 1.5 + rng.normal(scale=0.3, size=n)
    logit = 1.5 * x1 + x2 + 1.2 * (group == "a") - 0.6 + rng.normal(scale=0.7, size=n)
    return pd.DataFrame(
        {"x1": x1, "x2": x2, "proxy": proxy, "group": group, "label": (logit > 0).astype(int)}
    )


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(42)
    return _frame(1500, rng), _frame(1000, rng)


@pytest.fixture(scope="module")
def good(frames) -> LogisticRegression:  # type: ignore[no-untyped-def]
    train, _ = frames
    return LogisticRegression().fit(train[FEATURES], train["label"])


@pytest.fixture(scope="module")
def stump(frames) -> DecisionTreeClassifier:  # type: ignore[no-untyped-def]
    """A deliberately worse model: one split on one feature."""
    train, _ = frames
    return DecisionTreeClassifier(max_depth=1, random_state=0).fit(train[["x2"]], train["label"])


class Wrapped:
    """A LoadedModel look-alike (no ``feature_names_in_``) that records the columns it was fed."""

    def __init__(self, model: Any, signature: Any = None, sleep_s: float = 0.0) -> None:
        self.model, self.signature, self.sleep_s = model, signature, sleep_s
        self.is_classifier = hasattr(model, "classes_")
        self.classes_ = getattr(model, "classes_", None)
        self.seen: list[list[str]] = []

    def _fit_columns(self, X: pd.DataFrame) -> pd.DataFrame:
        self.seen.append(list(X.columns))
        time.sleep(self.sleep_s)
        return X[list(self.model.feature_names_in_)]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict(self._fit_columns(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._fit_columns(X))


def _signature(columns: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": c, "type": "double"} for c in columns]}


def _policy(**extra: Any) -> GatePolicy:
    return GatePolicy.from_dict({"dataset": "holdout", "target": "label", **extra})


def _check(report: EvaluationReport, prefix: str) -> CheckResult:
    return next(c for c in report.checks if c.name.startswith(prefix))


# -- the policy -----------------------------------------------------------------------------------

POLICY_YAML = """
dataset: holdout
target: label
thresholds:
  auc: {min: 0.8}
  log_loss: {max: 0.6}
no_regression: {metric: roc_auc, tolerance: 0.01}
fairness:
  attribute: group
  demographic_parity_difference: {max: 0.1}
  min_group_size: 50
latency_p95_ms: 250
max_size_mb: 10
protected_aliases: [champion, production]
required_approvals: 2
"""


def test_policy_round_trips_through_yaml_and_dict(tmp_path: Path) -> None:
    policy = GatePolicy.from_yaml(POLICY_YAML)
    assert policy.thresholds["auc"].min == 0.8 and policy.fairness is not None
    assert policy.fairness.min_group_size == 50 and policy.latency_rows == 200
    assert GatePolicy.from_yaml(policy.to_yaml()) == policy
    assert GatePolicy.from_dict(policy.model_dump(mode="json")) == policy
    path = tmp_path / "gates.yaml"
    path.write_text(POLICY_YAML)
    assert GatePolicy.from_file(path) == policy
    defaults = _policy()
    assert defaults.protected_aliases == ["champion"] and defaults.required_approvals == 1
    assert defaults.schema_compatible and defaults.task is None


def test_digest_is_the_canonical_json_hash() -> None:
    policy = GatePolicy.from_yaml(POLICY_YAML)
    body = orjson.dumps(policy.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    assert policy.digest() == hashlib.sha256(body).hexdigest()
    assert _policy(thresholds={"auc": {"min": 0.81}}).digest() != policy.digest()


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("thresholds: {auc: {mni: 0.8}}", "thresholds.auc.mni", "expected one of min, max"),
        ("treshold: {}", "treshold", "unknown key; expected one of dataset, target"),
        (
            "fairness: {attribute: g, demographic_parity_diference: {max: 0.1}}",
            "fairness.demographic_parity_diference",
            "equal_opportunity_difference",
        ),
        ("thresholds: {aucc: {min: 0.8}}", "thresholds.aucc", "expected one of accuracy"),
        ("thresholds: {auc: {min: 0.9, max: 0.8}}", "thresholds.auc", "above max"),
        ("thresholds: {auc: {}}", "thresholds.auc", "min, max or both"),
        ("latency_p95_ms: fast", "latency_p95_ms", "number"),
        ("no_regression: {metric: auc, tolerance: -1}", "no_regression.tolerance", "0"),
        ("task: classification\nthresholds: {rmse: {max: 1}}", "thresholds.rmse", "regression"),
        ("thresholds: {auc: {min: 0.8}, rmse: {max: 1}}", "thresholds.rmse", "classification"),
        (
            "task: regression\nfairness: {attribute: g, equal_opportunity_difference: {max: 1}}",
            "fairness",
            "classifier",
        ),
    ],
)
def test_a_bad_policy_names_the_yaml_path(text: str, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        GatePolicy.from_yaml(f"dataset: holdout\ntarget: label\n{text}\n")
    assert info.value.field == field
    assert says in info.value.message


@pytest.mark.parametrize("text", ["dataset: [unclosed", "- a list", ""])
def test_policy_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        GatePolicy.from_yaml(text)
    assert info.value.field == "policy"


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        GatePolicy.from_file(tmp_path / "nope.yaml")
    assert info.value.field == "path"


# -- thresholds -----------------------------------------------------------------------------------


def test_thresholds_measure_what_sklearn_measures(frames, good) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    proba = good.predict_proba(test[FEATURES])[:, 1]
    auc = skm.roc_auc_score(test["label"], proba)
    acc = skm.accuracy_score(test["label"], good.predict(test[FEATURES]))
    policy = _policy(
        thresholds={"auc": {"min": round(auc - 0.05, 3)}, "accuracy": {"min": 0.99, "max": 1.0}}
    )
    report = evaluate(policy, good, test)
    passed, failed, capped, _schema = report.checks
    assert passed.name == f"threshold:auc>={round(auc - 0.05, 3):g}" and passed.passed
    assert passed.measured == pytest.approx(auc, abs=1e-12) and passed.bound == round(auc - 0.05, 3)
    assert not failed.passed and failed.measured == pytest.approx(acc, abs=1e-12)
    assert failed.bound == 0.99 and failed.detail == f"accuracy {acc:.4g} < min 0.99"
    assert capped.name == "threshold:accuracy<=1" and capped.passed
    assert not report.passed and report.failures() == [failed]
    assert report.task == "classification" and report.champion is None
    metrics = report.candidate["metrics"]
    assert metrics["roc_auc"] == metrics["auc"] == pytest.approx(auc, abs=1e-12)
    assert metrics["log_loss"] == pytest.approx(
        skm.log_loss(test["label"], good.predict_proba(test[FEATURES])), abs=1e-12
    )


def test_a_constant_model_fails_an_auc_floor_at_one_half(frames) -> None:  # type: ignore[no-untyped-def]
    train, test = frames
    dummy = DummyClassifier(strategy="prior").fit(train[FEATURES], train["label"])
    report = evaluate(_policy(thresholds={"roc_auc": {"min": 0.9}}), dummy, test)
    failed = gate_failed(report).details["failed_checks"]
    assert failed[0]["measured"] == pytest.approx(0.5) and failed[0]["bound"] == 0.9


def test_a_model_without_probabilities_fails_a_probability_gate(frames, good) -> None:  # type: ignore[no-untyped-def]
    class LabelsOnly:
        is_classifier = True
        feature_names_in_ = good.feature_names_in_

        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return good.predict(X)

    report = evaluate(_policy(thresholds={"roc_auc": {"min": 0.5}}), LabelsOnly(), frames[1])
    check = report.checks[0]
    assert not check.passed and check.measured is None and "could not be measured" in check.detail
    assert "roc_auc" not in report.candidate["metrics"] and "f1" in report.candidate["metrics"]


# -- no regression --------------------------------------------------------------------------------


def test_no_regression_against_a_worse_champion_passes(frames, good, stump) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    policy = _policy(no_regression={"metric": "roc_auc", "tolerance": 0.01})
    report = evaluate(policy, good, test, champion=stump)
    check = _check(report, "no_regression")
    champ_auc = skm.roc_auc_score(test["label"], stump.predict_proba(test[["x2"]])[:, 1])
    assert check.passed and check.bound == pytest.approx(champ_auc - 0.01, abs=1e-12)
    assert report.champion is not None
    assert report.champion["metrics"]["roc_auc"] == pytest.approx(champ_auc, abs=1e-12)


def test_no_regression_against_a_better_champion_fails(frames, good, stump) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    policy = _policy(no_regression={"metric": "log_loss", "tolerance": 0.02})
    report = evaluate(policy, stump, test, champion=good)
    check = _check(report, "no_regression:log_loss")
    champ_loss = skm.log_loss(test["label"], good.predict_proba(test[FEATURES]))
    assert not check.passed  # log_loss: lower is better, so the bound is champion + tolerance
    assert check.bound == pytest.approx(champ_loss + 0.02, abs=1e-12)
    assert check.measured == pytest.approx(
        skm.log_loss(test["label"], stump.predict_proba(test[["x2"]])), abs=1e-12
    )
    assert "champion" in check.detail and "tolerance 0.02" in check.detail


def test_no_regression_without_a_champion_passes(frames, good) -> None:  # type: ignore[no-untyped-def]
    report = evaluate(_policy(no_regression={"metric": "f1"}), good, frames[1])
    check = _check(report, "no_regression")
    assert check.passed and check.bound is None and check.detail == "no champion yet"


# -- fairness -------------------------------------------------------------------------------------


def test_fairness_checks_match_fairlearn(frames, good) -> None:  # type: ignore[no-untyped-def]
    fl = pytest.importorskip("fairlearn.metrics")
    _, test = frames
    pred = good.predict(test[FEATURES])
    big = test["group"] != "c"  # group c has ~40 rows: under min_group_size, not counted
    dpd = fl.demographic_parity_difference(
        test["label"][big], pred[big], sensitive_features=test["group"][big]
    )
    eod = fl.equal_opportunity_difference(
        test["label"][big], pred[big], sensitive_features=test["group"][big]
    )
    policy = _policy(
        fairness={
            "attribute": "group",
            "min_group_size": 100,
            "demographic_parity_difference": {"max": 0.1},
            "equal_opportunity_difference": {"max": 0.9},
            "group_metric_floor": {"metric": "recall", "min": 0.5},
        }
    )
    report = evaluate(policy, good, test)
    parity = _check(report, "fairness:demographic_parity_difference<=0.1")
    opportunity = _check(report, "fairness:equal_opportunity_difference<=0.9")
    floor = _check(report, "fairness:group_metric_floor:recall>=0.5")
    assert dpd > 0.1  # the planted bias is visible
    assert not parity.passed and parity.measured == pytest.approx(dpd, abs=1e-12)
    assert opportunity.passed and opportunity.measured == pytest.approx(eod, abs=1e-12)
    recalls = {
        g: skm.recall_score(test["label"][test["group"] == g], pred[test["group"] == g])
        for g in ("a", "b")
    }
    assert floor.passed and floor.measured == pytest.approx(min(recalls.values()), abs=1e-12)
    assert "not counted: c" in parity.detail
    section = report.candidate["fairness"]
    assert section["excluded"] == ["c"] and section["sizes"]["c"] == (test["group"] == "c").sum()
    assert set(section["selection_rate"]) == {"a", "b", "c"}
    message = gate_failed(report).message
    assert f"demographic_parity_difference {dpd:.4g} > max 0.1" in message


def test_the_sensitive_attribute_is_not_fed_to_the_model(frames, good) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    policy = _policy(fairness={"attribute": "group", "demographic_parity_difference": {"max": 1}})
    model = Wrapped(good, signature=_signature(FEATURES))
    evaluate(policy, model, test)
    assert model.seen and all(cols == FEATURES for cols in model.seen)
    evaluate(policy, good, test)  # a bare sklearn estimator: its feature_names_in_ select
    unsigned = Wrapped(good)
    evaluate(policy, unsigned, test)  # no signature, no feature names: all but the target
    assert unsigned.seen[0] == ["x1", "x2", "proxy", "group"]


def test_signature_columns_missing_from_the_data(frames, good) -> None:  # type: ignore[no-untyped-def]
    model = Wrapped(good, signature=_signature([*FEATURES, "tenure"]))
    with pytest.raises(InvalidInput, match="tenure") as info:
        evaluate(_policy(), model, frames[1])
    assert info.value.field == "data"


# -- schema, latency, size ------------------------------------------------------------------------


def test_schema_compatibility_uses_the_injected_function(frames, good) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[Any, Any]] = []

    def compatibility(old: Any, new: Any) -> list[str]:
        calls.append((old, new))
        return [] if old == new else ["input 'x2' changed type double -> string"]

    old = _signature(FEATURES)
    new = {
        "inputs": [
            {**col, "type": "string"} if col["name"] == "x2" else col for col in old["inputs"]
        ]
    }
    champion = Wrapped(good, signature=old)
    breaking = evaluate(
        _policy(),
        good,
        frames[1],
        champion=champion,
        candidate_signature=new,
        compatibility=compatibility,
    )
    check = _check(breaking, "schema_compatible")
    assert calls == [(old, new)]
    assert not check.passed and check.measured == 1.0 and check.bound == 0.0
    assert "input 'x2' changed type" in check.detail
    same = evaluate(
        _policy(),
        Wrapped(good, signature=old),
        frames[1],
        champion=champion,
        compatibility=compatibility,
    )
    assert _check(same, "schema_compatible").passed


def test_schema_check_without_signatures(frames, good) -> None:  # type: ignore[no-untyped-def]
    signed = Wrapped(good, signature=_signature(FEATURES))
    alone = evaluate(_policy(), good, frames[1])
    assert _check(alone, "schema").passed and _check(alone, "schema").detail == "no champion yet"
    unsigned_champion = evaluate(_policy(), signed, frames[1], champion=good)
    assert _check(unsigned_champion, "schema").passed
    unsigned_candidate = evaluate(
        _policy(), good, frames[1], champion=signed, compatibility=lambda old, new: []
    )
    assert not _check(unsigned_candidate, "schema").passed
    assert not evaluate(_policy(schema_compatible=False), good, frames[1], champion=signed).checks
    with pytest.raises(ValueError, match="compatibility"):
        evaluate(_policy(), signed, frames[1], champion=signed)


def test_latency_of_a_slow_model_fails_and_a_fast_one_passes(frames, good) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    slow = Wrapped(good, signature=_signature(FEATURES), sleep_s=0.02)
    report = evaluate(_policy(latency_p95_ms=5, latency_rows=10), slow, test)
    check = _check(report, "latency_p95_ms")
    assert check.name == "latency_p95_ms<=5" and not check.passed
    assert check.measured is not None and check.measured >= 20.0
    assert report.candidate["latency_p95_ms"] == check.measured
    assert len(slow.seen) == 2 + 5 + 10  # predict + predict_proba, the warm-up, the timed rows
    assert all(len(cols) == len(FEATURES) for cols in slow.seen)
    fast = evaluate(_policy(latency_p95_ms=2000, latency_rows=20), good, test)
    assert _check(fast, "latency").passed and _check(fast, "latency").measured > 0.0


def test_size_check(frames, good) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(max_size_mb=2)
    big = _check(evaluate(policy, good, frames[1], candidate_size_bytes=3 * MB), "size_mb")
    assert big.name == "size_mb<=2" and not big.passed and big.measured == 3.0
    assert big.detail == "size_mb 3 > max 2"
    assert evaluate(policy, good, frames[1], candidate_size_bytes=MB).passed
    unknown = evaluate(policy, good, frames[1])
    assert not unknown.passed and _check(unknown, "size_mb").measured is None
    assert unknown.candidate["size_mb"] is None


# -- regression models ----------------------------------------------------------------------------


def test_regression_gates_and_direction(frames) -> None:  # type: ignore[no-untyped-def]
    train, test = frames
    target = "x2"
    cols = ["x1", "proxy"]
    train = train.assign(x2=train["x1"] * 2 + train["proxy"])
    test = test.assign(x2=test["x1"] * 2 + test["proxy"] + np.linspace(-0.1, 0.1, len(test)))
    linear = LinearRegression().fit(train[cols], train[target])
    mean = DummyRegressor().fit(train[cols], train[target])
    policy = GatePolicy.from_dict(
        {
            "dataset": "d",
            "target": target,
            "thresholds": {"r2": {"min": 0.9}, "rmse": {"max": 0.5}},
            "no_regression": {"metric": "rmse"},
        }
    )
    data = test[[*cols, target]]
    better = evaluate(policy, linear, data, champion=mean)
    pred = linear.predict(test[cols])
    assert better.task == "regression" and better.passed
    assert better.checks[0].measured == pytest.approx(skm.r2_score(test[target], pred), abs=1e-12)
    worse = evaluate(policy, mean, data, champion=linear)
    check = _check(worse, "no_regression:rmse")
    assert not worse.passed and not check.passed
    assert check.bound == pytest.approx(np.sqrt(skm.mean_squared_error(test[target], pred)))


def test_task_contradictions_are_the_callers_error(frames, good) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    with pytest.raises(InvalidInput) as info:
        evaluate(_policy(task="regression"), good, test)
    assert info.value.field == "task"
    with pytest.raises(InvalidInput) as info:
        evaluate(_policy(thresholds={"rmse": {"max": 1}}), good, test)
    assert info.value.field == "thresholds.rmse"
    regressor = LinearRegression().fit(test[["x1"]], test["x2"])
    fairness = {"attribute": "group", "demographic_parity_difference": {"max": 0.1}}
    with pytest.raises(InvalidInput) as info:
        evaluate(_policy(fairness=fairness), regressor, test)
    assert info.value.field == "fairness"


def test_bad_evaluation_data(frames, good) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    with pytest.raises(InvalidInput) as info:
        evaluate(_policy(), good, test.drop(columns="label"))
    assert info.value.field == "target"
    fairness = {"attribute": "region", "demographic_parity_difference": {"max": 0.1}}
    with pytest.raises(InvalidInput) as info:
        evaluate(_policy(fairness=fairness), good, test)
    assert info.value.field == "fairness.attribute"
    with pytest.raises(InvalidInput, match="missing"):
        evaluate(
            _policy(), good, test.assign(label=test["label"].astype(float).where(test.index > 5))
        )


# -- the report and the refusal -------------------------------------------------------------------


def test_report_round_trips_through_json_and_builds_the_refusal(frames, good, stump) -> None:  # type: ignore[no-untyped-def]
    _, test = frames
    policy = GatePolicy.from_yaml(POLICY_YAML)
    report = evaluate(policy, stump, test, champion=good, candidate_size_bytes=12 * MB)
    wire = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert EvaluationReport.from_dict(wire) == report
    assert wire["policy_digest"] == policy.digest() and wire["dataset"] == "holdout"
    failures = report.failures()
    assert {c.name for c in failures} >= {
        "threshold:auc>=0.8",
        "no_regression:roc_auc",
        "size_mb<=10",
    }
    exc = gate_failed(report)
    assert isinstance(exc, GateFailed) and exc.field == "version"
    assert exc.details["failed_checks"] == [c.to_dict() for c in failures]
    auc = report.candidate["metrics"]["auc"]
    assert f"auc {auc:.4g} < min 0.8" in exc.message
    assert exc.message.count(";") == len(failures) - 1
    assert "size_mb 12 > max 10" in exc.message
