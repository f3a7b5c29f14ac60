"""Dependencies: the stores and settings ``create_app`` was given, read from ``app.state``.

Routers never build stores; they receive them, so the same routes serve SQLite, PostgreSQL or a
test double.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from loopwright.config import Settings
from loopwright.registry.service import RegistryService
from loopwright.tracking.store import ArtifactStore, TrackingStore


def get_tracking(request: Request) -> TrackingStore:
    return request.app.state.tracking


def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


def get_registry(request: Request) -> RegistryService:
    return request.app.state.registry


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


Tracking = Annotated[TrackingStore, Depends(get_tracking)]
Artifacts = Annotated[ArtifactStore, Depends(get_artifacts)]
Registry = Annotated[RegistryService, Depends(get_registry)]
