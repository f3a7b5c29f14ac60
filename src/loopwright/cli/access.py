"""``loopwright users``, ``tokens`` and ``roles``: administering who may do what.

Embedded (``--tracking-uri`` a directory or database URL) the commands work directly on the
store, which is how the first admin and their token are created::

    loopwright users create alice --role admin --tracking-uri ./store
    loopwright tokens create --user alice --expires-in 30d --tracking-uri ./store

Against a server (``http(s)://``) they call its REST admin routes and need a token
(``LOOPWRIGHT_TOKEN``): an admin's, or for ``tokens`` on your own account, any valid one. Without
a token they refuse to run, rather than fail with a 401 half-way.

``--user`` is the global option (hoisted from anywhere on the line): for these commands it names
the *subject* (whose tokens to create or list; default ``LOOPWRIGHT_USER``). Changes are
attributed to the OS user embedded, and to the token's user on a server.

Layers as in the rest of the CLI: plain operations over an access service (embedded
:class:`~loopwright.governance.access.AccessService` or remote
:class:`~loopwright.backends.rest.access.RestAccess`, the same calls), render functions, Typer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from loopwright.cli.render import MISSING, timestamp
from loopwright.client import open_stores
from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.governance.access import (
    GLOBAL,
    AccessService,
    NewToken,
    RoleBinding,
    TokenInfo,
    User,
    now_ms,
    parse_duration,
)

if TYPE_CHECKING:
    import httpx

users_app = typer.Typer(help="Create, list, disable and enable users.", no_args_is_help=True)
tokens_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
roles_app = typer.Typer(help="Grant, revoke and list roles.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    """Mount ``users``, ``tokens`` and ``roles`` on the root app."""
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(roles_app, name="roles")


# -- operations ---------------------------------------------------------------------------------


def is_remote(settings: Settings) -> bool:
    return (settings.tracking_uri or "").startswith(("http://", "https://"))


def open_access(settings: Settings, http_client: httpx.Client | None = None) -> tuple[Any, Any]:
    """``(access, store to close)``: the store itself embedded, the REST admin routes remote."""
    if is_remote(settings):
        return _remote_access(settings, http_client)
    from loopwright.backends.sql.access import SqlAccessStore
    from loopwright.backends.sql.store import SqlTrackingStore

    tracking, _ = open_stores(settings)
    if not isinstance(tracking, SqlTrackingStore):  # pragma: no cover - URIs are SQL or http
        raise InvalidInput("users, tokens and roles need a SQL store", field="tracking_uri")
    return AccessService(SqlAccessStore(tracking)), tracking


def _remote_access(settings: Settings, http_client: httpx.Client | None) -> tuple[Any, Any]:
    from loopwright.backends.rest.access import RestAccess
    from loopwright.backends.rest.store import RestTrackingStore, auth_headers

    if not settings.token:
        raise InvalidInput(
            f"{settings.tracking_uri} is a server: set LOOPWRIGHT_TOKEN to an admin's token (or "
            "your own, for your own tokens), or run against the store's database directly",
            field="token",
        )
    tracking = RestTrackingStore(settings.tracking_uri or "", client=http_client,
                                 timeout=settings.http_timeout_s,
                                 headers=auth_headers(settings))  # fmt: skip
    return RestAccess(tracking), tracking


def expires_at(expires_in: str | None, now: int | None = None) -> int | None:
    """``30d`` -> the absolute expiry in milliseconds; ``None`` never expires."""
    if expires_in is None:
        return None
    return (now if now is not None else now_ms()) + parse_duration(expires_in)


def token_owner(settings: Settings, access: Any) -> str:
    """``--user``, else on a server the token's own user; embedded there is no default."""
    if settings.user:
        return settings.user
    if is_remote(settings):
        return str(access.whoami()["user"])
    raise InvalidInput("--user: say whose token this is", field="user")


def create_token(access: Any, user: str, description: str, expires_in: str | None) -> NewToken:
    return access.issue_token(user, description, expires_at(expires_in))  # type: ignore[no-any-return]


# -- rendering ----------------------------------------------------------------------------------


def users_table(users: Sequence[User], bindings: Sequence[RoleBinding]) -> Table:
    roles: dict[str, list[str]] = {}
    for b in bindings:
        roles.setdefault(b.user, []).append(binding_label(b))
    table = Table("user", "status", "roles", "created", title="Users")
    for u in users:
        status = "disabled" if u.disabled else "active"
        table.add_row(u.name, status, ", ".join(roles.get(u.name, [])) or MISSING,
                      timestamp(u.created_at))  # fmt: skip
    return table


