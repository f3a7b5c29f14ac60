"""Who may do what: users, API tokens, roles and the permission rules the server enforces.

Roles are fixed bundles of permissions, granted to a user either globally (model ``"*"``) or on
one registered model:

==============  ======================================
``viewer``      read
``contributor`` read, write
``approver``    read, approve
``admin``       read, write, approve, admin
==============  ======================================

How a binding applies to a request (:func:`allows`):

* A request **about a model** (the route names it, directly or through an approval request) is
  allowed when a binding on that model, or a global one, grants the permission. An approver on
  ``churn`` cannot approve a request on ``fraud``.
* A request **not about a model** (experiments, runs, blobs, listings, creating a model) needs
  ``read`` or ``write`` from *any* binding, global or per-model: runs and experiments are a shared
  workspace, and a contributor scoped to one model must be able to log the runs its versions come
  from. ``approve`` and ``admin`` outside a model need a *global* binding: a per-model approver
  can never act beyond its model, and administering users, tokens, roles or the audit log is
  always global.

Tokens are ``lw_`` + 40 URL-safe random characters (240 bits), shown once when issued. Only their
SHA-256 is stored: a high-entropy secret needs no salt or slow hash, the digest is looked up by
index, and a stolen database yields no usable token. A token is refused when unknown, revoked,
expired, or when its user is disabled; its ``last_used_at`` is refreshed at most once a minute,
so authentication costs no write on most requests.

The domain owns these rules and the :class:`AccessStore` interface; ``backends/sql/access.py``
persists them (auditing every change), ``server/auth.py`` applies them to HTTP requests.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from loopwright.errors import Conflict, InvalidInput, PermissionDenied, Unauthenticated
from loopwright.tracking import validation as v

#: The model scope of a global binding.
GLOBAL = "*"
TOKEN_PREFIX = "lw_"
TOKEN_CHARS = 40
#: ``last_used_at`` is written at most this often per token.
TOUCH_INTERVAL_MS = 60_000

_TOKEN = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{{TOKEN_CHARS}}}$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,249}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Permission(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    APPROVE = "approve"
    ADMIN = "admin"


class Role(enum.StrEnum):
    VIEWER = "viewer"
    CONTRIBUTOR = "contributor"
    APPROVER = "approver"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.CONTRIBUTOR: frozenset({Permission.READ, Permission.WRITE}),
    Role.APPROVER: frozenset({Permission.READ, Permission.APPROVE}),
    Role.ADMIN: frozenset(Permission),
}

#: Granted outside a model by any binding (see the module docstring); the others need ``"*"``.
_ANY_SCOPE = frozenset({Permission.READ, Permission.WRITE})


# -- entities -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    name: str
    created_at: int
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class RoleBinding:
    user: str
    role: Role
    model: str  # GLOBAL or a registered model's name
    granted_at: int
    granted_by: str | None = None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Everything about a token except the secret, which is never stored."""

    id: str
    user: str
    description: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None

    def state(self, now: int) -> str:
        """``active``, ``revoked`` or ``expired`` — what a listing shows."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A just-issued token: ``secret`` exists only here, once."""

    info: TokenInfo
    secret: str


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user, the token used, and the user's bindings."""

    user: str
    token_id: str | None
    bindings: tuple[RoleBinding, ...] = field(default_factory=tuple)


# -- rules --------------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def user_name(value: object) -> str:
    """Names appear in the audit trail and in URLs: letters, digits and ``. _ @ + -``."""
    if not isinstance(value, str) or not _USER.match(value):
        raise InvalidInput(
            f"user name must be 1..250 letters, digits or '._@+-' (not starting with a symbol), "
            f"got {value!r}",
            field="user",
        )
    return value


def model_scope(value: object) -> str:
    """``"*"`` (every model) or one model name (which need not be registered yet)."""
    if value == GLOBAL:
        return GLOBAL
    v.key("model", value)
    assert isinstance(value, str)
    if "/" in value or "@" in value:
        raise InvalidInput(f"model name {value!r} cannot contain '/' or '@'", field="model")
    return value


def role(value: object) -> Role:
    try:
        return Role(str(value).lower())
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise InvalidInput(f"role must be one of {valid}, got {value!r}", field="role") from None


def generate_token() -> str:
    """``lw_`` + 40 URL-safe characters from :mod:`secrets` (30 random bytes)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_CHARS * 3 // 4)


def hash_token(token: str) -> str:
    """SHA-256 hex: what the store keeps and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(token: str) -> bool:
    """Shape check before any lookup, so junk never reaches the database."""
    return bool(_TOKEN.match(token))


