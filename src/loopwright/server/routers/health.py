"""Liveness: answers without touching a store, so a load balancer can poll it cheaply."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from loopwright.server.auth import public
from loopwright.server.schemas import Health

router = APIRouter(tags=["health"])


def package_version() -> str:
    try:
        return version("loopwright")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@router.get("/health", response_model=Health, dependencies=[public()])
@router.get("/api/v1/health", response_model=Health, dependencies=[public()])
def health() -> dict[str, str]:
    return {"status": "ok", "version": package_version()}
