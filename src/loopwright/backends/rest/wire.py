"""Entities <-> JSON, shared by the server and the REST backend so the two cannot drift.

Everything that crosses HTTP is built and read here: experiments, runs, dataset inputs, artifact
refs, search pages, the columnar metric batch, and the registry's models, versions, evaluations,
approval requests and audit events. Readers of untrusted input (the ``*_from_*``
functions the server uses) raise :class:`~loopwright.errors.InvalidInput` naming the exact field,
e.g. ``metrics.value[17]``.

Why metrics are columnar: a batch of 100k points as ``{"key": [...], "value": [...], ...}`` is a
quarter of the bytes of 100k objects, and both ends convert it with a few C-level passes instead of
a Python object per point. JSON has no NaN or infinity, so those travel as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (see :func:`~loopwright.tracking.entities.encode_float`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import orjson

from loopwright.errors import InvalidInput
from loopwright.governance.audit import AuditEvent, VerifyResult
from loopwright.registry.entities import (
    ApprovalDecision,
    ApprovalRequest,
    Decision,
    Evaluation,
    ModelVersion,
    RegisteredModel,
    RequestStatus,
)
from loopwright.tracking.entities import (
    ArtifactRef,
    DatasetInput,
    Experiment,
    Metric,
    Page,
    Run,
    RunStatus,
    encode_float,
)

__all__ = [
    "BATCH_FIELDS",
    "DATASET_FIELDS",
    "METRIC_COLUMNS",
    "anchor_to_str",
    "artifact_from_dict",
    "artifact_to_dict",
    "audit_event_from_dict",
    "audit_event_to_dict",
    "batch_to_json",
    "dataset_from_dict",
    "dataset_to_dict",
    "evaluation_from_dict",
    "evaluation_to_dict",
    "experiment_from_dict",
    "experiment_to_dict",
    "metrics_from_columns",
    "metrics_to_columns",
    "model_from_dict",
    "model_to_dict",
    "page_from_dict",
    "page_to_dict",
    "parse_anchor",
    "parse_batch",
    "registered_dataset_to_dict",
    "request_from_dict",
    "request_to_dict",
    "run_from_dict",
    "run_to_dict",
    "string_map",
    "verify_from_dict",
    "verify_to_dict",
    "version_from_dict",
    "version_to_dict",
]

METRIC_COLUMNS = ("key", "value", "step", "timestamp")
BATCH_FIELDS = ("metrics", "params", "tags")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NUMBER_TYPES = frozenset({float, int})
_STATUSES = {status.value: status for status in RunStatus}


# -- entities -------------------------------------------------------------------------------


def experiment_to_dict(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.id,
        "name": experiment.name,
        "created_at": experiment.created_at,
        "tags": dict(experiment.tags),
    }


def experiment_from_dict(data: dict[str, Any]) -> Experiment:
    return Experiment(
        id=data["id"], name=data["name"], created_at=data["created_at"], tags=data.get("tags") or {}
    )


def dataset_to_dict(dataset: DatasetInput) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "digest": dataset.digest,
        "schema": [dict(column) for column in dataset.schema],
        "num_rows": dataset.num_rows,
        "context": dataset.context,
        "source": dataset.source,
    }


def dataset_from_dict(data: dict[str, Any]) -> DatasetInput:
    return DatasetInput(
        name=data["name"],
        digest=data["digest"],
        schema=list(data.get("schema") or []),
        num_rows=data["num_rows"],
        context=data.get("context") or "train",
        source=data.get("source"),
    )


def artifact_to_dict(ref: ArtifactRef) -> dict[str, Any]:
    return {"path": ref.path, "digest": ref.digest, "size": ref.size}


def artifact_from_dict(data: dict[str, Any]) -> ArtifactRef:
    return ArtifactRef(path=data["path"], digest=data["digest"], size=data["size"])


def run_to_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "experiment_id": run.experiment_id,
        "name": run.name,
        "status": run.status.value,
        "start_time": run.start_time,
        "end_time": run.end_time,
        "user": run.user,
        "parent_run_id": run.parent_run_id,
        "heartbeat_at": run.heartbeat_at,
        "error": run.error,
        "params": dict(run.params),
        "tags": dict(run.tags),
        "metrics": {key: encode_float(value) for key, value in run.metrics.items()},
        "inputs": [dataset_to_dict(d) for d in run.inputs],
    }


def run_from_dict(data: dict[str, Any]) -> Run:
    """A run from its JSON object; positional and lookup-based, as a search page holds hundreds."""
    get = data.get
    inputs = get("inputs")
    return Run(
        data["id"],
        data["experiment_id"],
        data["name"],
        _run_status(data["status"]),
        data["start_time"],
        get("end_time"),
        get("user"),
        get("parent_run_id"),
        get("heartbeat_at"),
        get("error"),
        get("params") or {},
        get("tags") or {},
        _decode_map(get("metrics") or {}),
        [dataset_from_dict(d) for d in inputs] if inputs else [],
    )


def _run_status(value: str) -> RunStatus:
    return _STATUSES.get(value) or RunStatus(value)  # RunStatus raises on an unknown value


def _decode_map(values: dict[str, Any]) -> dict[str, float]:
    """Floats as they are (the common case, one C-level pass); ints and "NaN"... converted."""
    if set(map(type, values.values())) <= {float}:
        return values
    return {k: _decode_number(v) for k, v in values.items()}


def page_to_dict(page: Page) -> dict[str, Any]:
    """A page of runs (the only thing searched so far) as ``{"runs", "next_page_token"}``."""
    return {"runs": [run_to_dict(r) for r in page.items], "next_page_token": page.next_page_token}


def page_from_dict(data: dict[str, Any]) -> Page:
    return Page(
        items=[run_from_dict(r) for r in data.get("runs") or []],
        next_page_token=data.get("next_page_token"),
    )


# -- metric columns -------------------------------------------------------------------------


def metrics_to_columns(metrics: Sequence[Metric]) -> dict[str, list[Any]]:
    """Transpose points into columns, coercing numpy scalars and encoding non-finite values."""
    # One itemgetter pass per column: zip(*metrics) builds 100k tuples and is ~10x slower.
    keys, values, steps, stamps = (map(itemgetter(i), metrics) for i in range(4))
    return {
        "key": list(map(str, keys)),
        "value": [x if (x := float(v)) - x == 0 else encode_float(x) for v in values],
        "step": list(map(int, steps)),
        "timestamp": list(map(int, stamps)),
    }


def metrics_from_columns(columns: Any, where: str = "metrics") -> list[Metric]:
    """Validate columns from the wire and zip them into points; errors name ``where.col[i]``."""
    if not isinstance(columns, dict):
        raise _invalid(where, "expected an object of columns")
    _reject_unknown(columns, METRIC_COLUMNS, where)
    keys = _column(columns, "key", where, None)
    n = len(keys)
    steps = _column(columns, "step", where, n)
    stamps = _column(columns, "timestamp", where, n)
    raw_values = _column(columns, "value", where, n)
    _check_types(keys, {str}, f"{where}.key", "expected a string")
    _check_types(steps, {int}, f"{where}.step", "expected an integer")
    _check_types(stamps, {int}, f"{where}.timestamp", "expected an integer (ms since the epoch)")
    values = _decode_values(raw_values, f"{where}.value")
    return list(map(Metric, keys, values, steps, stamps))


def _column(columns: dict[str, Any], name: str, where: str, length: int | None) -> list[Any]:
    if name not in columns:
        raise _invalid(f"{where}.{name}", "Field required")
    values = columns[name]
    if not isinstance(values, list):
        raise _invalid(f"{where}.{name}", "expected an array")
    if length is not None and len(values) != length:
        raise _invalid(
            f"{where}.{name}",
            f"expected {length} items (as many as {where}.key), got {len(values)}",
        )
    return values


def _check_types(values: list[Any], allowed: set[type], field: str, message: str) -> None:
    """One C-level pass in the common case; the slow indexed scan runs only to name the culprit."""
    if set(map(type, values)) <= allowed:
        return
    _raise_first(values, lambda v: type(v) in allowed, field, message)


def _decode_values(values: list[Any], field: str) -> list[float]:
    kinds = set(map(type, values))
    if kinds <= {float}:
        return values
    if kinds <= _NUMBER_TYPES:
        return list(map(float, values))
    if kinds <= _NUMBER_TYPES | {str} and all(v in _NON_FINITE for v in values if type(v) is str):
        return [_NON_FINITE[v] if type(v) is str else float(v) for v in values]
    _raise_first(
        values,
        lambda v: type(v) in _NUMBER_TYPES or (type(v) is str and v in _NON_FINITE),
        field,
        'expected a number or "NaN", "Infinity", "-Infinity"',
    )
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_first(values: list[Any], ok: Callable[[Any], bool], field: str, message: str) -> None:
    for i, value in enumerate(values):
        if not ok(value):
            raise _invalid(f"{field}[{i}]", f"{message}, got {_describe(value)}")


def _decode_number(value: float | int | str) -> float:
    return _NON_FINITE[value] if isinstance(value, str) else float(value)


# -- the batch body -------------------------------------------------------------------------


def batch_to_json(
    metrics: Sequence[Metric], params: dict[str, str] | None, tags: dict[str, str] | None
) -> bytes:
    """The body of ``POST /runs/{id}/batch``; only the parts present are sent."""
    body: dict[str, Any] = {}
    if metrics:
        body["metrics"] = metrics_to_columns(metrics)
    if params:
        body["params"] = params
    if tags:
        body["tags"] = tags
    return orjson.dumps(body)


def parse_batch(body: bytes) -> tuple[list[Metric], dict[str, str], dict[str, str]]:
    """Parse and validate a batch with orjson; a pydantic model per point would be far slower."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("body", f"malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _invalid("body", "expected a JSON object")
    _reject_unknown(doc, BATCH_FIELDS, "")
    raw_metrics = doc.get("metrics")
    metrics = [] if raw_metrics is None else metrics_from_columns(raw_metrics, "metrics")
    return metrics, string_map(doc.get("params"), "params"), string_map(doc.get("tags"), "tags")


