"""JSON responses built with orjson, and the one shape every error takes on the wire."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from loopwright.errors import LoopwrightError, Unauthenticated, http_status


def json_response(content: Any, status_code: int = 200) -> Response:
    """orjson is several times faster than ``json.dumps`` on the big metric payloads."""
    return Response(
        orjson.dumps(content, default=str), status_code=status_code, media_type="application/json"
    )


def error_response(exc: LoopwrightError) -> Response:
    """``{"error": {"code", "message", "field"?, "details"?}}`` with the status from the table;
    a 401 also says how to authenticate (``WWW-Authenticate``, RFC 9110)."""
    response = json_response({"error": exc.to_dict()}, http_status(exc))
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="loopwright"'
    return response
