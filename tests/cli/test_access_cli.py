"""``loopwright users|tokens|roles`` embedded (bootstrapping) and against a server (REST).

Embedded, the commands write the store directly; the token printed by ``tokens create`` is then
checked by authenticating with it. Remote, the app runs in-process behind a ``TestClient`` that
the CLI's access client is handed, so the whole REST path (headers, status codes, errors) runs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from loopwright.backends.fs.artifacts import FsArtifactStore
from loopwright.backends.sql.access import SqlAccessStore
from loopwright.backends.sql.store import SqlTrackingStore
from loopwright.cli import access as access_cli
from loopwright.cli.main import app
from loopwright.client import resolve_uris
from loopwright.config import Settings
from loopwright.errors import Unauthenticated
from loopwright.governance.access import AccessService, looks_like_token
from loopwright.server import create_app

ENV = {"COLUMNS": "250", "LOOPWRIGHT_TRACKING_URI": None, "LOOPWRIGHT_USER": None,
       "LOOPWRIGHT_TOKEN": None}  # fmt: skip
SERVER = "http://testserver"


def cli(uri: Path | str, *args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, ["--tracking-uri", str(uri), *args], env=ENV | env)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def access(store: Path) -> Iterator[AccessService]:
    """The same store the CLI writes, opened directly to check what it did."""
    cli(store, "users", "list")  # creates the store on first use
    tracking = SqlTrackingStore(resolve_uris(str(store), None)[0]).initialize()
    yield AccessService(SqlAccessStore(tracking))
    tracking.close()


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


# -- embedded: bootstrapping --------------------------------------------------------------------


def test_bootstrap_an_admin_and_their_token(store: Path, access: AccessService) -> None:
    assert "created user 'alice' as admin" in ok(cli(store, "users", "create", "alice",
                                                     "--role", "admin"))  # fmt: skip
    result = cli(store, "tokens", "create", "--user", "alice", "--expires-in", "30d",
                 "--description", "laptop")  # fmt: skip
    secret = ok(result).strip()
    assert looks_like_token(secret) and "not shown again" in result.stderr
    principal = access.authenticate(secret)
    assert principal.user == "alice"
    assert [(b.role.value, b.model) for b in principal.bindings] == [("admin", "*")]
    token = access.get_token(principal.token_id or "")
    assert token.description == "laptop" and token.expires_at is not None


def test_tokens_list_and_revoke(store: Path, access: AccessService) -> None:
    ok(cli(store, "users", "create", "bob"))
    secret = ok(cli(store, "tokens", "create", "--user", "bob")).strip()
    token_id = access.list_tokens("bob")[0].id
    listing = ok(cli(store, "tokens", "list"))
    assert token_id in listing and "active" in listing and secret not in listing
    assert f"token {token_id} of 'bob' is revoked" in ok(cli(store, "tokens", "revoke", token_id))
    assert "revoked" in ok(cli(store, "tokens", "list", "--user", "bob"))
    with pytest.raises(Unauthenticated, match="revoked"):
        access.authenticate(secret)


def test_a_token_needs_an_owner_embedded(store: Path, access: AccessService) -> None:
    result = cli(store, "tokens", "create")
    assert result.exit_code == 2 and "--user" in result.output


def test_bad_durations_and_roles_name_the_field(store: Path, access: AccessService) -> None:
    ok(cli(store, "users", "create", "bob"))
    result = cli(store, "tokens", "create", "--user", "bob", "--expires-in", "soon")
    assert result.exit_code == 2 and "30d" in result.output
    result = cli(store, "roles", "grant", "bob", "overlord")
    assert result.exit_code == 2 and "viewer, contributor, approver, admin" in result.output


def test_roles_grant_list_revoke(store: Path, access: AccessService) -> None:
    ok(cli(store, "users", "create", "boss", "--role", "admin"))
    ok(cli(store, "users", "create", "ann"))
    assert "ann is approver@churn" in ok(cli(store, "roles", "grant", "ann", "approver",
                                             "--model", "churn"))  # fmt: skip
    listing = ok(cli(store, "roles", "list", "ann"))
    assert "approver" in listing and "churn" in listing and "boss" not in listing
    assert "approver@churn" in ok(cli(store, "users", "list"))
    ok(cli(store, "roles", "revoke", "ann", "approver", "--model", "churn"))
    assert access.bindings(user="ann") == []
    missing = cli(store, "roles", "revoke", "ann", "approver", "--model", "churn")
    assert missing.exit_code == 2 and "no 'approver' role" in missing.output


def test_the_last_admin_cannot_be_removed(store: Path, access: AccessService) -> None:
    ok(cli(store, "users", "create", "root", "--role", "admin"))
    for args in (("roles", "revoke", "root", "admin"), ("users", "disable", "root")):
        result = cli(store, *args)
        assert result.exit_code == 2 and "last enabled global admin" in result.output
    ok(cli(store, "users", "create", "backup", "--role", "admin"))
    ok(cli(store, "users", "disable", "root"))
    assert "disabled" in ok(cli(store, "users", "list"))


def test_changes_are_audited(store: Path, access: AccessService) -> None:
    from loopwright.backends.sql.registry import SqlRegistryStore

    ok(cli(store, "users", "create", "root", "--role", "admin"))
    ok(cli(store, "tokens", "create", "--user", "root"))
    events = SqlRegistryStore(access.store.base).audit_events()  # type: ignore[attr-defined]
    assert [e.action for e in events] == ["user.create", "role.grant", "token.create"]


# -- against a server ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AccessService]:
    """An auth-on app in-process; the CLI's REST access client talks to it through a TestClient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from fastapi.testclient import TestClient

    tracking = SqlTrackingStore("sqlite:///" + str(tmp_path / "srv.db")).initialize()
    app_ = create_app(tracking, FsArtifactStore(tmp_path / "a"), Settings(auth=True))
    with TestClient(app_, base_url=SERVER) as client:
        patched = functools.partial(access_cli.open_access, http_client=client)
        monkeypatch.setattr(access_cli, "open_access", patched)
        yield app_.state.access
    tracking.close()