def string_map(value: Any, where: str) -> dict[str, str]:
    """A ``{str: str}`` object (``None`` means empty); errors name ``where.key``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(where, "expected an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(f"{where}.{key}", f"expected a string, got {_describe(item)}")
    return value


# -- helpers --------------------------------------------------------------------------------


def _reject_unknown(doc: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """A misspelt field would otherwise be dropped silently, losing the caller's data."""
    for name in doc:
        if name not in known:
            field = f"{where}.{name}" if where else name
            raise _invalid(field, f"unknown field; expected one of {', '.join(known)}")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", field=field)


def _describe(value: Any) -> str:
    shown = orjson.dumps(value).decode()
    return shown if len(shown) <= 40 else shown[:37] + "..."


# -- registry -------------------------------------------------------------------------------
# Registry entities carry only JSON-safe values except version metrics (non-finite floats are
# encoded as for runs), so each pair below is a plain field copy.


def model_to_dict(model: RegisteredModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "description": model.description,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "created_by": model.created_by,
        "tags": dict(model.tags),
        "aliases": dict(model.aliases),
        "policy": model.policy,
        "latest_version": model.latest_version,
    }


def model_from_dict(data: dict[str, Any]) -> RegisteredModel:
    return RegisteredModel(
        name=data["name"],
        description=data.get("description") or "",
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        created_by=data.get("created_by"),
        tags=data.get("tags") or {},
        aliases=data.get("aliases") or {},
        policy=data.get("policy"),
        latest_version=data.get("latest_version"),
    )


