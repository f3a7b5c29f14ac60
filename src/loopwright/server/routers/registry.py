"""The model registry over HTTP: models, versions, aliases, gates, approvals, datasets, audit.

Every route is thin: it declares its permission, makes one
:class:`~loopwright.registry.service.RegistryService` call and returns a ``...Public`` schema. The
rules (gates, approvals, who may decide) live in the service and so run here, on the server,
whatever the client is. Model names travel as one percent-encoded path segment, so names with
spaces or dots work (``/`` and ``@`` are not allowed in model names at all).
"""

from __future__ import annotations

import io
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loopwright.backends.rest import wire
from loopwright.errors import InvalidInput
from loopwright.registry.entities import Decision, ModelRef, RequestStatus
from loopwright.registry.service import RegistryService
from loopwright.server import auth
from loopwright.server.auth import Permission, require
from loopwright.server.deps import Registry
from loopwright.server.handlers import validation_to_invalid_input
from loopwright.server.schemas import (
    AliasSet,
    AuditEventList,
    AuditEventPublic,
    CancelCreate,
    DecisionCreate,
    EvaluateCreate,
    EvaluationList,
    EvaluationPublic,
    ModelCreate,
    ModelList,
    ModelPublic,
    ModelUpdate,
    PolicySet,
    RegisteredDatasetPublic,
    RequestCreate,
    RequestList,
    RequestPublic,
    VerifyPublic,
    VersionCreate,
    VersionList,
    VersionPublic,
    VersionUpdate,
)

router = APIRouter(tags=["registry"])

READ = [require(Permission.READ, model="name")]
WRITE = [require(Permission.WRITE, model="name")]
ADMIN = [require(Permission.ADMIN, model="name")]
#: Routes about one approval request: roles on the request's model apply (auth looks it up).
ON_REQUEST = "request_id"

_POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PolicySet.model_json_schema()},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_PARQUET_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def require_permission(request: Request, permission: Permission, model: str | None) -> None:
    """A check inside a route, for a permission that depends on the body (an alias override).

    Defers to ``loopwright.server.auth.check`` when the auth layer provides it; with no such
    function (auth off) everyone may do everything, as for the route-level declarations.
    """
    check = getattr(auth, "check", None)
    if check is not None:
        check(request, permission, model)


# -- models -----------------------------------------------------------------------------------


@router.post(
    "/models",
    status_code=201,
    response_model=ModelPublic,
    dependencies=[require(Permission.WRITE)],
)
def create_model(body: ModelCreate, registry: Registry) -> dict[str, Any]:
    return wire.model_to_dict(registry.create_model(body.name, body.description, body.tags))


