"""Helpers shared by the HTTP-edge tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import warnings
from typing import Any

import httpx

with warnings.catch_warnings():
    # Starlette asks for ``httpx2``; loopwright's REST backend is built on ``httpx``, which the
    # TestClient still is today. Silenced here only, so the import does not fail under -W error.
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

BASE_URL = "http://testserver"
MAX_REQUEST = 64 * 1024
MAX_ARTIFACT = 256 * 1024


def make_client(app: Any, **kw: Any) -> TestClient:
    return TestClient(app, base_url=BASE_URL, **kw)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the one error shape and return its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "field", "details"}
    return error
