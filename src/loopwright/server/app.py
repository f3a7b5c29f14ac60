"""The loopwright HTTP server: ``create_app`` wires routers, error handlers and the body limit.

The app holds no state of its own beyond the stores it is given, so the same function serves the
production server (``main.app_from_env``) and in-process tests over a temporary SQLite file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.governance.access import AccessService
from loopwright.registry.service import RegistryService
from loopwright.server import handlers
from loopwright.server.limits import BodySizeLimit
from loopwright.server.routers import access, blobs, experiments, health, monitoring, runs
from loopwright.server.routers import registry as registry_routes
from loopwright.server.schemas import ErrorResponse
from loopwright.tracking.store import ArtifactStore, TrackingStore

API_PREFIX = "/api/v1"

#: Documented on every API route; the body is always ``{"error": {...}}``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Invalid input (names the field)"),
        (401, "Missing, unknown, revoked or expired token (auth on)"),
        (403, "Permission denied (names the permission and the model)"),
        (404, "Not found"),
        (409, "Already exists or conflicts with stored state"),
        (413, "Request body too large"),
        (500, "Internal error"),
        (503, "Store unavailable or schema outdated"),
    ]
}


def create_app(
    tracking: TrackingStore,
    artifacts: ArtifactStore,
    settings: Settings,
    *,
    registry: RegistryService | None = None,
    close_stores: bool = False,
) -> FastAPI:
    """Build the app over ready stores; ``close_stores`` makes shutdown close the tracking store."""
    app = FastAPI(
        title="loopwright",
        version=health.package_version(),
        lifespan=_closing(tracking) if close_stores else None,
    )
    app.state.tracking = tracking
    app.state.artifacts = artifacts
    app.state.settings = settings
    app.state.registry = registry if registry is not None else _registry(tracking, artifacts)
    app.state.access = _access(tracking, settings)
    app.state.monitor = _monitor(tracking, app.state.registry)
    handlers.install(app)
    app.include_router(health.router)
    for module in (experiments, runs, blobs, registry_routes, access, monitoring):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_blob_bytes=settings.max_artifact_bytes,
        blob_prefix=f"{API_PREFIX}/blobs/",
    )
    return app


def _registry(tracking: TrackingStore, artifacts: ArtifactStore) -> RegistryService | None:
    """The registry over the same SQL database as tracking (a server always has one)."""
    from loopwright.backends.sql.registry import SqlRegistryStore
    from loopwright.backends.sql.store import SqlTrackingStore

    if not isinstance(tracking, SqlTrackingStore):
        return None
    from loopwright.backends.sql.monitoring import SqlMonitorStore

    profiles = SqlMonitorStore(tracking)
    return RegistryService(SqlRegistryStore(tracking), tracking, artifacts, profiles=profiles)


def _monitor(tracking: TrackingStore, registry: RegistryService | None) -> Any:
    """Monitoring results (read-only) over the same SQL database; None without one."""
    from loopwright.backends.sql.monitoring import SqlMonitorStore
    from loopwright.backends.sql.store import SqlTrackingStore
    from loopwright.monitoring.service import MonitorService

    if not isinstance(tracking, SqlTrackingStore):
        return None
    return MonitorService(store=SqlMonitorStore(tracking), registry=registry)


def _access(tracking: TrackingStore, settings: Settings) -> AccessService | None:
    """Users, tokens and roles live in the SQL database; auth without them is refused loudly."""
    from loopwright.backends.sql.access import SqlAccessStore
    from loopwright.backends.sql.store import SqlTrackingStore

    if isinstance(tracking, SqlTrackingStore):
        return AccessService(SqlAccessStore(tracking))
    if settings.auth:
        raise InvalidInput("auth needs a SQL metadata store (users, tokens and roles live there)",
                           field="auth")  # fmt: skip
    return None


def _closing(tracking: TrackingStore) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        tracking.close()

    return lifespan