def test_a_server_needs_a_token(server: AccessService) -> None:
    result = cli(SERVER, "users", "list")
    assert result.exit_code == 2 and "LOOPWRIGHT_TOKEN" in result.output


def test_an_admin_administers_a_server_with_a_token(server: AccessService) -> None:
    server.create_user("root", "admin")
    admin = server.issue_token("root").secret
    ok(cli(SERVER, "users", "create", "vera", "--role", "viewer", LOOPWRIGHT_TOKEN=admin))
    assert "vera" in ok(cli(SERVER, "users", "list", LOOPWRIGHT_TOKEN=admin))
    secret = ok(cli(SERVER, "tokens", "create", "--user", "vera", LOOPWRIGHT_TOKEN=admin)).strip()
    assert server.authenticate(secret).user == "vera"
    assert server.store.bindings(user="vera")[0].granted_by == "root"
    listing = ok(cli(SERVER, "tokens", "list", "--all", LOOPWRIGHT_TOKEN=admin))
    assert "root" in listing and "vera" in listing


def test_a_viewer_manages_only_their_own_tokens(server: AccessService) -> None:
    server.create_user("root", "admin")
    server.create_user("vera", "viewer")
    mine = server.issue_token("vera").secret
    secret = ok(cli(SERVER, "tokens", "create", "--expires-in", "1h", LOOPWRIGHT_TOKEN=mine))
    assert server.authenticate(secret.strip()).user == "vera"
    denied = cli(SERVER, "users", "create", "eve", LOOPWRIGHT_TOKEN=mine)
    assert denied.exit_code == 2 and "lacks the 'admin' permission" in denied.output
    assert "vera" in ok(cli(SERVER, "tokens", "list", LOOPWRIGHT_TOKEN=mine))
    every = cli(SERVER, "tokens", "list", "--all", LOOPWRIGHT_TOKEN=mine)
    assert every.exit_code == 2 and "lacks the 'admin' permission" in every.output
    bad = cli(SERVER, "tokens", "list", LOOPWRIGHT_TOKEN="lw_" + "x" * 40)
    assert bad.exit_code == 2 and "unknown token" in bad.output


def test_server_auth_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopwright.cli import commands

    served: list[Settings] = []
    monkeypatch.setattr(commands, "serve", lambda settings, *rest: served.append(settings))
    ok(CliRunner().invoke(app, ["server", "--auth"], env=ENV | {"LOOPWRIGHT_AUTH": None}))
    ok(CliRunner().invoke(app, ["server"], env=ENV | {"LOOPWRIGHT_AUTH": None}))
    assert [s.auth for s in served] == [True, False]
