"""The loopwright HTTP server (FastAPI): ``create_app`` over stores, ``serve`` to run it."""

from loopwright.server.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