def tokens_table(tokens: Sequence[TokenInfo], now: int) -> Table:
    table = Table("id", "user", "state", "description", "created", "expires", "last used",
                  title="API tokens")  # fmt: skip
    for t in tokens:
        table.add_row(t.id, t.user, t.state(now), t.description or MISSING,
                      timestamp(t.created_at), timestamp(t.expires_at),
                      timestamp(t.last_used_at))  # fmt: skip
    return table


def roles_table(bindings: Sequence[RoleBinding]) -> Table:
    table = Table("user", "role", "model", "granted", "by", title="Role bindings")
    for b in bindings:
        table.add_row(b.user, b.role.value, b.model, timestamp(b.granted_at),
                      b.granted_by or MISSING)  # fmt: skip
    return table


def binding_label(binding: RoleBinding) -> str:
    return (
        binding.role.value if binding.model == GLOBAL else f"{binding.role.value}@{binding.model}"
    )


# -- commands -----------------------------------------------------------------------------------

#: Declared for ``--help`` only: the root hoists ``--user`` into ``Settings.user``, read from there.
Subject = Annotated[
    str | None,
    typer.Option("--user", help="Whose tokens (default LOOPWRIGHT_USER; on a server: yours)."),
]
ModelScope = Annotated[str, typer.Option("--model", help="A model name, or '*' for every model.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj.settings  # type: ignore[no-any-return]


def _access(ctx: typer.Context) -> Any:
    access, store = open_access(_settings(ctx))
    ctx.call_on_close(store.close)
    return access


def _scope(model: str) -> str:
    return "every model" if model == GLOBAL else f"model {model!r}"


def _out(ctx: typer.Context, renderable: Any) -> None:
    ctx.find_root().obj.out.print(renderable)


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[
        str | None, typer.Option(help="viewer, contributor, approver or admin.")
    ] = None,
    model: ModelScope = GLOBAL,
) -> None:
    """Create a user, optionally granting a role (globally unless --model)."""
    user = _access(ctx).create_user(name, role, model)
    granted = f" as {role} on {_scope(model)}" if role else ""
    _out(ctx, f"created user {user.name!r}{granted}")


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """Users, whether they are disabled, and their roles."""
    access = _access(ctx)
    _out(ctx, users_table(access.list_users(), access.bindings()))


@users_app.command("disable")
def users_disable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Refuse every token of this user (until enabled again)."""
    _access(ctx).set_user_disabled(name, True)
    _out(ctx, f"user {name!r} is disabled")


@users_app.command("enable")
def users_enable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    _access(ctx).set_user_disabled(name, False)
    _out(ctx, f"user {name!r} is enabled")


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    user: Subject = None,
    expires_in: Annotated[
        str | None, typer.Option(help="e.g. 30d, 12h, 2w (default: never expires).")
    ] = None,
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue a token and print it ONCE on stdout (only its hash is stored)."""
    access = _access(ctx)
    new = create_token(access, token_owner(_settings(ctx), access), description, expires_in)
    expires = timestamp(new.info.expires_at) if new.info.expires_at else "never"
    notice = f"token {new.info.id} for {new.info.user!r}, expires {expires}; store it now:"
    ctx.find_root().obj.err.print(notice + " it is not shown again")
    ctx.find_root().obj.out.out(new.secret, highlight=False)


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    user: Subject = None,
    every: Annotated[bool, typer.Option("--all", help="Every user's tokens (admin).")] = False,
) -> None:
    """Tokens (never the secrets): --user's, else yours on a server and everyone's embedded."""
    access, settings = _access(ctx), _settings(ctx)
    scoped = not every and bool(settings.user or is_remote(settings))
    owner = token_owner(settings, access) if scoped else None
    _out(ctx, tokens_table(access.list_tokens(owner), now_ms()))


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="The token's id.")]
) -> None:
    """Refuse the token from now on (revoking twice is harmless)."""
    info = _access(ctx).revoke_token(token_id)
    _out(ctx, f"token {info.id} of {info.user!r} is revoked")


@roles_app.command("grant")
def roles_grant(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="viewer, contributor, approver or admin.")],
    model: ModelScope = GLOBAL,
) -> None:
    """Grant a role globally, or on one model with --model."""
    binding = _access(ctx).grant(user, role, model)
    _out(ctx, f"{binding.user} is {binding_label(binding)}")


@roles_app.command("revoke")
def roles_revoke(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="viewer, contributor, approver or admin.")],
    model: ModelScope = GLOBAL,
) -> None:
    """Remove one binding (the last global admin cannot be removed)."""
    _access(ctx).revoke(user, role, model)
    _out(ctx, f"revoked {role} on {_scope(model)} from {user}")


@roles_app.command("list")
def roles_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Argument(help="Only this user's roles.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this scope.")] = None,
) -> None:
    """Role bindings, by user."""
    _out(ctx, roles_table(_access(ctx).bindings(user, model)))
