"""What a deployment serves, declared in YAML: the champion, a canary, shadows and their knobs.

::

    name: churn-api
    model: churn
    champion: champion          # an alias, or a version number
    canary: {ref: challenger, weight: 0.1}
    shadows: ["7"]
    batching: {max_batch_size: 32, max_wait_ms: 2}
    slo: {min_requests: 50, max_error_rate: 0.05}
    log: {uri: ./.loopwright/predictions}

Every section refuses unknown keys; a mistake becomes :class:`~loopwright.errors.InvalidInput`
whose ``field`` is the dotted YAML path (``canary.weight``, ``batching.max_batchsize``).
Route refs are relative to ``model``: :func:`ref_of` turns them into registry URIs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from loopwright.errors import InvalidInput
from loopwright.registry.entities import ModelRef, alias_name, model_name
from loopwright.yamldoc import YamlDocument

__all__ = ["Batching", "Canary", "CanarySLO", "DeploymentSpec", "LogSpec", "ref_of"]


def ref_of(model: str, ref: str) -> str:
    """The registry URI of a route: ``churn@champion`` for an alias, ``churn/3`` for a version."""
    if ref == "latest" or ref.isdigit():
        return f"{model}/{ref if ref == 'latest' else int(ref)}"
    return f"{model}@{ref}"


def _as_text(value: Any) -> Any:
    """YAML reads ``champion: 3`` as an int; a version number is meant."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _route_ref(ref: str) -> str:
    if ref == "latest" or (ref.isdigit() and int(ref) > 0):
        return ref
    try:
        return alias_name(ref)
    except InvalidInput as exc:
        raise ValueError(f"{exc.message}; or give a version number") from None


def _model(name: str) -> str:
    try:
        return model_name(name)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def _deployment_name(name: str) -> str:
    if not name.strip() or "/" in name:
        raise ValueError("a deployment name must be non-empty and cannot contain '/'")
    return name


RouteRef = Annotated[str, BeforeValidator(_as_text), AfterValidator(_route_ref)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(_Section):
    """How long a request may wait for others (``max_wait_ms``), how many rows go at once,
    where the model runs (``executor``, see :mod:`loopwright.serving.batching`) and how many
    requests may queue (``max_queue``: a full queue refuses at once rather than letting every
    request's latency grow without bound).

    ``auto`` runs scikit-learn models on the event loop (``inline``: their small-batch
    ``predict`` is mostly Python holding the GIL, so a worker thread only adds hand-overs) and
    every other flavor in a worker thread (``thread``: native libraries release the GIL).
    """

    max_batch_size: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=2.0, ge=0)
    executor: Literal["auto", "thread", "inline"] = "auto"
    #: Requests that may wait for a batch; beyond, a request is refused with 503 OVERLOADED.
    max_queue: int = Field(default=1024, ge=1)


class Canary(_Section):
    """A second version taking ``weight`` (strictly between 0 and 1) of the traffic."""

    ref: RouteRef
    weight: float = Field(gt=0, lt=1)


class CanarySLO(_Section):
    """When a canary is judged unhealthy, compared with the champion over ``window_s``.

    Judged once ``min_requests`` canary answers are in the window (see
    :mod:`loopwright.serving.canary`): the error rate above ``max_error_rate`` *and* above
    ``max_error_rate_ratio`` x the champion's; the p99 latency of successful answers above
    ``max_p99_ratio`` x the champion's (and above ``p99_floor_ms``, so sub-millisecond jitter
    cannot roll back); or, with ``min_agreement``, the share of rows where the canary predicted
    what the champion predicts for the same input below it. ``agreement_sample`` of the canary's
    answers are re-scored on the champion, off the request path, to measure that; numeric
    predictions agree within ``agreement_tolerance``.
    """

    window_s: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=50, ge=1)
    max_error_rate_ratio: float = Field(default=2.0, gt=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_ratio: float = Field(default=2.0, gt=0)
    p99_floor_ms: float = Field(default=0.0, ge=0)
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    agreement_sample: float = Field(default=1.0, gt=0, le=1)
    agreement_tolerance: float = Field(default=0.0, ge=0)


class LogSpec(_Section):
    """Where the prediction log goes (``None``: the client's default) and how often it flushes."""

    uri: str | None = None
    flush_interval_s: float = Field(default=1.0, gt=0)
    enabled: bool = True


class DeploymentSpec(_Section, YamlDocument):
    """A served set of routes over one registered model (see the module docstring)."""

    document_name: ClassVar[str] = "deployment spec"
    document_field: ClassVar[str] = "deployment"

    name: Annotated[str, AfterValidator(_deployment_name)]
    model: Annotated[str, AfterValidator(_model)]
    champion: RouteRef = "champion"
    canary: Canary | None = None
    shadows: list[RouteRef] = Field(default_factory=list)
    batching: Batching = Batching()
    slo: CanarySLO | None = None
    log: LogSpec = LogSpec()
    watch_interval_s: float = Field(default=5.0, gt=0)
    #: Larger request bodies are refused with 413 before they are read whole.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _distinct_shadows(self) -> DeploymentSpec:
        repeated = sorted({s for s in self.shadows if self.shadows.count(s) > 1})
        if repeated:
            raise ValueError(f"shadows repeat {repeated}")
        return self

    @property
    def champion_ref(self) -> str:
        return ref_of(self.model, self.champion)

    @property
    def canary_ref(self) -> str | None:
        return None if self.canary is None else ref_of(self.model, self.canary.ref)

    @property
    def shadow_refs(self) -> list[str]:
        return [ref_of(self.model, s) for s in self.shadows]

    @classmethod
    def from_uri(cls, uri: str, name: str | None = None) -> DeploymentSpec:
        """One champion route from ``churn@champion`` or ``churn/3``; named after the model."""
        ref = ModelRef.parse(uri)
        route = ref.alias if ref.version is None else str(ref.version)
        return cls.from_dict({"name": name or ref.name, "model": ref.name, "champion": route})
