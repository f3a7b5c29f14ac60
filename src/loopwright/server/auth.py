"""Authentication and authorisation at the HTTP edge.

Every API route declares what it needs with ``dependencies=[require(Permission.X, model=...)]``;
a test enumerates the app's routes and fails on any route without such a declaration (``public``
routes such as ``/health`` say so explicitly with :func:`public`).

Permissions: ``read`` (viewer), ``write`` (contributor), ``approve`` (approver), ``admin``.
``model`` names the path parameter holding the registered model name, so a role granted on one
model applies to routes about that model only.

With auth off (the default, like the embedded SDK) every caller may do everything and is
identified by the ``X-Loopwright-User`` header, for the audit trail only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Depends, Request

from loopwright.governance.audit import acting_as

USER_HEADER = "X-Loopwright-User"


class Permission(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    APPROVE = "approve"
    ADMIN = "admin"


def require(permission: Permission, model: str | None = None) -> Any:
    """A route dependency: authenticate, authorise, and attribute the request to its user."""

    def dependency(request: Request) -> Iterator[None]:
        user = request.headers.get(USER_HEADER) or None
        with acting_as(user):
            yield

    dependency._lw_permission = (permission, model)  # type: ignore[attr-defined]
    return Depends(dependency)


def public() -> Any:
    """Marks a route that needs no authentication (health probes)."""

    def dependency() -> None:
        return None

    dependency._lw_permission = ("public", None)  # type: ignore[attr-defined]
    return Depends(dependency)


def route_permission(dependant_calls: list[Callable[..., Any]]) -> tuple[Any, Any] | None:
    for call in dependant_calls:
        marker = getattr(call, "_lw_permission", None)
        if marker is not None:
            return marker  # type: ignore[no-any-return]
    return None
