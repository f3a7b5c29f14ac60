"""Users, tokens and roles over HTTP, plus ``whoami``.

Administering users and roles needs the global ``admin`` permission. Tokens are self-service: any
authenticated user (``read``) may list, create and revoke their *own* tokens; acting on another
user's tokens is checked inside the route (:func:`loopwright.server.auth.check`) and needs
``admin``. A created token's secret is in the answer once and never again.

The schemas live here because nothing else uses them; the client side is
:class:`loopwright.backends.rest.access.RestAccess`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from loopwright.errors import InvalidInput
from loopwright.governance.access import GLOBAL, AccessService, RoleBinding, TokenInfo, now_ms
from loopwright.server import auth
from loopwright.server.auth import Permission, require

router = APIRouter(tags=["access"])

READ = [require(Permission.READ)]
ADMIN = [require(Permission.ADMIN)]


def get_access(request: Request) -> AccessService:
    return auth.access_service(request)


Access = Annotated[AccessService, Depends(get_access)]


# -- schemas ------------------------------------------------------------------------------------


class UserPublic(BaseModel):
    name: str
    created_at: int
    disabled: bool


class UserCreate(BaseModel):
    name: str
    role: str | None = Field(None, description="Grant this role right away.")
    model: str = Field(GLOBAL, description="The role's scope: a model name or '*'.")


class UserList(BaseModel):
    users: list[UserPublic]


class BindingPublic(BaseModel):
    user: str
    role: str
    model: str
    granted_at: int
    granted_by: str | None = None


class BindingCreate(BaseModel):
    user: str
    role: str
    model: str = GLOBAL


class BindingList(BaseModel):
    roles: list[BindingPublic]


class TokenPublic(BaseModel):
    id: str
    user: str
    description: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None
    state: str


class TokenCreate(BaseModel):
    user: str | None = Field(None, description="Whose token; default: the caller.")
    description: str = ""
    expires_at: int | None = Field(None, description="Milliseconds since the epoch.")


class TokenCreated(BaseModel):
    token: TokenPublic
    secret: str = Field(description="The token itself: shown this once, never stored.")


class TokenList(BaseModel):
    tokens: list[TokenPublic]


class WhoAmI(BaseModel):
    user: str | None
    auth: bool
    token_id: str | None = None
    roles: list[BindingPublic]


def token_to_dict(info: TokenInfo) -> dict[str, Any]:
    return {**asdict(info), "state": info.state(now_ms())}


def binding_to_dict(binding: RoleBinding) -> dict[str, Any]:
    return {**asdict(binding), "role": binding.role.value}


# -- who am I -----------------------------------------------------------------------------------


@router.get("/whoami", response_model=WhoAmI, dependencies=READ)
def whoami(request: Request) -> dict[str, Any]:
    """The acting user and, with auth on, the token used and the roles it carries."""
    if not auth.auth_enabled(request):
        return {"user": auth.current_user(request), "auth": False, "roles": []}
    principal = auth.authenticate(request)
    roles = [binding_to_dict(b) for b in principal.bindings]
    return {"user": principal.user, "auth": True, "token_id": principal.token_id, "roles": roles}


# -- users --------------------------------------------------------------------------------------


@router.get("/users", response_model=UserList, dependencies=ADMIN)
def list_users(access: Access) -> dict[str, Any]:
    return {"users": [asdict(u) for u in access.list_users()]}


@router.post("/users", status_code=201, response_model=UserPublic, dependencies=ADMIN)
def create_user(body: UserCreate, access: Access) -> dict[str, Any]:
    return asdict(access.create_user(body.name, body.role, body.model))


@router.get("/users/{user}", response_model=UserPublic, dependencies=ADMIN)
def get_user(user: str, access: Access) -> dict[str, Any]:
    return asdict(access.get_user(user))


@router.post("/users/{user}/disable", response_model=UserPublic, dependencies=ADMIN)
def disable_user(user: str, access: Access) -> dict[str, Any]:
    """Every token of a disabled user is refused until the user is enabled again."""
    return asdict(access.set_user_disabled(user, True))


@router.post("/users/{user}/enable", response_model=UserPublic, dependencies=ADMIN)
def enable_user(user: str, access: Access) -> dict[str, Any]:
    return asdict(access.set_user_disabled(user, False))


# -- tokens -------------------------------------------------------------------------------------


@router.get("/tokens", response_model=TokenList, dependencies=READ)
def list_tokens(
    request: Request, access: Access, user: str | None = None, every: bool = False
) -> dict[str, Any]:
    """Your own tokens; ``user=NAME`` (someone else's) or ``every=true`` need admin."""
    if every:
        auth.check(request, Permission.ADMIN, None)
    owner = None if every else _owner(request, user)
    return {"tokens": [token_to_dict(i) for i in access.list_tokens(owner)]}


@router.post("/tokens", status_code=201, response_model=TokenCreated, dependencies=READ)
def create_token(body: TokenCreate, request: Request, access: Access) -> dict[str, Any]:
    owner = _owner(request, body.user)
    if owner is None:
        raise InvalidInput("user: say whose token this is", field="user")
    new = access.issue_token(owner, body.description, body.expires_at)
    return {"token": token_to_dict(new.info), "secret": new.secret}


@router.post("/tokens/{token_id}/revoke", response_model=TokenPublic, dependencies=READ)
def revoke_token(token_id: str, request: Request, access: Access) -> dict[str, Any]:
    """Your own token, or anyone's with admin; revoking twice is harmless."""
    _owner(request, access.get_token(token_id).user)
    return token_to_dict(access.revoke_token(token_id))


def _owner(request: Request, user: str | None) -> str | None:
    """``user`` if the caller may act on that user's tokens (self, or admin), else 403."""
    me = auth.current_user(request)
    if user is not None and user != me:
        auth.check(request, Permission.ADMIN, None)
    return user if user is not None else me


# -- roles --------------------------------------------------------------------------------------


@router.get("/roles", response_model=BindingList, dependencies=ADMIN)
def list_roles(access: Access, user: str | None = None, model: str | None = None) -> dict[str, Any]:
    return {"roles": [binding_to_dict(b) for b in access.bindings(user, model)]}


@router.post("/roles", status_code=201, response_model=BindingPublic, dependencies=ADMIN)
def grant_role(body: BindingCreate, access: Access) -> dict[str, Any]:
    return binding_to_dict(access.grant(body.user, body.role, body.model))


@router.delete("/roles", status_code=204, response_class=Response, dependencies=ADMIN)
def revoke_role(access: Access, user: str, role: str, model: str = GLOBAL) -> Response:
    access.revoke(user, role, model)
    return Response(status_code=204)
