"""The one exception tree of loopwright, and the tables that translate it at the edges.

Domains raise these; nothing else crosses a public boundary on purpose. The server turns them
into ``{"error": {"code", "message", "field"}}`` with the status from :data:`HTTP_STATUS`, the
REST backend reads the same table backwards and re-raises the same class, and the CLI exits
with :data:`EXIT_CODE` — so ``NotFound`` looks the same embedded, remote or on a terminal.

    LoopwrightError
    ├── InvalidInput          a value the caller sent is wrong (names the field)
    │   └── MalformedFilter   a search filter that does not parse (names the position)
    ├── NotFound
    ├── AlreadyExists
    ├── Conflict              the request contradicts stored state (e.g. a param re-logged)
    ├── PermissionDenied
    ├── Unauthenticated
    ├── GateFailed            a promotion was refused by a gate (carries the failed checks)
    ├── ApprovalRequired      a protected alias needs approvals that are not (yet) granted
    ├── PayloadTooLarge
    ├── ModelError            a served model raised on inputs that fit its signature
    ├── IntegrityError        stored bytes do not match their digest
    ├── SchemaOutdated        the metadata store needs ``loopwright db upgrade``
    └── StoreUnavailable      the store or server cannot be reached
        └── Overloaded        a model server's queue is full: retry later (503, Retry-After)

A stray ``KeyError`` or ``ValueError`` is a bug and surfaces as a 500 / traceback, never as one of
these.
"""

from __future__ import annotations

from typing import Any


class LoopwrightError(Exception):
    """Base of every error loopwright raises on purpose."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(LoopwrightError):
    code = "INVALID_INPUT"


class MalformedFilter(InvalidInput):
    """A filter expression that does not parse; ``details['position']`` is the 0-based offset."""

    code = "MALFORMED_FILTER"


class NotFound(LoopwrightError):
    code = "NOT_FOUND"


class AlreadyExists(LoopwrightError):
    code = "ALREADY_EXISTS"


class Conflict(LoopwrightError):
    code = "CONFLICT"


class PermissionDenied(LoopwrightError):
    code = "PERMISSION_DENIED"


class Unauthenticated(LoopwrightError):
    code = "UNAUTHENTICATED"


class GateFailed(LoopwrightError):
    code = "GATE_FAILED"


class ApprovalRequired(LoopwrightError):
    code = "APPROVAL_REQUIRED"


class PayloadTooLarge(LoopwrightError):
    code = "PAYLOAD_TOO_LARGE"


class ModelError(LoopwrightError):
    """A served model raised on these inputs (they were valid for its signature): 422."""

    code = "MODEL_ERROR"


class IntegrityError(LoopwrightError):
    code = "INTEGRITY_ERROR"


class SchemaOutdated(LoopwrightError):
    code = "SCHEMA_OUTDATED"


class StoreUnavailable(LoopwrightError):
    code = "STORE_UNAVAILABLE"


class Overloaded(StoreUnavailable):
    """More requests are waiting for a model than its queue holds; ``retry_after_s`` says when
    to come back. Refusing at once keeps latency bounded for the requests already admitted."""

    code = "OVERLOADED"


#: Exception class -> HTTP status. Read by the server (to answer) and the REST backend (to raise).
HTTP_STATUS: dict[type[LoopwrightError], int] = {
    InvalidInput: 400,
    MalformedFilter: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    AlreadyExists: 409,
    Conflict: 409,
    PayloadTooLarge: 413,
    GateFailed: 422,
    ApprovalRequired: 409,
    ModelError: 422,
    IntegrityError: 500,
    SchemaOutdated: 503,
    StoreUnavailable: 503,
    Overloaded: 503,
    LoopwrightError: 500,
}

#: Wire code -> class, so a client re-raises exactly what the server raised.
BY_CODE: dict[str, type[LoopwrightError]] = {cls.code: cls for cls in HTTP_STATUS}

#: Exception class -> CLI exit code. 2 means "you asked for something wrong", 1 "the system failed".
EXIT_CODE: dict[type[LoopwrightError], int] = {
    SchemaOutdated: 2,
    StoreUnavailable: 1,
    IntegrityError: 1,
    LoopwrightError: 2,
}


def http_status(exc: LoopwrightError) -> int:
    """The status for ``exc``, walking its class hierarchy so subclasses inherit a mapping."""
    return _lookup(HTTP_STATUS, exc, 500)


def exit_code(exc: LoopwrightError) -> int:
    return _lookup(EXIT_CODE, exc, 2)


def from_wire(body: dict[str, Any], status: int) -> LoopwrightError:
    """Rebuild the exception a server serialised with :meth:`LoopwrightError.to_dict`."""
    cls = BY_CODE.get(str(body.get("code")), LoopwrightError)
    message = str(body.get("message") or f"server answered HTTP {status}")
    return cls(message, field=body.get("field"), **(body.get("details") or {}))


def _lookup(table: dict[type[LoopwrightError], int], exc: LoopwrightError, default: int) -> int:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]
    return default
