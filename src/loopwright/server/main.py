"""Running the server: ``app_from_env`` (the uvicorn factory) and ``serve``.

Workers are separate processes that each call ``app_from_env``, so ``serve`` hands them the
settings through ``LOOPWRIGHT_*`` variables (the one way ``Settings`` is read from outside), after
checking once in the parent that the stores open: an outdated schema stops ``serve`` with
``SchemaOutdated`` instead of a crash loop of workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields

import uvicorn
from fastapi import FastAPI

from loopwright.config import PREFIX, Settings
from loopwright.errors import LoopwrightError
from loopwright.server.app import create_app

log = logging.getLogger("loopwright.server")

APP_FACTORY = "loopwright.server.main:app_from_env"


def app_from_env() -> FastAPI:
    """Settings from ``LOOPWRIGHT_*``, stores opened once; raises ``SchemaOutdated`` if stale."""
    from loopwright.client import open_stores  # the client imports backends: keep start-up lazy

    settings = Settings.from_env()
    try:
        tracking, artifacts = open_stores(settings)
    except LoopwrightError as exc:
        log.error("loopwright server cannot start: %s", exc)
        raise
    return create_app(tracking, artifacts, settings, close_stores=True)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Run uvicorn with ``workers`` processes; returns when the server stops."""
    _check_stores(settings)
    os.environ.update(settings_to_env(settings))
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers)


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The inverse of ``Settings.from_env`` for every field that is set."""
    env: dict[str, str] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        env[PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _check_stores(settings: Settings) -> None:
    """Fail in the parent (one clear error) rather than in every worker."""
    from loopwright.client import open_stores

    tracking, _ = open_stores(settings)
    tracking.close()
