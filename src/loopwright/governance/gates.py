"""Gate policies and the pure evaluation that decides whether a version may take a protected alias.

A :class:`GatePolicy` (per registered model, usually YAML) names an evaluation dataset and the
checks a candidate must pass: metric thresholds, no regression against the current champion,
fairness bounds across a sensitive attribute, schema compatibility with the champion, single-row
latency and model size. :func:`evaluate` runs the candidate (and the champion) on that data and
returns an :class:`EvaluationReport` — one :class:`CheckResult` per check, each with the measured
value and the bound, so a refusal can say exactly why. :func:`gate_failed` turns a failed report
into the :class:`~loopwright.errors.GateFailed` the registry raises.

Nothing here touches a store or the network: models are duck-typed (:class:`GatedModel`) and
signature compatibility is a callable the caller injects, so this module does not import the
registry it serves.

Which columns the model sees: the target is always dropped; when a signature is known only its
input columns are passed (a sensitive attribute kept in the data for fairness checks never
reaches a model that was not trained on it); without one, a fitted scikit-learn estimator's
``feature_names_in_`` is used; failing both, every column except the target.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
import orjson
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from loopwright.errors import GateFailed, InvalidInput
from loopwright.governance import fairness as fair
from loopwright.governance.metrics import (
    Task,
    compute_metrics,
    get_metric,
    metric_names,
)
from loopwright.yamldoc import YamlDocument

MB = 2**20  # sizes are reported in MiB: what `du -m` and most artifact browsers show
LATENCY_WARMUP = 5  # untimed calls first, so lazy imports and caches do not count

# -- the policy -------------------------------------------------------------------------------


def _known_metric(name: str) -> str:
    try:
        get_metric(name)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return name


MetricName = Annotated[str, AfterValidator(_known_metric)]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in YAML must not silently disable a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Bound(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _sane(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class NoRegression(_Strict):
    metric: MetricName
    tolerance: float = Field(0.0, ge=0.0)


class MaxBound(_Strict):
    max: float = Field(ge=0.0)


class GroupFloor(_Strict):
    metric: MetricName
    min: float


class FairnessPolicy(_Strict):
    attribute: str = Field(min_length=1)
    demographic_parity_difference: MaxBound | None = None
    equal_opportunity_difference: MaxBound | None = None
    group_metric_floor: GroupFloor | None = None
    min_group_size: int = Field(30, ge=1)

    @property
    def needs_classes(self) -> bool:
        """Selection and true positive rates only exist for a classifier."""
        return bool(self.demographic_parity_difference or self.equal_opportunity_difference)


class GatePolicy(_Strict, YamlDocument):
    """What a version must show, on ``dataset``, before it may take a protected alias."""

    document_name: ClassVar[str] = "gate policy"
    document_field: ClassVar[str] = "policy"

    dataset: str = Field(min_length=1)
    target: str = Field(min_length=1)
    task: Literal["classification", "regression"] | None = None
    thresholds: dict[MetricName, Bound] = Field(default_factory=dict)
    no_regression: NoRegression | None = None
    fairness: FairnessPolicy | None = None
    schema_compatible: bool = True
    latency_p95_ms: float | None = Field(None, gt=0.0)
    latency_rows: int = Field(200, ge=1)
    max_size_mb: float | None = Field(None, gt=0.0)
    protected_aliases: list[str] = Field(default_factory=lambda: ["champion"])
    required_approvals: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _one_task(self) -> GatePolicy:
        _check_tasks(self, self.task)
        return self

    def metric_refs(self) -> list[tuple[str, str]]:
        """``(yaml path, metric name)`` of every metric the policy names."""
        refs = [(f"thresholds.{name}", name) for name in self.thresholds]
        if self.no_regression:
            refs.append(("no_regression.metric", self.no_regression.metric))
        if self.fairness and self.fairness.group_metric_floor:
            refs.append(
                ("fairness.group_metric_floor.metric", self.fairness.group_metric_floor.metric)
            )
        return refs

    def digest(self) -> str:
        """SHA-256 of the canonical JSON, so a report can be tied to the policy that judged it."""
        body = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()


def _check_tasks(policy: GatePolicy, task: str | None) -> None:
    """Every named metric must fit one task (the declared or inferred one)."""
    for path, name in policy.metric_refs():
        metric_task = get_metric(name).task
        if task is None:
            task = metric_task
        elif metric_task != task:
            raise InvalidInput(
                f"{path}: {name!r} is a {metric_task} metric but the policy judges a {task} model",
                field=path,
            )
    if task == "regression" and policy.fairness and policy.fairness.needs_classes:
        raise InvalidInput(
            "fairness: parity and opportunity differences need a classifier", field="fairness"
        )


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: ``detail`` is the human sentence a refusal quotes (``auc 0.71 < min 0.75``)."""

    name: str
    passed: bool
    measured: float | None
    bound: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            str(data["name"]),
            bool(data["passed"]),
            data.get("measured"),
            data.get("bound"),
            str(data.get("detail", "")),
        )


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Everything measured for a candidate (and its champion) on one dataset, and the verdict."""

    policy_digest: str
    dataset: str
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    checks: list[CheckResult]
    passed: bool
    task: str | None = None

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: plain floats, ``None`` for what could not be measured, string keys."""
        return {
            "policy_digest": self.policy_digest,
            "dataset": self.dataset,
            "task": self.task,
            "candidate": self.candidate,
            "champion": self.champion,
            "checks": [c.to_dict() for c in self.checks],
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        return cls(
            policy_digest=str(data.get("policy_digest", "")),
            dataset=str(data.get("dataset", "")),
            candidate=dict(data.get("candidate") or {}),
            champion=dict(data["champion"]) if data.get("champion") is not None else None,
            checks=[CheckResult.from_dict(c) for c in data.get("checks", [])],
            passed=bool(data.get("passed")),
            task=data.get("task"),
        )


def gate_failed(report: EvaluationReport) -> GateFailed:
    """The refusal for ``report``: each failed check's sentence, and the checks as data."""
    failed = report.failures()
    summary = "; ".join(c.detail for c in failed) or "no check failed"
    return GateFailed(
        f"gates failed on {report.dataset!r}: {summary}",
        field="version",
        failed_checks=[c.to_dict() for c in failed],
    )


# -- models and their outputs -----------------------------------------------------------------


class GatedModel(Protocol):
    """What :func:`evaluate` needs from a model (``LoadedModel`` and sklearn estimators fit)."""

    is_classifier: bool

    def predict(self, X: Any) -> Any: ...

    def predict_proba(self, X: Any) -> Any: ...


Compatibility = Callable[[Any, Any], list[str]]


@dataclass(frozen=True, slots=True)
class _Outputs:
    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: np.ndarray | None


def _input_columns(signature: Any) -> list[str] | None:
    """Input column names from a signature object or its dict form (``{"inputs": [...]}``)."""
    if signature is None:
        return None
    names = getattr(signature, "input_names", None)
    if callable(names):
        names = names()
    if names is not None:
        return [str(n) for n in names]
    inputs = (
        signature.get("inputs")
        if isinstance(signature, Mapping)
        else getattr(signature, "inputs", None)
    )
    if inputs is None:
        return None
    return [
        c if isinstance(c, str) else c["name"] if isinstance(c, Mapping) else c.name for c in inputs
    ]


def _features(data: pd.DataFrame, target: str, model: Any, signature: Any) -> pd.DataFrame:
    """The columns the model may see (see the module docstring for the order of preference)."""
    columns = _input_columns(signature)
    names = getattr(model, "feature_names_in_", None)
    if names is None:  # a loaded registry model wraps the estimator
        names = getattr(getattr(model, "native", None), "feature_names_in_", None)
    if columns is None and names is not None:
        columns = [str(c) for c in names]
    if columns is None:
        return data.drop(columns=[target])
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise InvalidInput(
            f"evaluation data lacks the model's input columns {missing}", field="data"
        )
    return data[columns]


def _predict(model: Any, X: pd.DataFrame, task: str) -> _Outputs:
    y_pred = np.asarray(model.predict(X))
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        y_pred = y_pred[:, 0]
    if task != "classification":
        return _Outputs(y_pred, None, None)
    classes = getattr(model, "classes_", None)
    proba = None
    if hasattr(model, "predict_proba"):
        try:
            proba = np.asarray(model.predict_proba(X), dtype=float)
        except (AttributeError, NotImplementedError):
            proba = None  # e.g. an SVC without probability=True: label metrics only
    return _Outputs(y_pred, proba, None if classes is None else np.asarray(classes))


def _metrics(policy: GatePolicy, task: Task, y: np.ndarray, out: _Outputs) -> dict[str, Any]:
    """Every metric of the task the outputs allow, plus the policy's own spellings (``auc``)."""
    names = metric_names(task, with_proba=out.proba is not None)
    names += [n for _, n in policy.metric_refs() if n not in names]
    names = [n for n in names if out.proba is not None or get_metric(n).needs == "labels"]
    values = compute_metrics(task, y, out.y_pred, out.proba, names, classes=out.classes)
    return {k: _clean(v) for k, v in values.items()}


def _clean(value: float | None) -> float | None:
    """A plain float, or ``None`` for what could not be measured (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _latency_p95_ms(model: Any, X: pd.DataFrame, rows: int) -> float:
    """p95 of single-row ``predict`` wall time, in ms, after a few untimed warm-up calls."""
    singles = [X.iloc[[i % len(X)]] for i in range(rows)]
    for single in singles[:LATENCY_WARMUP]:
        model.predict(single)
    times = np.empty(rows)
    for k, single in enumerate(singles):
        start = time.perf_counter()
        model.predict(single)
        times[k] = time.perf_counter() - start
    return float(np.percentile(times, 95) * 1000.0)


# -- checks -----------------------------------------------------------------------------------


@dataclass
class _Context:
    """What the checks read; ``section`` is the candidate's report part they add numbers to."""

    y: np.ndarray
    data: pd.DataFrame
    candidate: Any
    X: pd.DataFrame
    outputs: _Outputs
    section: dict[str, Any]
    champion: dict[str, Any] | None
    signatures: tuple[Any, Any]  # (champion's, candidate's): compatibility's argument order
    compatibility: Compatibility | None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


_SIGN = {("min", True): ">=", ("min", False): "<", ("max", True): "<=", ("max", False): ">"}


def _compare(name: str, label: str, measured: float | None, bound: float, kind: str) -> CheckResult:
    """``measured`` against a ``min`` or ``max`` bound; what could not be measured fails."""
    if measured is None or not math.isfinite(measured):
        detail = f"{label} could not be measured (needs {kind} {_fmt(bound)})"
        return CheckResult(name, False, None, float(bound), detail)
    ok = measured >= bound if kind == "min" else measured <= bound
    shown, limit = _fmt(measured), _fmt(bound)
    if shown == limit and measured != bound:  # 0.74996 vs 0.75 must not read "0.75 < 0.75"
        shown, limit = f"{measured:.12g}", f"{bound:.12g}"
    detail = f"{label} {shown} {_SIGN[kind, ok]} {kind} {limit}"
    return CheckResult(name, ok, float(measured), float(bound), detail)


def _noted(result: CheckResult, note: str) -> CheckResult:
    return replace(result, detail=result.detail + note) if note else result


def _thresholds(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    metrics, checks = ctx.section["metrics"], []
    for name, bound in policy.thresholds.items():
        for kind, op, value in (("min", ">=", bound.min), ("max", "<=", bound.max)):
            if value is not None:
                label = f"threshold:{name}{op}{value:g}"
                checks.append(_compare(label, name, metrics.get(name), value, kind))
    return checks


def _no_regression(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    """Candidate vs champion on the same rows; which way is worse comes from the registry."""
    rule = policy.no_regression
    if rule is None:
        return []
    name, measured = f"no_regression:{rule.metric}", ctx.section["metrics"].get(rule.metric)
    if ctx.champion is None:
        return [CheckResult(name, True, measured, None, "no champion yet")]
    reference = ctx.champion["metrics"].get(rule.metric)
    if reference is None:
        detail = f"{rule.metric} of the champion could not be measured"
        return [CheckResult(name, False, measured, None, detail)]
    higher = get_metric(rule.metric).higher_is_better
    bound = reference - rule.tolerance if higher else reference + rule.tolerance
    result = _compare(name, rule.metric, measured, bound, "min" if higher else "max")
    return [_noted(result, f" (champion {_fmt(reference)}, tolerance {rule.tolerance:g})")]


def _fairness(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    """Parity, opportunity and per-group floors; the per-group numbers go into the report."""
    rule = policy.fairness
    if rule is None:
        return []
    groups, out = ctx.data[rule.attribute].to_numpy(), ctx.outputs
    sizes = fair.group_sizes(groups)
    section = ctx.section["fairness"] = {
        "attribute": rule.attribute,
        "min_group_size": rule.min_group_size,
        "sizes": _str_keys(sizes),
        "excluded": [str(g) for g in fair.excluded_groups(sizes, rule.min_group_size)],
    }
    positive = _positive_class(ctx.y, out)
    checks = []
    for measure, rate_name in _RATE_NAME.items():
        bound = getattr(rule, measure)
        if bound is None:
            continue
        if rate_name == "selection_rate":
            values = fair.selection_rates(out.y_pred, groups, positive=positive)
        else:
            values = fair.true_positive_rates(ctx.y, out.y_pred, groups, positive=positive)
        section[rate_name] = _str_keys(values)
        checks.append(_spread_check(measure, values, sizes, rule.min_group_size, bound.max))
    if rule.group_metric_floor:
        floor = rule.group_metric_floor
        values = _group_metric(floor.metric, ctx.y, out, groups)
        section[floor.metric] = _str_keys(values)
        checks.append(_floor_check(floor, values, sizes, rule.min_group_size))
    return checks


_RATE_NAME = {
    "demographic_parity_difference": "selection_rate",
    "equal_opportunity_difference": "true_positive_rate",
}


def _positive_class(y: np.ndarray, out: _Outputs) -> Any:
    """The larger of the model's classes (or of the labels seen): ``1`` of ``{0, 1}``."""
    known = out.classes if out.classes is not None else np.concatenate([y, out.y_pred])
    return np.unique(known)[-1]


def _group_metric(metric: str, y: np.ndarray, out: _Outputs, groups: np.ndarray) -> dict:
    if get_metric(metric).needs == "proba" and out.proba is None:
        return {g: float("nan") for g in fair.group_sizes(groups)}
    return fair.group_metrics(metric, y, out.y_pred, out.proba, groups, classes=out.classes)


def _counted(values: dict, sizes: dict, min_size: int) -> dict:
    """The groups a difference or floor is judged on: big enough, value defined."""
    return {g: v for g, v in values.items() if sizes[g] >= min_size and math.isfinite(v)}


def _spread_check(
    measure: str, rates: dict, sizes: dict, min_size: int, bound: float
) -> CheckResult:
    diff = fair.spread(rates, sizes, min_size)
    result = _compare(f"fairness:{measure}<={bound:g}", measure, diff, bound, "max")
    counted = _counted(rates, sizes, min_size)
    note = ""
    if len(counted) >= 2:
        hi, lo = max(counted, key=counted.__getitem__), min(counted, key=counted.__getitem__)
        note = f" (highest {hi!s} {_fmt(counted[hi])}, lowest {lo!s} {_fmt(counted[lo])})"
    return _noted(result, note + _excluded_note(sizes, min_size))


def _floor_check(floor: GroupFloor, values: dict, sizes: dict, min_size: int) -> CheckResult:
    """The worst counted group's metric against the floor."""
    counted = _counted(values, sizes, min_size)
    worst = min(counted, key=counted.__getitem__) if counted else None
    label = f"{floor.metric} of group {worst!s}" if counted else f"{floor.metric} per group"
    name = f"fairness:group_metric_floor:{floor.metric}>={floor.min:g}"
    result = _compare(name, label, counted.get(worst), floor.min, "min")
    return _noted(result, _excluded_note(sizes, min_size))


def _excluded_note(sizes: dict, min_size: int) -> str:
    small = fair.excluded_groups(sizes, min_size)
    if not small:
        return ""
    return f" [groups under {min_size} rows not counted: {', '.join(str(g) for g in small)}]"


def _str_keys(values: dict) -> dict[str, Any]:
    return {str(k): _clean(v) if isinstance(v, float) else v for k, v in values.items()}


def _schema(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    """Breaking changes from the champion's signature to the candidate's must be none."""
    if not policy.schema_compatible:
        return []
    old, new = ctx.signatures
    if ctx.champion is None:
        return [CheckResult("schema_compatible", True, None, 0.0, "no champion yet")]
    if old is None:
        detail = "the champion has no signature to compare against"
        return [CheckResult("schema_compatible", True, None, 0.0, detail)]
    if new is None:
        detail = "the candidate has no signature, so the champion's inputs cannot be checked"
        return [CheckResult("schema_compatible", False, None, 0.0, detail)]
    if ctx.compatibility is None:
        raise ValueError("schema_compatible needs evaluate(..., compatibility=...)")
    changes = list(ctx.compatibility(old, new))
    detail = f"schema: {len(changes)} breaking change(s): {'; '.join(changes) or 'none'}"
    return [CheckResult("schema_compatible", not changes, float(len(changes)), 0.0, detail)]


def _latency(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    bound = policy.latency_p95_ms
    if bound is None:
        return []
    measured = ctx.section["latency_p95_ms"] = _latency_p95_ms(
        ctx.candidate, ctx.X, policy.latency_rows
    )
    return [_compare(f"latency_p95_ms<={bound:g}", "latency_p95_ms", measured, bound, "max")]


def _size(policy: GatePolicy, ctx: _Context) -> list[CheckResult]:
    """Unknown size fails: a bound nobody measured is not a bound that held."""
    bound = policy.max_size_mb
    if bound is None:
        return []
    return [_compare(f"size_mb<={bound:g}", "size_mb", ctx.section["size_mb"], bound, "max")]


#: The checks in report order; each reads the policy and the measured context.
CHECKS: tuple[Callable[[GatePolicy, _Context], list[CheckResult]], ...] = (
    _thresholds,
    _no_regression,
    _fairness,
    _schema,
    _latency,
    _size,
)


# -- evaluate ---------------------------------------------------------------------------------


def _task(policy: GatePolicy, candidate: Any) -> Task:
    """The policy's task, else the candidate's kind; a contradiction is the caller's error."""
    is_classifier = getattr(candidate, "is_classifier", None)
    if is_classifier is None:  # a bare scikit-learn estimator: classifiers have classes_
        is_classifier = hasattr(candidate, "classes_")
    if policy.task is None:
        task: Task = "classification" if is_classifier else "regression"
        _check_tasks(policy, task)
        return task
    if bool(is_classifier) != (policy.task == "classification"):
        kind = "a classifier" if is_classifier else "a regressor"
        message = f"the policy judges {policy.task} but the candidate is {kind}"
        raise InvalidInput(message, field="task")
    return policy.task


def _labels(policy: GatePolicy, data: pd.DataFrame) -> np.ndarray:
    """The labels; the evaluation data must be labelled and hold the sensitive attribute."""
    if policy.target not in data.columns:
        raise InvalidInput(
            f"evaluation data has no target column {policy.target!r}", field="target"
        )
    if policy.fairness and policy.fairness.attribute not in data.columns:
        message = f"evaluation data has no column {policy.fairness.attribute!r}"
        raise InvalidInput(message, field="fairness.attribute")
    y = data[policy.target]
    if len(y) == 0 or y.isna().any():
        missing = int(y.isna().sum())
        message = f"{policy.target!r} needs a label in every row ({missing} of {len(y)} missing)"
        raise InvalidInput(message, field="data")
    return y.to_numpy()


def _signature(model: Any, given: Any) -> Any:
    return given if given is not None else getattr(model, "signature", None)


def evaluate(
    policy: GatePolicy,
    candidate: GatedModel,
    data: pd.DataFrame,
    *,
    champion: GatedModel | None = None,
    candidate_size_bytes: int | None = None,
    candidate_signature: Any = None,
    champion_signature: Any = None,
    compatibility: Compatibility | None = None,
) -> EvaluationReport:
    """Run every check of ``policy`` for ``candidate`` (and ``champion``) on ``data``.

    ``data`` holds the features, the target and (for fairness) the sensitive attribute.
    Signatures default to the models' own ``signature`` attribute when they have one.
    ``compatibility(old, new) -> list[str]`` lists breaking changes; it is injected so that
    this module need not import the registry.
    """
    y, task = _labels(policy, data), _task(policy, candidate)
    signatures = (
        _signature(champion, champion_signature),
        _signature(candidate, candidate_signature),
    )
    X = _features(data, policy.target, candidate, signatures[1])
    outputs = _predict(candidate, X, task)
    section: dict[str, Any] = {
        "metrics": _metrics(policy, task, y, outputs),
        "latency_p95_ms": None,
        "size_mb": None if candidate_size_bytes is None else candidate_size_bytes / MB,
    }
    champ = None
    if champion is not None:
        champ_X = _features(data, policy.target, champion, signatures[0])
        champ = {"metrics": _metrics(policy, task, y, _predict(champion, champ_X, task))}
    ctx = _Context(y, data, candidate, X, outputs, section, champ, signatures, compatibility)
    checks = [result for check in CHECKS for result in check(policy, ctx)]
    return EvaluationReport(
        policy_digest=policy.digest(),
        dataset=policy.dataset,
        candidate=section,
        champion=champ,
        checks=checks,
        passed=all(c.passed for c in checks),
        task=task,
    )