def version_to_dict(mv: ModelVersion) -> dict[str, Any]:
    return {
        "model": mv.model,
        "version": mv.version,
        "run_id": mv.run_id,
        "artifact_path": mv.artifact_path,
        "digest": mv.digest,
        "size": mv.size,
        "flavor": mv.flavor,
        "signature": mv.signature,
        "metrics": {key: encode_float(value) for key, value in mv.metrics.items()},
        "description": mv.description,
        "created_at": mv.created_at,
        "created_by": mv.created_by,
        "tags": dict(mv.tags),
        "aliases": list(mv.aliases),
    }


def version_from_dict(data: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        model=data["model"],
        version=data["version"],
        run_id=data.get("run_id"),
        artifact_path=data["artifact_path"],
        digest=data["digest"],
        size=data["size"],
        flavor=data["flavor"],
        signature=data.get("signature"),
        metrics={k: _decode_number(v) for k, v in (data.get("metrics") or {}).items()},
        description=data.get("description") or "",
        created_at=data["created_at"],
        created_by=data.get("created_by"),
        tags=data.get("tags") or {},
        aliases=list(data.get("aliases") or []),
    )


def evaluation_to_dict(ev: Evaluation) -> dict[str, Any]:
    return {
        "id": ev.id,
        "model": ev.model,
        "version": ev.version,
        "dataset_name": ev.dataset_name,
        "dataset_digest": ev.dataset_digest,
        "champion_version": ev.champion_version,
        "passed": ev.passed,
        "report": ev.report,
        "created_at": ev.created_at,
        "created_by": ev.created_by,
    }


