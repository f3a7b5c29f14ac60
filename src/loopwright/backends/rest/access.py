"""Users, tokens and roles over HTTP: the calls of ``AccessService``, made on a server.

Used by ``loopwright users|tokens|roles`` when the tracking URI is a server. It reuses the
tracking store's HTTP helper, so the token in ``Settings.token`` authenticates every call and the
server's ``UNAUTHENTICATED`` / ``PERMISSION_DENIED`` come back as the same exceptions.
"""

from __future__ import annotations

from typing import Any

import orjson

from loopwright.backends.rest.store import RestTrackingStore
from loopwright.governance.access import (
    GLOBAL,
    NewToken,
    Role,
    RoleBinding,
    TokenInfo,
    User,
)

__all__ = ["RestAccess"]

_JSON = {"content-type": "application/json"}


class RestAccess:
    """The access administration of a loopwright server, called over its REST API."""

    def __init__(self, tracking: RestTrackingStore) -> None:
        self._http = tracking._http  # one HTTP boundary for the whole client

    def __repr__(self) -> str:
        return f"RestAccess({self._http.base_url!r})"

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", ("whoami",))  # type: ignore[no-any-return]

    def create_user(self, name: str, role: Role | str | None = None,
                    model: str = GLOBAL) -> User:  # fmt: skip
        role_name = None if role is None else str(role)
        body = {"name": name, "role": role_name, "model": model}
        return _user(self._call("POST", ("users",), body))

    def get_user(self, name: str) -> User:
        return _user(self._call("GET", ("users", name)))

    def list_users(self) -> list[User]:
        return [_user(u) for u in self._call("GET", ("users",))["users"]]

    def set_user_disabled(self, name: str, disabled: bool = True) -> User:
        return _user(self._call("POST", ("users", name, "disable" if disabled else "enable"), {}))

    def issue_token(self, user: str, description: str = "",
                    expires_at: int | None = None) -> NewToken:  # fmt: skip
        body = {"user": user, "description": description, "expires_at": expires_at}
        data = self._call("POST", ("tokens",), body)
        return NewToken(_token(data["token"]), data["secret"])

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """One user's tokens, or with ``None`` every user's (admin), as embedded."""
        params = {"every": "true"} if user is None else {"user": user}
        return [_token(t) for t in self._call("GET", ("tokens",), params=params)["tokens"]]

    def revoke_token(self, token_id: str) -> TokenInfo:
        return _token(self._call("POST", ("tokens", token_id, "revoke"), {}))

    def grant(self, user: str, role: Role | str, model: str = GLOBAL) -> RoleBinding:
        body = {"user": user, "role": str(role), "model": model}
        return _binding(self._call("POST", ("roles",), body))

    def revoke(self, user: str, role: Role | str, model: str = GLOBAL) -> None:
        self._call("DELETE", ("roles",), params={"user": user, "role": str(role), "model": model})

    def bindings(self, user: str | None = None, model: str | None = None) -> list[RoleBinding]:
        params = {k: x for k, x in {"user": user, "model": model}.items() if x is not None}
        return [_binding(b) for b in self._call("GET", ("roles",), params=params)["roles"]]

    def _call(self, method: str, segments: tuple[str, ...], body: Any = None,
              params: dict[str, Any] | None = None) -> Any:  # fmt: skip
        url = self._http.url(*segments)
        if body is None:
            return self._http.call(method, url, params=params)
        return self._http.call(method, url, content=orjson.dumps(body), params=params,
                               headers=_JSON)  # fmt: skip


def _user(data: dict[str, Any]) -> User:
    return User(name=data["name"], created_at=data["created_at"], disabled=data["disabled"])


def _token(data: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=data["id"],
        user=data["user"],
        description=data["description"],
        created_at=data["created_at"],
        expires_at=data.get("expires_at"),
        revoked_at=data.get("revoked_at"),
        last_used_at=data.get("last_used_at"),
    )


def _binding(data: dict[str, Any]) -> RoleBinding:
    return RoleBinding(
        user=data["user"],
        role=Role(data["role"]),
        model=data["model"],
        granted_at=data["granted_at"],
        granted_by=data.get("granted_by"),
    )
