"""Monitoring results over HTTP, read-only: windows, series, alerts and the HTML report.

Computing windows stays with ``loopwright monitor run`` / ``server --scheduler`` (they need the
prediction log); the server shows what they stored. Every route needs ``read``. A deployment is not
a registered model, so the permission is global, not per model.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from loopwright.errors import NotFound
from loopwright.monitoring.service import MonitorService
from loopwright.server.auth import Permission, require

router = APIRouter(tags=["monitoring"])

READ = [require(Permission.READ)]


def get_monitor(request: Request) -> MonitorService:
    monitor = getattr(request.app.state, "monitor", None)
    if monitor is None:
        raise NotFound("this server has no monitoring store", field="deployment")
    return monitor  # type: ignore[no-any-return]


Monitor = Annotated[MonitorService, Depends(get_monitor)]
WindowSpec = Annotated[str | None, Query(description="Window spec: 15m, 1h, 1d, ...")]


class WindowPublic(BaseModel):
    deployment: str
    window: str
    start_ms: int
    end_ms: int
    computed_at_ms: int
    n_predictions: int
    n_labelled: int


class WindowList(BaseModel):
    windows: list[WindowPublic]


class SeriesPublic(BaseModel):
    deployment: str
    name: str
    window: str
    points: list[tuple[int, float | None]]  # (window end ms, value); null = undefined


class AlertPublic(BaseModel):
    id: str
    deployment: str
    rule: str
    series: str
    window: str
    op: str
    state: str
    severity: str
    threshold: float
    value: float | None
    window_end_ms: int
    fired_at_ms: int
    message: str
    resolved_at_ms: int | None
    resolved_value: float | None
    resolution: str | None
    deliveries: dict[str, Any]


class AlertList(BaseModel):
    alerts: list[AlertPublic]


@router.get("/monitoring/{deployment}/windows", response_model=WindowList, dependencies=READ)
def list_windows(
    deployment: str,
    monitor: Monitor,
    window: WindowSpec = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """Computed windows, oldest first (the newest ``limit``)."""
    rows = monitor.windows(deployment, window, limit=limit)
    return {"windows": [w.to_dict(with_report=False) for w in rows]}


@router.get(
    "/monitoring/{deployment}/series/{name}", response_model=SeriesPublic, dependencies=READ
)
def get_series(
    deployment: str,
    name: str,
    monitor: Monitor,
    window: Annotated[str, Query(description="Window spec")] = "1d",
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> dict[str, Any]:
    """One series in time order: ``(window end ms, value)``, ``null`` where undefined."""
    points = monitor.series(deployment, name, window, start_ms=start_ms, end_ms=end_ms, limit=limit)
    return {
        "deployment": deployment,
        "name": name,
        "window": window,
        "points": [(end, None if math.isnan(v) else v) for end, v in points],
    }


@router.get("/monitoring/{deployment}/alerts", response_model=AlertList, dependencies=READ)
def list_alerts(
    deployment: str,
    monitor: Monitor,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """The deployment's alerts, newest first; ``state`` is ``firing`` or ``resolved``."""
    return {"alerts": [a.to_dict() for a in monitor.alerts(deployment, state, limit=limit)]}


@router.get(
    "/monitoring/{deployment}/report.html",
    response_class=HTMLResponse,
    dependencies=READ,
)
async def report_html(
    deployment: str,
    monitor: Monitor,
    window: Annotated[str, Query(description="Window spec")] = "1d",
    start_ms: int | None = None,
) -> HTMLResponse:
    """The HTML report of one window (default: the newest)."""
    html = await run_in_threadpool(monitor.report_html, deployment, window, start_ms)
    return HTMLResponse(html)
