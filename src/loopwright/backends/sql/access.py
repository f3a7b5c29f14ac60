"""The SQL implementation of :class:`~loopwright.governance.access.AccessStore`.

Like :class:`~loopwright.backends.sql.registry.SqlRegistryStore` it wraps a
:class:`SqlTrackingStore` (one database, one transaction per change) and appends the audit event
of every change inside that transaction: ``user.create``, ``user.disable``, ``user.enable``,
``token.create``, ``token.revoke``, ``role.grant``, ``role.revoke``. Token events record the
token's id, user, description and expiry, never the secret nor its hash. Refreshing a token's
``last_used_at`` is bookkeeping, not a change of who may do what, so it is not audited.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from loopwright.backends.sql import schema as t
from loopwright.backends.sql.store import SqlTrackingStore, now_ms
from loopwright.errors import AlreadyExists, NotFound
from loopwright.governance.access import (
    GLOBAL,
    TOUCH_INTERVAL_MS,
    Role,
    RoleBinding,
    TokenInfo,
    User,
)
from loopwright.governance.audit import current_actor


class SqlAccessStore:
    """Users, token digests and role bindings in the metadata database."""

    def __init__(self, base: SqlTrackingStore) -> None:
        self.base = base
        self._read = base._read
        self._write = base._write
        self._audit = base.audit

    def close(self) -> None:
        self.base.close()

    # -- users ------------------------------------------------------------------------------

    def create_user(self, name: str) -> User:
        user = User(name=name, created_at=now_ms(), disabled=False)
        try:
            with self._write() as conn:
                conn.execute(t.users.insert().values(name=name, created_at=user.created_at,
                                                     disabled=False))  # fmt: skip
                self._audit(conn, "user.create", "user", name, after={"disabled": False})
        except SAIntegrityError:
            raise AlreadyExists(f"user {name!r} already exists", field="user") from None
        return user

    def get_user(self, name: str) -> User:
        with self._read() as conn:
            return self._user(conn, name)

    def list_users(self) -> list[User]:
        with self._read() as conn:
            rows = conn.execute(select(t.users).order_by(t.users.c.name))
            return [_user(r) for r in rows]

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        with self._write() as conn:
            before = self._user(conn, name)
            if before.disabled != disabled:
                conn.execute(update(t.users).where(t.users.c.name == name)
                             .values(disabled=disabled))  # fmt: skip
                action = "user.disable" if disabled else "user.enable"
                self._audit(conn, action, "user", name, before={"disabled": before.disabled},
                            after={"disabled": disabled})  # fmt: skip
        return self.get_user(name)

    def _user(self, conn: Connection, name: str) -> User:
        row = conn.execute(select(t.users).where(t.users.c.name == name)).first()
        if row is None:
            raise NotFound(f"user {name!r} not found", field="user")
        return _user(row)

    # -- tokens -----------------------------------------------------------------------------

    def create_token(
        self, user: str, token_hash: str, description: str, expires_at: int | None
    ) -> TokenInfo:
        info = TokenInfo(id=uuid.uuid4().hex, user=user, description=description,
                         created_at=now_ms(), expires_at=expires_at)  # fmt: skip
        with self._write() as conn:
            self._user(conn, user)
            conn.execute(t.api_tokens.insert().values(
                id=info.id, user=user, token_hash=token_hash, description=description,
                created_at=info.created_at, expires_at=expires_at,
            ))  # fmt: skip
            self._audit(conn, "token.create", "token", info.id,
                        after={"user": user, "description": description,
                               "expires_at": expires_at})  # fmt: skip
        return info

    def get_token(self, token_id: str) -> TokenInfo:
        with self._read() as conn:
            return self._token(conn, token_id)

    def find_token(self, token_hash: str) -> tuple[TokenInfo, User] | None:
        """The token with this digest and its user, in one query (the per-request lookup)."""
        a, u = t.api_tokens, t.users
        stmt = (select(a, u.c.created_at.label("user_created_at"), u.c.disabled)
                .join(u, u.c.name == a.c.user).where(a.c.token_hash == token_hash))  # fmt: skip
        with self._read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return _token(row), User(row.user, row.user_created_at, bool(row.disabled))

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        a = t.api_tokens
        stmt = select(a).order_by(a.c.created_at, a.c.id)
        if user is not None:
            stmt = stmt.where(a.c.user == user)
        with self._read() as conn:
            return [_token(r) for r in conn.execute(stmt)]

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Idempotent: revoking a revoked token changes (and records) nothing."""
        with self._write() as conn:
            current = self._token(conn, token_id)
            if current.revoked_at is None:
                revoked = now_ms()
                conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == token_id)
                             .values(revoked_at=revoked))  # fmt: skip
                self._audit(conn, "token.revoke", "token", token_id,
                            before={"user": current.user, "revoked_at": None},
                            after={"user": current.user, "revoked_at": revoked})  # fmt: skip
        return self.get_token(token_id)

    def touch_token(self, token_id: str, now: int) -> None:
        """The ``WHERE`` keeps concurrent requests from rewriting a fresh value."""
        a = t.api_tokens
        stale = (a.c.last_used_at.is_(None)) | (a.c.last_used_at < now - TOUCH_INTERVAL_MS)
        with self._write() as conn:
            conn.execute(update(a).where(a.c.id == token_id, stale).values(last_used_at=now))

    def _token(self, conn: Connection, token_id: str) -> TokenInfo:
        row = conn.execute(select(t.api_tokens).where(t.api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"token {token_id!r} not found", field="token_id")
        return _token(row)

    # -- role bindings ----------------------------------------------------------------------

    def grant(self, user: str, role: Role, model: str) -> RoleBinding:
        """Idempotent: granting an existing binding returns it and records nothing."""
        with self._write() as conn:
            self._user(conn, user)
            existing = self._binding(conn, user, role, model)
            if existing is not None:
                return existing
            binding = RoleBinding(user, role, model, now_ms(), current_actor())
            conn.execute(t.role_bindings.insert().values(
                user=user, role=role.value, model=model, granted_at=binding.granted_at,
                granted_by=binding.granted_by,
            ))  # fmt: skip
            self._audit(conn, "role.grant", "user", user,
                        after={"role": role.value, "model": model})  # fmt: skip
        return binding

    def revoke(self, user: str, role: Role, model: str) -> None:
        rb = t.role_bindings
        with self._write() as conn:
            if self._binding(conn, user, role, model) is None:
                raise NotFound(f"{user} has no {role.value!r} role on {_scope(model)}",
                               field="role")  # fmt: skip
            conn.execute(delete(rb).where(rb.c.user == user, rb.c.role == role.value,
                                          rb.c.model == model))  # fmt: skip
            self._audit(conn, "role.revoke", "user", user,
                        before={"role": role.value, "model": model})  # fmt: skip

    def bindings(self, user: str | None = None, model: str | None = None) -> list[RoleBinding]:
        rb = t.role_bindings
        stmt = select(rb).order_by(rb.c.user, rb.c.model, rb.c.role)
        if user is not None:
            stmt = stmt.where(rb.c.user == user)
        if model is not None:
            stmt = stmt.where(rb.c.model == model)
        with self._read() as conn:
            return [_binding(r) for r in conn.execute(stmt)]

    def _binding(self, conn: Connection, user: str, role: Role, model: str) -> RoleBinding | None:
        rb = t.role_bindings
        row = conn.execute(select(rb).where(rb.c.user == user, rb.c.role == role.value,
                                            rb.c.model == model)).first()  # fmt: skip
        return None if row is None else _binding(row)


def _user(row: Any) -> User:
    return User(name=row.name, created_at=row.created_at, disabled=bool(row.disabled))


def _token(row: Any) -> TokenInfo:
    return TokenInfo(id=row.id, user=row.user, description=row.description,
                     created_at=row.created_at, expires_at=row.expires_at,
                     revoked_at=row.revoked_at, last_used_at=row.last_used_at)  # fmt: skip


def _binding(row: Any) -> RoleBinding:
    return RoleBinding(user=row.user, role=Role(row.role), model=row.model,
                       granted_at=row.granted_at, granted_by=row.granted_by)  # fmt: skip


def _scope(model: str) -> str:
    return "every model" if model == GLOBAL else f"model {model!r}"
