"""The retraining policy (YAML): when to retrain a model, on what, and how to judge the result.

::

    model: churn
    deployment: churn-api
    triggers:
      alerts: [input-drift, auc-drop]     # open alerts (by rule name) on the deployment
      schedule: "0 3 * * mon"             # cron, UTC (see loopwright.automation.cron)
      new_labels: 5000                    # labelled logged rows since the last retraining
    train:
      entry_point: "churn.training:fit"   # fit(data: TrainingData) -> a fitted model
      params: {max_iter: 200}
      executor: local                     # or ray
    data:
      reference: churn-train              # a dataset kept with registry.register_dataset
      include_logged: true                # + labelled traffic from the prediction log
      window: 7d
      label_column: churned
      reference_profile: logged           # drift reference of the new version (default: training)
    challenger:
      mode: shadow                        # or canary (the deployment routes `weight` to it)
      alias: challenger
      min_requests: 1000
      min_labels: 300
      max_wait: 2d
      metric: roc_auc                     # any performance metric; direction known
      margin: 0.01
    promote:
      alias: champion
      reason: "challenger v{version} beat v{champion} on {metric}: ..."

Every section refuses unknown keys; a mistake is :class:`~loopwright.errors.InvalidInput` naming
the dotted YAML path (``challenger.max_wait``, ``triggers.schedule``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from loopwright.automation.cron import CronSchedule
from loopwright.errors import InvalidInput
from loopwright.registry.entities import alias_name, model_name
from loopwright.yamldoc import YamlDocument

__all__ = [
    "REASON_FIELDS",
    "ChallengerSpec",
    "DataSpec",
    "PromoteSpec",
    "RetrainPolicy",
    "TrainSpec",
    "Triggers",
]

DEFAULT_REASON = (
    "challenger v{version} beat champion v{champion} on {metric}: {challenger_value:.4f} vs "
    "{champion_value:.4f} over {n_labelled} labelled requests (margin {margin})"
)
#: The placeholders a promotion reason may use, with sample values to check a template.
REASON_FIELDS: dict[str, Any] = {
    "model": "churn",
    "version": 2,
    "champion": 1,
    "metric": "roc_auc",
    "challenger_value": 0.8,
    "champion_value": 0.75,
    "delta": 0.05,
    "margin": 0.01,
    "n_requests": 1000,
    "n_labelled": 300,
    "agreement": 0.9,
    "cycle": "0123abcd",
    "trigger": "alert",
}
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _checked(check: Any) -> Any:
    """Turn one of loopwright's validators (raising InvalidInput) into a pydantic one."""

    def validate(value: Any) -> Any:
        try:
            check(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value

    return validate


def _duration(value: str) -> str:
    from loopwright.monitoring.config import duration_ms

    _checked(lambda v: duration_ms(v, "duration"))(value)
    return value.strip()


def _schedule(value: str) -> str:
    return str(_checked(CronSchedule.parse)(value)).strip()


def _entry_point(value: str) -> str:
    if not _ENTRY_POINT.match(value.strip()):
        raise ValueError(
            f"{value!r} must look like package.module:function (a Python import path, a colon, "
            "the function's name)"
        )
    return value.strip()


def _metric(value: str) -> str:
    from loopwright.governance.metrics import get_metric

    _checked(get_metric)(value)
    return value


def _reason(value: str) -> str:
    try:
        value.format(**REASON_FIELDS)
    except KeyError as exc:
        raise ValueError(
            f"unknown placeholder {{{exc.args[0]}}}; expected some of {', '.join(REASON_FIELDS)}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    return value


def _deployment(name: str) -> str:
    if not name.strip() or "/" in name:
        raise ValueError("a deployment name must be non-empty and cannot contain '/'")
    return name


Duration = Annotated[str, AfterValidator(_duration)]
Alias = Annotated[str, AfterValidator(_checked(alias_name))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Triggers(_Section):
    """What starts a retraining; an explicit ``LoopController.trigger`` always can."""

    alerts: list[str] = Field(default_factory=list)
    schedule: Annotated[str, AfterValidator(_schedule)] | None = None
    new_labels: int | None = Field(default=None, ge=1)

    @property
    def cron(self) -> CronSchedule | None:
        return None if self.schedule is None else CronSchedule.parse(self.schedule)


class TrainSpec(_Section):
    """The training function and how it runs.

    ``validation_fraction`` of the assembled rows (a seeded shuffle) is held out: the entry point
    never sees it, and the run logs ``val_<metric>`` on it so monitoring has the new version's
    baseline. ``0`` trains on everything (and logs no validation metrics).
    """

    entry_point: Annotated[str, AfterValidator(_entry_point)]
    params: dict[str, Any] = Field(default_factory=dict)
    executor: Literal["local", "ray"] = "local"
    experiment: str | None = None  # default: "<model>-retraining"
    validation_fraction: float = Field(default=0.2, ge=0, lt=1)
    seed: int = 0


class DataSpec(_Section):
    """The training data: a reference dataset plus labelled traffic of the last ``window``."""

    reference: str | None = None  # a dataset name or digest kept with its content
    include_logged: bool = True
    window: Duration = "7d"
    label_column: str = "label"
    log_uri: str | None = None  # default: <tracking directory>/predictions, as serving writes
    #: What the new version's drift reference profile is computed from: its whole training set
    #: (``training``), or only the labelled traffic of ``window`` it was trained on (``logged``:
    #: once it is promoted, drift is measured against the new normal that made it necessary,
    #: so the drift alert that triggered the retrain can resolve). ``logged`` falls back to the
    #: training set, and says so, when fewer than ``min_profile_rows`` rows were logged.
    reference_profile: Literal["training", "logged"] = "training"
    min_profile_rows: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _some_data(self) -> DataSpec:
        if self.reference is None and not self.include_logged:
            raise ValueError("give a reference dataset or include_logged: true (or both)")
        return self


class ChallengerSpec(_Section):
    """How the new version proves itself on live traffic before it may be promoted."""

    mode: Literal["shadow", "canary"] = "shadow"
    alias: Alias = "challenger"
    weight: float | None = Field(default=None, gt=0, lt=1)  # canary: the traffic share expected
    min_requests: int = Field(default=200, ge=1)
    min_labels: int = Field(default=100, ge=0)
    max_wait: Duration = "2d"
    metric: Annotated[str, AfterValidator(_metric)] = "roc_auc"
    margin: float = Field(default=0.0, ge=0)
    positive: int | str = 1  # the positive class (classification metrics)

    @model_validator(mode="after")
    def _weight_for_canary(self) -> ChallengerSpec:
        if self.weight is not None and self.mode != "canary":
            raise ValueError("weight applies to mode: canary only")
        return self


class PromoteSpec(_Section):
    alias: Alias = "champion"
    reason: Annotated[str, AfterValidator(_reason)] = DEFAULT_REASON


class RetrainPolicy(_Section, YamlDocument):
    """One model's retraining loop (see the module docstring)."""

    document_name: ClassVar[str] = "retraining policy"
    document_field: ClassVar[str] = "policy"

    model: Annotated[str, AfterValidator(_checked(model_name))]
    deployment: Annotated[str, AfterValidator(_deployment)]
    triggers: Triggers = Triggers()
    train: TrainSpec
    data: DataSpec = DataSpec()
    challenger: ChallengerSpec = ChallengerSpec()
    promote: PromoteSpec = PromoteSpec()

    @model_validator(mode="after")
    def _distinct_aliases(self) -> RetrainPolicy:
        if self.challenger.alias == self.promote.alias:
            raise ValueError(
                f"challenger.alias and promote.alias are both {self.promote.alias!r}; the "
                "challenger needs its own alias"
            )
        return self

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON: the audit trail says when the policy changed."""
        body = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()

    @property
    def experiment(self) -> str:
        return self.train.experiment or f"{self.model}-retraining"
