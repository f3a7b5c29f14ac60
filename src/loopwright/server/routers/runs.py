"""Runs: lifecycle, the metric batch (the hot path), history, search, inputs and artifact refs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loopwright.backends.rest import wire
from loopwright.server.auth import Permission, require
from loopwright.server.deps import Tracking
from loopwright.server.responses import json_response
from loopwright.server.schemas import (
    ArtifactList,
    ArtifactsCreate,
    BatchCreate,
    InputsCreate,
    MetricHistory,
    RunCreate,
    RunEnd,
    RunPage,
    RunPublic,
    RunSearch,
)
from loopwright.tracking.store import TrackingStore

router = APIRouter(tags=["runs"])
READ = [require(Permission.READ)]
WRITE = [require(Permission.WRITE)]


def _documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the route parses itself (so FastAPI cannot infer it)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # nested models are already published under components
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/runs", status_code=201, response_model=RunPublic, dependencies=WRITE)
def create_run(body: RunCreate, tracking: Tracking) -> dict[str, Any]:
    return wire.run_to_dict(tracking.create_run(**body.model_dump()))


@router.get("/runs/{run_id}", response_model=RunPublic, dependencies=READ)
def get_run(run_id: str, tracking: Tracking) -> dict[str, Any]:
    return wire.run_to_dict(tracking.get_run(run_id))


@router.post("/runs/{run_id}/end", response_model=RunPublic, dependencies=WRITE)
def end_run(run_id: str, body: RunEnd, tracking: Tracking) -> dict[str, Any]:
    run = tracking.end_run(run_id, body.status, end_time=body.end_time, error=body.error)
    return wire.run_to_dict(run)


@router.post("/runs/{run_id}/resume", response_model=RunPublic, dependencies=WRITE)
def resume_run(run_id: str, tracking: Tracking) -> dict[str, Any]:
    return wire.run_to_dict(tracking.resume_run(run_id))


@router.post(
    "/runs/{run_id}/batch",
    status_code=204,
    response_class=Response,
    openapi_extra=_documented_body(BatchCreate),
    dependencies=WRITE,
)
async def log_batch(run_id: str, request: Request, tracking: Tracking) -> Response:
    """Columnar metrics plus params and tags, in one store transaction; with an
    ``Idempotency-Key`` header, a batch sent again (its answer was lost) is applied once."""
    body = await request.body()
    key = request.headers.get("idempotency-key")
    await run_in_threadpool(_ingest, tracking, run_id, body, key)
    return Response(status_code=204)


def _ingest(tracking: TrackingStore, run_id: str, body: bytes, key: str | None = None) -> None:
    """Parsing 100k points takes milliseconds: do it off the event loop, with the store call.
    ``key``: the request's ``Idempotency-Key`` (a resent batch is applied once)."""
    metrics, params, tags = wire.parse_batch(body)
    tracking.log_batch(run_id, metrics, params, tags, idempotency_key=key)


@router.get("/runs/{run_id}/metric-history", response_model=MetricHistory, dependencies=READ)
def get_metric_history(run_id: str, key: str, tracking: Tracking) -> Response:
    history = tracking.get_metric_history(run_id, key)
    return json_response({"metrics": wire.metrics_to_columns(history)})


@router.post("/runs/search", response_model=RunPage, dependencies=READ)
def search_runs(body: RunSearch, tracking: Tracking) -> Response:
    """Encoded straight to JSON: ``RunPage`` documents the shape, but validating and serialising
    a page of full runs through pydantic cost more than the search itself."""
    return json_response(wire.page_to_dict(tracking.search_runs(**body.model_dump())))


@router.post("/runs/{run_id}/inputs", status_code=204, response_class=Response, dependencies=WRITE)
def log_inputs(run_id: str, body: InputsCreate, tracking: Tracking) -> Response:
    datasets = [wire.dataset_from_dict(d.model_dump(by_alias=True)) for d in body.datasets]
    tracking.log_inputs(run_id, datasets)
    return Response(status_code=204)


@router.post(
    "/runs/{run_id}/artifacts", status_code=204, response_class=Response, dependencies=WRITE
)
def log_artifacts(run_id: str, body: ArtifactsCreate, tracking: Tracking) -> Response:
    tracking.log_artifacts(
        run_id, [wire.artifact_from_dict(a.model_dump()) for a in body.artifacts]
    )
    return Response(status_code=204)


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactList, dependencies=READ)
def list_artifacts(run_id: str, tracking: Tracking, prefix: str = "") -> dict[str, Any]:
    return {
        "artifacts": [wire.artifact_to_dict(a) for a in tracking.list_artifacts(run_id, prefix)]
    }
