"""Authentication and authorisation at the HTTP edge.

Every API route declares what it needs with ``dependencies=[require(Permission.X, model=...)]``;
a test enumerates the app's routes and fails on any route without such a declaration (``public``
routes such as ``/health`` say so explicitly with :func:`public`).

Permissions: ``read`` (viewer), ``write`` (contributor), ``approve`` (approver), ``admin``.
``model`` names the path parameter that identifies the registered model, so a role granted on
one model applies to routes about that model only. Usually the parameter *is* the model name
(``model="name"``); a parameter listed in :data:`MODEL_OF` names something that belongs to a
model, and the model is looked up (``model="request_id"``: the model of that approval request).
Which bindings grant what, inside and outside a model, is decided in
:mod:`loopwright.governance.access`.

With ``Settings.auth`` on, a route needs ``Authorization: Bearer <token>``: a missing, unknown,
revoked or expired token is a 401 ``UNAUTHENTICATED``, a missing permission a 403
``PERMISSION_DENIED`` naming the permission and the model. The token's user is the acting user
of the request (``acting_as``), so audit events carry it; ``X-Loopwright-User`` is ignored.

With auth off (the default, like the embedded SDK) every caller may do everything and is
identified by the ``X-Loopwright-User`` header, for the audit trail only.

Route-level checks run in an ``async`` dependency (the store lookups go to the thread pool): the
actor context variable set there is then visible to the endpoint, sync or async.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from loopwright.errors import NotFound, StoreUnavailable, Unauthenticated
from loopwright.governance.access import AccessService, Permission, Principal, authorize
from loopwright.governance.audit import acting_as

__all__ = [
    "MODEL_OF",
    "USER_HEADER",
    "Permission",
    "authenticate",
    "check",
    "current_user",
    "public",
    "require",
    "route_permission",
]

USER_HEADER = "X-Loopwright-User"
AUTHORIZATION = "Authorization"


def _model_of_request(request: Request, request_id: str) -> str:
    """The model an approval request is about (404 if there is no such request)."""
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        raise NotFound("this server has no model registry", field="request_id")
    return str(registry.store.get_request(request_id).model)


#: Path parameters naming something of a model, and how to find that model.
MODEL_OF: dict[str, Callable[[Request, str], str]] = {"request_id": _model_of_request}


def require(permission: Permission, model: str | None = None) -> Any:
    """A route dependency: authenticate, authorise, and attribute the request to its user."""

    async def dependency(request: Request) -> AsyncIterator[None]:
        user = await _caller(request, Permission(permission), model)
        with acting_as(user):
            yield

    dependency._lw_permission = (Permission(permission), model)  # type: ignore[attr-defined]
    return Depends(dependency)


def public() -> Any:
    """Marks a route that needs no authentication (health probes)."""

    def dependency() -> None:
        return None

    dependency._lw_permission = ("public", None)  # type: ignore[attr-defined]
    return Depends(dependency)


def route_permission(dependant_calls: list[Callable[..., Any]]) -> tuple[Any, Any] | None:
    """The ``(permission, model)`` a route declared, from its dependencies' callables."""
    for call in dependant_calls:
        marker = getattr(call, "_lw_permission", None)
        if marker is not None:
            return marker  # type: ignore[no-any-return]
    return None


def check(request: Request, permission: Permission, model: str | None) -> None:
    """A check inside a route, for a permission that depends on the body (an admin override).

    Raises ``PermissionDenied``; with auth off it allows everything, like :func:`require`.
    """
    if auth_enabled(request):
        authorize(authenticate(request), Permission(permission), model)


def current_user(request: Request) -> str | None:
    """The token's user with auth on; the declared ``X-Loopwright-User`` (or ``None``) without."""
    if auth_enabled(request):
        return authenticate(request).user
    return request.headers.get(USER_HEADER) or None


def authenticate(request: Request) -> Principal:
    """The caller's principal, from the bearer token; cached on the request once known."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    token = bearer_token(request.headers.get(AUTHORIZATION))
    principal = access_service(request).authenticate(token)
    request.state.principal = principal
    return principal


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated(
            "authentication required: send 'Authorization: Bearer <token>' "
            "(an admin creates one with `loopwright tokens create`)"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def auth_enabled(request: Request) -> bool:
    return bool(request.app.state.settings.auth)


def access_service(request: Request) -> AccessService:
    access = getattr(request.app.state, "access", None)
    if access is None:
        raise StoreUnavailable("auth is on but this server has no access store")
    return access  # type: ignore[no-any-return]


async def _caller(request: Request, permission: Permission, model: str | None) -> str | None:
    """Who the request acts as, after checking (off the event loop) that they may."""
    if not auth_enabled(request):
        return request.headers.get(USER_HEADER) or None
    principal = await run_in_threadpool(_authorise, request, permission, model)
    return principal.user


def _authorise(request: Request, permission: Permission, model_param: str | None) -> Principal:
    principal = authenticate(request)
    authorize(principal, permission, _route_model(request, model_param))
    return principal


def _route_model(request: Request, param: str | None) -> str | None:
    """The model a route is about: the path parameter's value, or what :data:`MODEL_OF` finds."""
    if param is None:
        return None
    value = str(request.path_params[param])
    resolve = MODEL_OF.get(param)
    return resolve(request, value) if resolve is not None else value