def parse_duration(text: str) -> int:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w`` -> milliseconds."""
    match = _DURATION.match(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(
            f"duration must look like 30d, 12h, 45m, 90s or 2w, got {text!r}", field="expires_in"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def check_token(info: TokenInfo | None, user: User | None, now: int) -> None:
    """Refuse a token that is unknown, revoked, expired, or whose user is disabled."""
    if info is None or user is None:
        raise Unauthenticated("unknown token")
    state = info.state(now)
    if state == "revoked":
        raise Unauthenticated("this token was revoked")
    if state == "expired":
        raise Unauthenticated(f"this token expired at {iso(info.expires_at)}")
    if user.disabled:
        raise Unauthenticated("this token's user is disabled")


def needs_touch(info: TokenInfo, now: int) -> bool:
    return info.last_used_at is None or now - info.last_used_at >= TOUCH_INTERVAL_MS


def permissions(bindings: Iterable[RoleBinding], model: str | None) -> set[Permission]:
    """What ``bindings`` grant on ``model`` (``None``: outside any model), per the module rules."""
    granted: set[Permission] = set()
    for b in bindings:
        perms = ROLE_PERMISSIONS[b.role]
        if b.model == GLOBAL or b.model == model:
            granted |= perms
        elif model is None:
            granted |= perms & _ANY_SCOPE
    return granted


def allows(bindings: Iterable[RoleBinding], permission: Permission, model: str | None) -> bool:
    return Permission(permission) in permissions(bindings, model)


def authorize(principal: Principal, permission: Permission, model: str | None) -> None:
    """Raise ``PermissionDenied`` naming the user, the missing permission and the model."""
    if allows(principal.bindings, permission, model):
        return
    where = f"on model {model!r}" if model is not None else "globally"
    raise PermissionDenied(
        f"{principal.user} lacks the {Permission(permission).value!r} permission {where}",
        permission=Permission(permission).value,
        model=model,
    )


def iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


# -- the store interface and the service over it -------------------------------------------------


class AccessStore(Protocol):
    """Persistence of users, token digests and role bindings; every change is audited."""

    def create_user(self, name: str) -> User: ...
    def get_user(self, name: str) -> User: ...
    def list_users(self) -> list[User]: ...
    def set_user_disabled(self, name: str, disabled: bool) -> User: ...
    def create_token(self, user: str, token_hash: str, description: str,
                     expires_at: int | None) -> TokenInfo: ...  # fmt: skip
    def get_token(self, token_id: str) -> TokenInfo: ...
    def find_token(self, token_hash: str) -> tuple[TokenInfo, User] | None: ...
    def list_tokens(self, user: str | None = None) -> list[TokenInfo]: ...
    def revoke_token(self, token_id: str) -> TokenInfo: ...
    def touch_token(self, token_id: str, now: int) -> None: ...
    def grant(self, user: str, role: Role, model: str) -> RoleBinding: ...
    def revoke(self, user: str, role: Role, model: str) -> None: ...
    def bindings(self, user: str | None = None, model: str | None = None) -> list[RoleBinding]: ...


class AccessService:
    """The access operations the CLI and the server call, with the rules applied here.

    The same calls exist over HTTP (:class:`loopwright.backends.rest.access.RestAccess`), so the
    CLI works embedded or against a server.
    """

    def __init__(self, store: AccessStore) -> None:
        self.store = store

    def create_user(self, name: str, role: Role | str | None = None,
                    model: str = GLOBAL) -> User:  # fmt: skip
        granted = None if role is None else (_role(role), model_scope(model))  # checked first
        user = self.store.create_user(user_name(name))
        if granted is not None:
            self.store.grant(name, *granted)
        return user

    def get_user(self, name: str) -> User:
        return self.store.get_user(user_name(name))

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def set_user_disabled(self, name: str, disabled: bool = True) -> User:
        if disabled:
            self._keep_an_admin(user_name(name))
        return self.store.set_user_disabled(user_name(name), disabled)

    def issue_token(self, user: str, description: str = "",
                    expires_at: int | None = None) -> NewToken:  # fmt: skip
        """Generate a secret, store only its hash, and hand the secret back once."""
        if expires_at is not None and expires_at <= now_ms():
            raise InvalidInput("expires_at must be in the future", field="expires_at")
        secret = generate_token()
        info = self.store.create_token(user_name(user), hash_token(secret), description or "",
                                       expires_at)  # fmt: skip
        return NewToken(info, secret)

    def get_token(self, token_id: str) -> TokenInfo:
        return self.store.get_token(v.identifier("token_id", token_id))

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        return self.store.list_tokens(None if user is None else user_name(user))

    def revoke_token(self, token_id: str) -> TokenInfo:
        return self.store.revoke_token(v.identifier("token_id", token_id))

    def grant(self, user: str, role_: Role | str, model: str = GLOBAL) -> RoleBinding:
        return self.store.grant(user_name(user), role(role_), model_scope(model))

    def revoke(self, user: str, role_: Role | str, model: str = GLOBAL) -> None:
        r, scope = role(role_), model_scope(model)
        if r is Role.ADMIN and scope == GLOBAL:
            self._keep_an_admin(user_name(user))
        self.store.revoke(user_name(user), r, scope)

    def bindings(self, user: str | None = None, model: str | None = None) -> list[RoleBinding]:
        return self.store.bindings(
            None if user is None else user_name(user), None if model is None else model_scope(model)
        )

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for, or ``Unauthenticated`` saying why not."""
        found = self.store.find_token(hash_token(token)) if looks_like_token(token) else None
        info, user = found if found is not None else (None, None)
        now = now_ms()
        check_token(info, user, now)
        assert info is not None
        if needs_touch(info, now):
            self.store.touch_token(info.id, now)
        return Principal(info.user, info.id, tuple(self.store.bindings(user=info.user)))

    def _keep_an_admin(self, leaving: str) -> None:
        """Refuse to remove the last enabled global admin: nobody could administer the server."""
        admins = _global_admins(self.store.bindings(model=GLOBAL))
        if leaving not in admins:
            return
        enabled = {u.name for u in self.store.list_users() if not u.disabled}
        if not (set(admins) & enabled) - {leaving}:
            raise Conflict(f"{leaving} is the last enabled global admin; grant admin to "
                           "another user first", field="user")  # fmt: skip


_role = role  # for methods whose parameter `role` shadows the function


def _global_admins(bindings: Sequence[RoleBinding]) -> list[str]:
    return [b.user for b in bindings if b.role is Role.ADMIN and b.model == GLOBAL]