@router.get("/models", response_model=ModelList, dependencies=[require(Permission.READ)])
def search_models(
    registry: Registry,
    name_like: str | None = None,
    tag: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """``tag=KEY:VALUE``; ``name_like`` is a SQL ``LIKE`` pattern (``churn%``)."""
    found = registry.search_models(name_like, _tag(tag), alias)
    return {"models": [wire.model_to_dict(m) for m in found]}


@router.get("/models/{name}", response_model=ModelPublic, dependencies=READ)
def get_model(name: str, registry: Registry) -> dict[str, Any]:
    return wire.model_to_dict(registry.get_model(name))


@router.patch("/models/{name}", response_model=ModelPublic, dependencies=WRITE)
def update_model(name: str, body: ModelUpdate, registry: Registry) -> dict[str, Any]:
    model = registry.update_model(name, description=body.description, tags=body.tags)
    return wire.model_to_dict(model)


@router.put(
    "/models/{name}/policy",
    response_model=ModelPublic,
    dependencies=ADMIN,
    openapi_extra=_POLICY_BODY,
)
async def set_policy(
    name: str, request: Request, registry: Registry, reason: str | None = None
) -> dict[str, Any]:
    """JSON ``{"policy": {...} | "yaml text", "reason"}``, or a raw YAML body (``?reason=``)."""
    policy, reason = _policy_body(await request.body(), request.headers, reason)
    model = await run_in_threadpool(registry.set_policy, name, policy, reason)
    return wire.model_to_dict(model)


@router.delete("/models/{name}/policy", response_model=ModelPublic, dependencies=ADMIN)
def delete_policy(name: str, registry: Registry, reason: str | None = None) -> dict[str, Any]:
    return wire.model_to_dict(registry.set_policy(name, None, reason))


# -- versions ---------------------------------------------------------------------------------


@router.post(
    "/models/{name}/versions", status_code=201, response_model=VersionPublic, dependencies=WRITE
)
def register_version(name: str, body: VersionCreate, registry: Registry) -> dict[str, Any]:
    """A new version from the model a run logged (the model is created if new)."""
    mv = registry.register(
        name, body.run_id, body.path, description=body.description, tags=body.tags
    )
    return wire.version_to_dict(mv)


@router.get("/models/{name}/versions", response_model=VersionList, dependencies=READ)
def list_versions(
    name: str,
    registry: Registry,
    tag: str | None = None,
    alias: str | None = None,
    run_id: str | None = None,
    digest: str | None = None,
    dataset_digest: str | None = None,
) -> dict[str, Any]:
    found = registry.search_versions(name, tag=_tag(tag), alias=alias, run_id=run_id,
                                     digest=digest, dataset_digest=dataset_digest)  # fmt: skip
    return {"versions": [wire.version_to_dict(v) for v in found]}


@router.get("/versions", response_model=VersionList, dependencies=[require(Permission.READ)])
def search_versions(
    registry: Registry,
    model: str | None = None,
    tag: str | None = None,
    alias: str | None = None,
    run_id: str | None = None,
    digest: str | None = None,
    dataset_digest: str | None = None,
) -> dict[str, Any]:
    """Versions across models, e.g. every version trained on one dataset (``dataset_digest``)."""
    found = registry.search_versions(model, tag=_tag(tag), alias=alias, run_id=run_id,
                                     digest=digest, dataset_digest=dataset_digest)  # fmt: skip
    return {"versions": [wire.version_to_dict(v) for v in found]}


@router.get("/models/{name}/versions/{version}", response_model=VersionPublic, dependencies=READ)
def get_version(name: str, version: int, registry: Registry) -> dict[str, Any]:
    return wire.version_to_dict(registry.get_version(name, version))


@router.patch("/models/{name}/versions/{version}", response_model=VersionPublic, dependencies=WRITE)
def update_version(
    name: str, version: int, body: VersionUpdate, registry: Registry
) -> dict[str, Any]:
    """Tags only: everything else about a version is immutable."""
    return wire.version_to_dict(registry.set_version_tags(name, version, body.tags))


@router.get("/models/{name}/resolve", response_model=VersionPublic, dependencies=READ)
def resolve(name: str, ref: str, registry: Registry) -> dict[str, Any]:
    """``ref`` is a version number, ``latest`` or an alias such as ``champion``."""
    return wire.version_to_dict(registry.resolve(_model_ref(name, ref)))


# -- aliases ----------------------------------------------------------------------------------


@router.put("/models/{name}/aliases/{alias}", response_model=VersionPublic, dependencies=WRITE)
def set_alias(
    name: str, alias: str, body: AliasSet, request: Request, registry: Registry
) -> dict[str, Any]:
    """Protected aliases move only through passed gates and granted approvals (or an admin's
    written override of the gates)."""
    if body.override:
        require_permission(request, Permission.ADMIN, name)
    mv = registry.set_alias(name, alias, body.version, reason=body.reason, override=body.override)
    return wire.version_to_dict(mv)


@router.delete(
    "/models/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    dependencies=WRITE,
)
def delete_alias(name: str, alias: str, registry: Registry, reason: str | None = None) -> Response:
    registry.delete_alias(name, alias, reason)
    return Response(status_code=204)


# -- evaluations ------------------------------------------------------------------------------


@router.post(
    "/models/{name}/versions/{version}/evaluate",
    status_code=201,
    response_model=EvaluationPublic,
    dependencies=WRITE,
)
def evaluate(name: str, version: int, body: EvaluateCreate, registry: Registry) -> dict[str, Any]:
    """Run the version (and the champion) on a registered dataset, here, and keep the report."""
    return wire.evaluation_to_dict(registry.evaluate(f"{name}/{version}", body.dataset))


@router.get("/models/{name}/evaluations", response_model=EvaluationList, dependencies=READ)
def list_evaluations(name: str, registry: Registry, version: int | None = None) -> dict[str, Any]:
    found = registry.list_evaluations(name, version)
    return {"evaluations": [wire.evaluation_to_dict(e) for e in found]}


# -- datasets with content --------------------------------------------------------------------


@router.post(
    "/datasets",
    status_code=201,
    response_model=RegisteredDatasetPublic,
    dependencies=[require(Permission.WRITE)],
    openapi_extra=_PARQUET_BODY,
)
async def register_dataset(
    name: str, request: Request, registry: Registry, source: str | None = None
) -> dict[str, Any]:
    """The body is a Parquet file; evaluations can then name the dataset."""
    body = await request.body()
    return await run_in_threadpool(_register_dataset, registry, body, name, source)


def _register_dataset(
    registry: RegistryService, body: bytes, name: str, source: str | None
) -> dict[str, Any]:
    """Parsing and storing take a while: off the event loop, in one go."""
    digest = registry.register_dataset(_read_parquet(body), name, source)
    return wire.registered_dataset_to_dict(registry.find_dataset(digest))


@router.get(
    "/datasets/{name_or_digest}",
    response_model=RegisteredDatasetPublic,
    dependencies=[require(Permission.READ)],
)
def get_dataset(name_or_digest: str, registry: Registry) -> dict[str, Any]:
    """Its metadata; the Parquet content is the blob named by ``content_digest``."""
    return wire.registered_dataset_to_dict(registry.find_dataset(name_or_digest))


# -- approvals --------------------------------------------------------------------------------


@router.post(
    "/models/{name}/requests", status_code=201, response_model=RequestPublic, dependencies=WRITE
)
def request_alias(name: str, body: RequestCreate, registry: Registry) -> dict[str, Any]:
    request = registry.request_alias(name, body.alias, body.version, body.comment)
    return wire.request_to_dict(request)


@router.get("/requests", response_model=RequestList, dependencies=[require(Permission.READ)])
def list_requests(
    registry: Registry, model: str | None = None, status: str | None = None
) -> dict[str, Any]:
    found = registry.list_requests(model, _status(status))
    return {"requests": [wire.request_to_dict(r) for r in found]}


@router.get(
    "/requests/{request_id}",
    response_model=RequestPublic,
    dependencies=[require(Permission.READ, model=ON_REQUEST)],
)
def get_request(request_id: str, registry: Registry) -> dict[str, Any]:
    return wire.request_to_dict(registry.get_request(request_id))


@router.post(
    "/requests/{request_id}/approve",
    response_model=RequestPublic,
    dependencies=[require(Permission.APPROVE, model="request_id")],
)
def approve(request_id: str, body: DecisionCreate, registry: Registry) -> dict[str, Any]:
    return wire.request_to_dict(registry.decide(request_id, Decision.APPROVE, body.comment))


@router.post(
    "/requests/{request_id}/reject",
    response_model=RequestPublic,
    dependencies=[require(Permission.APPROVE, model="request_id")],
)
def reject(request_id: str, body: DecisionCreate, registry: Registry) -> dict[str, Any]:
    return wire.request_to_dict(registry.decide(request_id, Decision.REJECT, body.comment))


@router.post(
    "/requests/{request_id}/cancel",
    response_model=RequestPublic,
    dependencies=[require(Permission.WRITE, model="request_id")],
)
def cancel(request_id: str, body: CancelCreate, registry: Registry) -> dict[str, Any]:
    return wire.request_to_dict(registry.cancel_request(request_id, body.reason))


# -- audit ------------------------------------------------------------------------------------


@router.get(
    "/audit/events", response_model=AuditEventList, dependencies=[require(Permission.ADMIN)]
)
def audit_events(
    registry: Registry,
    after_seq: int = 0,
    limit: int = 1000,
    target_type: str | None = None,
    target_id: str | None = None,
) -> dict[str, Any]:
    """Events in sequence order after ``after_seq``: page by passing the last ``seq`` seen."""
    if limit < 1 or limit > 10_000:
        raise InvalidInput(f"limit must be 1..10000, got {limit}", field="limit")
    events = registry.audit_events(after_seq, limit, target_type, target_id)
    return {"events": [wire.audit_event_to_dict(e) for e in events]}


class DeploymentEventCreate(BaseModel):
    """An audit event a model server records (a canary rolled back); only ``deployment.*``
    actions on deployments, so the registry's own actions cannot be written from outside."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern=r"^deployment\.[a-z_.]{1,60}$")
    target_type: Literal["deployment"]
    target_id: str = Field(min_length=1, max_length=200)
    before: Any = None
    after: Any = None
    reason: str | None = Field(default=None, max_length=2000)


@router.post(
    "/audit/events",
    response_model=AuditEventPublic,
    status_code=201,
    dependencies=[require(Permission.WRITE)],
)
def record_event(body: DeploymentEventCreate, registry: Registry) -> dict[str, Any]:
    event = registry.record_event(body.action, body.target_type, body.target_id,
                                  before=body.before, after=body.after,
                                  reason=body.reason)  # fmt: skip
    return wire.audit_event_to_dict(event)


@router.get("/audit/verify", response_model=VerifyPublic, dependencies=[require(Permission.ADMIN)])
def audit_verify(registry: Registry, anchor: str | None = None) -> dict[str, Any]:
    """Walk the hash chain; ``anchor=SEQ:HASH`` also catches deleted newest events."""
    parsed = wire.parse_anchor(anchor) if anchor else None
    return wire.verify_to_dict(registry.verify_audit(parsed))


# -- request parsing --------------------------------------------------------------------------


def _tag(tag: str | None) -> tuple[str, str] | None:
    """``KEY:VALUE`` -> ``(key, value)`` (the value may contain ``:``)."""
    if tag is None:
        return None
    key, sep, value = tag.partition(":")
    if not sep or not key:
        raise InvalidInput(f"tag must look like KEY:VALUE, got {tag!r}", field="tag")
    return key, value


def _model_ref(name: str, ref: str) -> ModelRef:
    if ref.isdigit():
        return ModelRef(name, version=int(ref))
    return ModelRef(name, alias=ref)  # "latest" included: the service resolves it


def _status(status: str | None) -> str | None:
    if status is None:
        return None
    try:
        return RequestStatus(status.upper()).value
    except ValueError:
        valid = ", ".join(s.value for s in RequestStatus)
        raise InvalidInput(f"status must be one of {valid}, got {status!r}",
                           field="status") from None  # fmt: skip


def _policy_body(
    body: bytes, headers: Any, reason: str | None
) -> tuple[dict[str, Any] | str, str | None]:
    """JSON (a :class:`PolicySet`) or raw YAML text, told apart by the content type."""
    if "json" not in headers.get("content-type", ""):
        try:
            return body.decode("utf-8"), reason
        except UnicodeDecodeError:
            raise InvalidInput("body: a YAML policy must be UTF-8 text", field="body") from None
    try:
        parsed = PolicySet.model_validate_json(body)
    except ValidationError as exc:
        raise validation_to_invalid_input(exc.errors()) from None
    return parsed.policy, parsed.reason if parsed.reason is not None else reason


def _read_parquet(body: bytes) -> Any:
    import pandas as pd

    if not body:
        raise InvalidInput("body: expected a Parquet file, got an empty body", field="body")
    try:
        return pd.read_parquet(io.BytesIO(body))
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidInput(f"body: not a readable Parquet file ({exc})", field="body") from None