def evaluation_from_dict(data: dict[str, Any]) -> Evaluation:
    return Evaluation(
        id=data["id"],
        model=data["model"],
        version=data["version"],
        dataset_name=data["dataset_name"],
        dataset_digest=data.get("dataset_digest"),
        champion_version=data.get("champion_version"),
        passed=bool(data["passed"]),
        report=data.get("report") or {},
        created_at=data["created_at"],
        created_by=data.get("created_by"),
    )


def request_to_dict(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "model": request.model,
        "alias": request.alias,
        "version": request.version,
        "status": request.status.value,
        "required": request.required,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "comment": request.comment,
        "approvals": request.approvals,
        "decisions": [
            {
                "approver": d.approver,
                "decision": d.decision.value,
                "comment": d.comment,
                "decided_at": d.decided_at,
            }
            for d in request.decisions
        ],
    }


def request_from_dict(data: dict[str, Any]) -> ApprovalRequest:
    decisions = [
        ApprovalDecision(
            d["approver"], Decision(d["decision"]), d.get("comment") or "", d["decided_at"]
        )
        for d in data.get("decisions") or []
    ]
    return ApprovalRequest(
        id=data["id"],
        model=data["model"],
        alias=data["alias"],
        version=data["version"],
        status=RequestStatus(data["status"]),
        required=data["required"],
        requested_by=data["requested_by"],
        requested_at=data["requested_at"],
        comment=data.get("comment") or "",
        decisions=decisions,
    )


def audit_event_to_dict(event: AuditEvent) -> dict[str, Any]:
    return event.to_dict()


def audit_event_from_dict(data: dict[str, Any]) -> AuditEvent:
    return AuditEvent.from_dict(data)


def verify_to_dict(result: VerifyResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def verify_from_dict(data: dict[str, Any]) -> VerifyResult:
    return VerifyResult(
        ok=bool(data["ok"]),
        checked=int(data["checked"]),
        head_seq=int(data["head_seq"]),
        head_hash=str(data["head_hash"]),
        first_bad_seq=data.get("first_bad_seq"),
        problem=data.get("problem"),
    )


#: The columns of a registered dataset that travel (``content_digest`` names its Parquet blob).
DATASET_FIELDS = ("name", "digest", "schema", "num_rows", "source", "created_at", "content_digest")


def registered_dataset_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in DATASET_FIELDS}


def anchor_to_str(anchor: tuple[int, str]) -> str:
    """An audit anchor as ``SEQ:HASH`` (what ``loopwright audit anchor`` prints)."""
    return f"{anchor[0]}:{anchor[1]}"


def parse_anchor(text: str, where: str = "anchor") -> tuple[int, str]:
    """``SEQ:HASH`` -> ``(seq, hash)``; anything else names ``where``."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise _invalid(where, f"expected SEQ:HASH (e.g. 42:<64 hex characters>), got {text!r}")
    return int(seq), digest
