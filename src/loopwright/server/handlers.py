"""The server's exception handlers: every failure leaves as ``{"error": {...}}`` JSON.

Only loopwright's own exception tree maps to 4xx (through :data:`loopwright.errors.HTTP_STATUS`);
FastAPI's validation errors become ``InvalidInput`` naming the field, routing errors keep their
status, and anything else is a bug: a 500 with the traceback in the log, never a guess at a 404.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from loopwright.errors import InvalidInput, LoopwrightError, NotFound
from loopwright.server.responses import error_response, json_response

log = logging.getLogger("loopwright.server")

#: Routing-level statuses (no loopwright class raised them) -> wire code.
_HTTP_CODES = {400: InvalidInput.code, 404: NotFound.code, 405: "METHOD_NOT_ALLOWED"}


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoopwrightError, _loopwright_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _loopwright_error(request: Request, exc: LoopwrightError) -> Response:
    return error_response(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(validation_to_invalid_input(exc.errors()))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    response = json_response({"error": {"code": code, "message": message}}, exc.status_code)
    response.headers.update(exc.headers or {})
    return response


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    body = {"code": "INTERNAL_ERROR", "message": f"internal server error ({type(exc).__name__})"}
    return json_response({"error": body}, 500)


def validation_to_invalid_input(errors: Any) -> InvalidInput:
    """The first error names the field; all of them travel in ``details['errors']``."""
    described = [_describe(e) for e in errors] or [("body", "body: invalid request")]
    field, message = described[0]
    details = {"errors": [{"field": f, "message": m} for f, m in described]}
    return InvalidInput(message, field=field, **details)


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        position = error["loc"][-1]
        return "body", f"body: malformed JSON at position {position}: {reason}"
    field = _field_name(tuple(error.get("loc") or ()))
    return field, f"{field}: {error.get('msg', 'invalid value')}"


def _field_name(loc: tuple[Any, ...]) -> str:
    """``("body", "datasets", 0, "schema")`` -> ``datasets[0].schema``."""
    parts = loc[1:] if len(loc) > 1 and loc[0] in {"body", "query", "path", "header"} else loc
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"
