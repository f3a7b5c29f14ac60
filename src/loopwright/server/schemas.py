"""API schemas: what the HTTP API accepts (``...Create``) and answers (``...Public``).

Kept apart from the domain entities (STYLE habit 12): these exist to validate requests with errors
that name the field, and to publish the OpenAPI document. Responses are built by
:mod:`loopwright.backends.rest.wire` (shared with the REST backend) and checked against these
models by FastAPI, so a drift between the two fails loudly in the tests.

The metric batch is the exception: it is parsed by
:func:`~loopwright.backends.rest.wire.parse_batch` for speed, and :class:`BatchCreate` only
documents it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from loopwright.tracking.entities import RunStatus

#: A metric value on the wire: a JSON number, or one of "NaN", "Infinity", "-Infinity".
WireFloat = float | str


class _Strict(BaseModel):
    """Requests reject unknown fields: a misspelt optional field would otherwise vanish."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: dict[str, object] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    version: str


class ExperimentCreate(_Strict):
    name: str
    tags: dict[str, str] | None = None


class ExperimentPublic(BaseModel):
    id: str
    name: str
    created_at: int
    tags: dict[str, str]


class ExperimentList(BaseModel):
    experiments: list[ExperimentPublic]


class DatasetInputSchema(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str
    digest: str
    schema_: list[dict[str, str]] = Field(alias="schema")
    num_rows: int
    context: str = "train"
    source: str | None = None


class ArtifactRefSchema(_Strict):
    path: str
    digest: str
    size: int


class RunCreate(_Strict):
    experiment_id: str
    name: str | None = None
    user: str | None = None
    tags: dict[str, str] | None = None
    parent_run_id: str | None = None
    start_time: int | None = None


class RunEnd(_Strict):
    status: RunStatus
    end_time: int | None = None
    error: str | None = None


class RunPublic(BaseModel):
    id: str
    experiment_id: str
    name: str
    status: RunStatus
    start_time: int
    end_time: int | None
    user: str | None
    parent_run_id: str | None
    heartbeat_at: int | None
    error: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, WireFloat]
    inputs: list[DatasetInputSchema]


class RunSearch(_Strict):
    experiment_ids: list[str] | None = None
    filter: str | None = None
    order_by: list[str] | None = None
    max_results: int = 100
    page_token: str | None = None


class RunPage(BaseModel):
    runs: list[RunPublic]
    next_page_token: str | None


class MetricColumns(BaseModel):
    """Columnar metric points: equal-length arrays, one entry per point."""

    key: list[str]
    value: list[WireFloat]
    step: list[int]
    timestamp: list[int]


class MetricHistory(BaseModel):
    metrics: MetricColumns


class BatchCreate(_Strict):
    metrics: MetricColumns | None = None
    params: dict[str, str] | None = None
    tags: dict[str, str] | None = None


class InputsCreate(_Strict):
    datasets: list[DatasetInputSchema]


class ArtifactsCreate(_Strict):
    artifacts: list[ArtifactRefSchema]


class ArtifactList(BaseModel):
    artifacts: list[ArtifactRefSchema]


class BlobPublic(BaseModel):
    digest: str
    size: int


# -- registry -------------------------------------------------------------------------------


class ModelCreate(_Strict):
    name: str
    description: str = ""
    tags: dict[str, str] | None = None


class ModelUpdate(_Strict):
    """Only the fields present change; tags are merged key by key."""

    description: str | None = None
    tags: dict[str, str] | None = None


class ModelPublic(BaseModel):
    name: str
    description: str
    created_at: int
    updated_at: int
    created_by: str | None
    tags: dict[str, str]
    aliases: dict[str, int]
    policy: dict[str, object] | None
    latest_version: int | None


class ModelList(BaseModel):
    models: list[ModelPublic]


class PolicySet(_Strict):
    """A gate policy as an object or as YAML text (a raw YAML body is accepted too)."""

    policy: dict[str, object] | str
    reason: str | None = None


class VersionCreate(_Strict):
    run_id: str
    path: str = "model"
    description: str = ""
    tags: dict[str, str] | None = None


class VersionUpdate(_Strict):
    tags: dict[str, str]


class VersionPublic(BaseModel):
    model: str
    version: int
    run_id: str | None
    artifact_path: str
    digest: str
    size: int
    flavor: str
    signature: dict[str, object] | None
    metrics: dict[str, WireFloat]
    description: str
    created_at: int
    created_by: str | None
    tags: dict[str, str]
    aliases: list[str]


class VersionList(BaseModel):
    versions: list[VersionPublic]


class AliasSet(_Strict):
    """``override`` is an admin's written justification for moving past failed gates."""

    version: int
    reason: str | None = None
    override: str | None = None


class EvaluateCreate(_Strict):
    """``dataset`` names a dataset registered with its content (default: the policy's)."""

    dataset: str | None = None


class EvaluationPublic(BaseModel):
    id: str
    model: str
    version: int
    dataset_name: str
    dataset_digest: str | None
    champion_version: int | None
    passed: bool
    report: dict[str, object]
    created_at: int
    created_by: str | None


class EvaluationList(BaseModel):
    evaluations: list[EvaluationPublic]


class RegisteredDatasetPublic(BaseModel):
    name: str
    digest: str
    schema_: list[dict[str, str]] = Field(alias="schema")
    num_rows: int
    source: str | None
    created_at: int | None
    content_digest: str

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RequestCreate(_Strict):
    alias: str
    version: int
    comment: str = ""


class DecisionCreate(_Strict):
    comment: str = ""


class CancelCreate(_Strict):
    reason: str = ""


class DecisionPublic(BaseModel):
    approver: str
    decision: str
    comment: str
    decided_at: int


class RequestPublic(BaseModel):
    id: str
    model: str
    alias: str
    version: int
    status: str
    required: int
    requested_by: str
    requested_at: int
    comment: str
    approvals: int
    decisions: list[DecisionPublic]


class RequestList(BaseModel):
    requests: list[RequestPublic]


class AuditEventPublic(BaseModel):
    seq: int
    ts: int
    actor: str
    action: str
    target_type: str
    target_id: str
    before: object
    after: object
    reason: str | None
    prev_hash: str
    hash: str


class AuditEventList(BaseModel):
    events: list[AuditEventPublic]


class VerifyPublic(BaseModel):
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
