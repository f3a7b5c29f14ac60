"""Access control end to end: a real SQLite store, the in-process app with ``auth`` on, tokens.

Each test seeds users and roles straight into the store (as ``loopwright users create`` would)
and then speaks HTTP only, so what is checked is what a remote caller meets: 401 for a missing
or bad token, 403 naming the missing permission and the model, and audit events attributed to
the token's user whatever ``X-Loopwright-User`` claims.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from http_helpers import BASE_URL, error_of, make_client

from loopwright.backends.fs.artifacts import FsArtifactStore
from loopwright.backends.rest.access import RestAccess
from loopwright.backends.rest.store import RestTrackingStore, auth_headers
from loopwright.backends.sql.access import SqlAccessStore
from loopwright.backends.sql.registry import SqlRegistryStore
from loopwright.backends.sql.store import SqlTrackingStore
from loopwright.config import Settings
from loopwright.errors import PermissionDenied, Unauthenticated
from loopwright.governance.access import (
    AccessService,
    Permission,
    Role,
    generate_token,
    hash_token,
    now_ms,
)
from loopwright.governance.audit import acting_as
from loopwright.server import auth, create_app

API = f"{BASE_URL}/api/v1"
DIGEST = "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlTrackingStore]:
    tracking = SqlTrackingStore("sqlite:///" + str(tmp_path / "lw.db")).initialize()
    yield tracking
    tracking.close()


@pytest.fixture
def access(store: SqlTrackingStore) -> AccessService:
    return AccessService(SqlAccessStore(store))


@pytest.fixture
def app(store: SqlTrackingStore, tmp_path: Path) -> Any:
    return create_app(store, FsArtifactStore(tmp_path / "artifacts"), Settings(auth=True))


@pytest.fixture
def client(app: Any) -> Iterator[httpx.Client]:
    with make_client(app) as test_client:
        yield test_client


Token = Callable[..., dict[str, str]]


@pytest.fixture
def token(access: AccessService) -> Token:
    """``token("alice", "viewer", model="churn")`` -> headers carrying a fresh token."""

    def make(user: str, role: str | None = None, model: str = "*") -> dict[str, str]:
        if user not in {u.name for u in access.list_users()}:
            access.create_user(user)
        if role is not None:
            access.grant(user, role, model)
        return bearer(access.issue_token(user).secret)

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def models(store: SqlTrackingStore) -> SqlRegistryStore:
    """Two registered models with one version each, made directly in the store."""
    registry = SqlRegistryStore(store)
    for name in ("churn", "fraud"):
        registry.create_model(name)
        registry.create_version(name, run_id=None, artifact_path="model.pkl", digest=DIGEST,
                                size=1, flavor="sklearn", signature=None, metrics={})  # fmt: skip
    return registry


def request_champion(client: httpx.Client, headers: dict[str, str], model: str) -> str:
    body = {"alias": "champion", "version": 1, "comment": "ship it"}
    response = client.post(f"{API}/models/{model}/requests", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def approve(client: httpx.Client, headers: dict[str, str], request_id: str) -> httpx.Response:
    return client.post(f"{API}/requests/{request_id}/approve", json={}, headers=headers)


# -- authentication ---------------------------------------------------------------------------


def test_a_missing_token_is_a_401_saying_how_to_send_one(client: httpx.Client) -> None:
    refused = client.get(f"{API}/experiments")
    assert refused.headers["www-authenticate"] == 'Bearer realm="loopwright"'
    error = error_of(refused, 401, "UNAUTHENTICATED")
    assert "Authorization: Bearer" in error["message"]


def test_a_header_that_is_not_a_bearer_token_is_a_401(client: httpx.Client) -> None:
    response = client.get(f"{API}/experiments", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert "Bearer <token>" in error_of(response, 401, "UNAUTHENTICATED")["message"]


@pytest.mark.parametrize("secret", ["lw_" + "A" * 40, "lw_short", "not-a-token"])
def test_an_unknown_token_is_a_401(client: httpx.Client, secret: str) -> None:
    response = client.get(f"{API}/experiments", headers=bearer(secret))
    assert error_of(response, 401, "UNAUTHENTICATED")["message"] == "unknown token"


def test_a_revoked_token_is_refused(client: httpx.Client, access: AccessService) -> None:
    access.create_user("alice", Role.VIEWER)
    new = access.issue_token("alice")
    assert client.get(f"{API}/experiments", headers=bearer(new.secret)).status_code == 200
    access.revoke_token(new.info.id)
    response = client.get(f"{API}/experiments", headers=bearer(new.secret))
    assert "revoked" in error_of(response, 401, "UNAUTHENTICATED")["message"]


def test_an_expired_token_is_refused(client: httpx.Client, access: AccessService) -> None:
    access.create_user("alice", Role.VIEWER)
    secret = generate_token()
    access.store.create_token("alice", hash_token(secret), "old", expires_at=now_ms() - 1)
    response = client.get(f"{API}/experiments", headers=bearer(secret))
    assert "expired" in error_of(response, 401, "UNAUTHENTICATED")["message"]


def test_a_disabled_users_tokens_are_refused_until_enabled(
    client: httpx.Client, access: AccessService, token: Token
) -> None:
    headers = token("alice", "viewer")
    token("root", "admin")  # the last admin may not be disabled; alice is not it
    access.set_user_disabled("alice", True)
    response = client.get(f"{API}/experiments", headers=headers)
    assert "disabled" in error_of(response, 401, "UNAUTHENTICATED")["message"]
    access.set_user_disabled("alice", False)
    assert client.get(f"{API}/experiments", headers=headers).status_code == 200


def test_last_used_is_recorded_at_most_once_a_minute(
    client: httpx.Client, access: AccessService
) -> None:
    access.create_user("alice", Role.VIEWER)
    new = access.issue_token("alice")
    client.get(f"{API}/experiments", headers=bearer(new.secret))
    first = access.get_token(new.info.id).last_used_at
    assert first is not None
    client.get(f"{API}/experiments", headers=bearer(new.secret))
    assert access.get_token(new.info.id).last_used_at == first


def test_health_needs_no_token(client: httpx.Client) -> None:
    assert client.get(f"{BASE_URL}/health").status_code == 200
    assert client.get(f"{API}/health").status_code == 200


# -- authorisation ----------------------------------------------------------------------------


def test_a_viewer_reads_but_cannot_write(client: httpx.Client, token: Token) -> None:
    admin, viewer = token("root", "admin"), token("vera", "viewer")
    experiment = client.post(f"{API}/experiments", json={"name": "e"}, headers=admin).json()
    assert client.get(f"{API}/experiments", headers=viewer).status_code == 200
    response = client.post(f"{API}/runs", json={"experiment_id": experiment["id"]}, headers=viewer)
    error = error_of(response, 403, "PERMISSION_DENIED")
    assert "vera" in error["message"] and "'write'" in error["message"]
    assert error["details"] == {"permission": "write", "model": None}


def test_a_contributor_cannot_approve(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    requester, contributor = token("carl", "contributor"), token("cora", "contributor")
    request_id = request_champion(client, requester, "churn")
    error = error_of(approve(client, contributor, request_id), 403, "PERMISSION_DENIED")
    assert "'approve'" in error["message"] and "'churn'" in error["message"]


def test_an_approver_cannot_approve_their_own_request(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    token("ann", "contributor")
    ann = token("ann", "approver")  # contributor and approver: may request and approve
    request_id = request_champion(client, ann, "churn")
    error = error_of(approve(client, ann, request_id), 403, "PERMISSION_DENIED")
    assert "ann requested this change" in error["message"]
    assert approve(client, token("bob", "approver"), request_id).status_code == 200


def test_a_per_model_approver_approves_only_that_model(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    requester = token("carl", "contributor")
    approver = token("ann", "approver", model="churn")
    on_fraud = request_champion(client, requester, "fraud")
    error = error_of(approve(client, approver, on_fraud), 403, "PERMISSION_DENIED")
    assert error["details"] == {"permission": "approve", "model": "fraud"}
    on_churn = request_champion(client, requester, "churn")
    response = approve(client, approver, on_churn)
    assert response.status_code == 200, response.text
    assert response.json()["decisions"][0]["approver"] == "ann"


def test_per_model_roles_apply_to_model_routes_and_grant_reading_elsewhere(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    scoped = token("cora", "contributor", model="churn")
    tags = {"tags": {"team": "growth"}}
    assert client.patch(f"{API}/models/churn", json=tags, headers=scoped).status_code == 200
    response = client.patch(f"{API}/models/fraud", json=tags, headers=scoped)
    assert error_of(response, 403, "PERMISSION_DENIED")["details"]["model"] == "fraud"
    assert client.get(f"{API}/models/fraud", headers=scoped).status_code == 403
    assert client.get(f"{API}/experiments", headers=scoped).status_code == 200
    response = client.get(f"{API}/audit/events", headers=scoped)
    assert "globally" in error_of(response, 403, "PERMISSION_DENIED")["message"]


def test_check_enforces_body_dependent_permissions(
    client: httpx.Client, app: Any, token: Token
) -> None:
    """``auth.check`` (used for admin-only gate overrides) reuses the request's principal."""
    calls: list[str] = []

    @app.get("/api/v1/_probe", dependencies=[auth.require(Permission.READ)])
    def probe(request: Request) -> dict[str, str]:
        calls.append(auth.current_user(request) or "")
        auth.check(request, Permission.ADMIN, "churn")
        return {"ok": "yes"}

    assert client.get(f"{API}/_probe", headers=token("root", "admin")).status_code == 200
    response = client.get(f"{API}/_probe", headers=token("vera", "viewer"))
    assert error_of(response, 403, "PERMISSION_DENIED")["details"]["model"] == "churn"
    assert calls == ["root", "vera"]


# -- attribution --------------------------------------------------------------------------------


def test_audit_events_carry_the_token_user_not_the_declared_one(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    headers = {**token("alice", "contributor"), auth.USER_HEADER: "mallory"}
    response = client.post(f"{API}/experiments", json={"name": "mine"}, headers=headers)
    assert response.status_code == 201, response.text
    events = models.audit_events(target_type="experiment", target_id=response.json()["id"])
    assert [(e.action, e.actor) for e in events] == [("experiment.create", "alice")]


def test_whoami_names_the_user_token_and_roles(client: httpx.Client, token: Token) -> None:
    body = client.get(f"{API}/whoami", headers=token("ann", "approver", model="churn")).json()
    assert body["user"] == "ann" and body["auth"] is True and body["token_id"]
    assert [(r["role"], r["model"]) for r in body["roles"]] == [("approver", "churn")]


# -- administration over HTTP -------------------------------------------------------------------


def test_admin_routes_need_global_admin(client: httpx.Client, token: Token) -> None:
    admin, scoped = token("root", "admin"), token("ada", "admin", model="churn")
    response = client.post(f"{API}/users", json={"name": "new"}, headers=scoped)
    assert error_of(response, 403, "PERMISSION_DENIED")["details"]["permission"] == "admin"
    body = {"name": "new", "role": "viewer"}
    assert client.post(f"{API}/users", json=body, headers=admin).status_code == 201
    roles = client.get(f"{API}/roles", params={"user": "new"}, headers=admin).json()["roles"]
    assert [(r["role"], r["model"]) for r in roles] == [("viewer", "*")]


def test_users_manage_their_own_tokens_with_read_only(client: httpx.Client, token: Token) -> None:
    vera, other = token("vera", "viewer"), token("otto", "viewer")
    created = client.post(f"{API}/tokens", json={"description": "laptop"}, headers=vera)
    assert created.status_code == 201, created.text
    secret, token_id = created.json()["secret"], created.json()["token"]["id"]
    assert client.get(f"{API}/whoami", headers=bearer(secret)).json()["user"] == "vera"
    listed = client.get(f"{API}/tokens", headers=vera).json()["tokens"]
    assert {t["user"] for t in listed} == {"vera"} and "secret" not in listed[0]
    assert client.post(f"{API}/tokens/{token_id}/revoke", headers=other).status_code == 403
    someone_else = client.post(f"{API}/tokens", json={"user": "otto"}, headers=vera)
    error_of(someone_else, 403, "PERMISSION_DENIED")
    revoked = client.post(f"{API}/tokens/{token_id}/revoke", headers=vera)
    assert revoked.json()["state"] == "revoked"
    error_of(client.get(f"{API}/whoami", headers=bearer(secret)), 401, "UNAUTHENTICATED")


def test_the_rest_client_sends_the_token_from_settings(client: httpx.Client, token: Token) -> None:
    secret = token("root", "admin")["Authorization"].removeprefix("Bearer ")
    settings = Settings(token=secret, user="ignored")
    rest = RestTrackingStore(BASE_URL, client=client, headers=auth_headers(settings))
    assert RestAccess(rest).whoami()["user"] == "root"
    rest.create_experiment("via-rest")
    anonymous = RestTrackingStore(BASE_URL, client=client)
    with pytest.raises(Unauthenticated):
        anonymous.list_experiments()
    viewer = token("vera", "viewer")["Authorization"].removeprefix("Bearer ")
    as_viewer = RestTrackingStore(
        BASE_URL, client=client, headers=auth_headers(Settings(token=viewer))
    )
    with pytest.raises(PermissionDenied):
        as_viewer.create_experiment("nope")


def test_token_changes_are_audited_without_the_secret(
    client: httpx.Client, token: Token, models: SqlRegistryStore
) -> None:
    headers = token("root", "admin")
    secret = client.post(f"{API}/tokens", json={}, headers=headers).json()["secret"]
    events = [e for e in models.audit_events() if e.target_type in {"token", "user"}]
    actions = [e.action for e in events]
    assert actions[:3] == ["user.create", "role.grant", "token.create"]
    assert actions[-1] == "token.create" and events[-1].actor == "root"
    assert all(secret not in str(e.to_dict()) and hash_token(secret) not in str(e.to_dict())
               for e in events)  # fmt: skip


# -- every route declares what it needs ---------------------------------------------------------


def _calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def api_routes(app: Any) -> list[Any]:
    """Every API route with its effective dependant (router-level dependencies included).

    FastAPI >= 0.16x keeps included routers nested in ``app.routes``; ``iter_route_contexts``
    flattens them, as the OpenAPI generator does. Older versions list the routes flat.
    """
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:  # pragma: no cover - older FastAPI
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [rc for rc in iter_contexts(app.routes) if isinstance(rc.original_route, APIRoute)]


def declared(route: Any) -> tuple[Any, Any] | None:
    return auth.route_permission(list(_calls(route.dependant)))


def test_every_route_declares_a_permission(app: Any) -> None:
    """A new route without ``require(...)`` or ``public()`` fails here, not in production."""
    routes = api_routes(app)
    assert len(routes) > 40
    undeclared = [f"{sorted(r.methods)} {r.path}" for r in routes if declared(r) is None]
    assert undeclared == []


def test_declared_model_parameters_exist_in_the_path(app: Any) -> None:
    """``model="name"`` must name a path parameter of that route, or requests would fail."""
    for route in api_routes(app):
        marker = declared(route)
        assert marker is not None
        if marker[1] is not None:
            assert "{" + marker[1] + "}" in route.path, route.path


def test_public_routes_are_only_the_health_probes(app: Any) -> None:
    public = {r.path for r in api_routes(app) if (declared(r) or ("",))[0] == "public"}
    assert public == {"/health", "/api/v1/health"}


# -- auth off: the declared user is trusted, for the audit trail only ----------------------------


def test_with_auth_off_the_header_names_the_actor(store: SqlTrackingStore, tmp_path: Path) -> None:
    app = create_app(store, FsArtifactStore(tmp_path / "a"), Settings())
    with make_client(app) as client:
        response = client.post(f"{API}/experiments", json={"name": "x"},
                               headers={auth.USER_HEADER: "dora"})  # fmt: skip
        assert response.status_code == 201
        assert client.get(f"{API}/whoami", headers={auth.USER_HEADER: "dora"}).json() == {
            "user": "dora", "auth": False, "token_id": None, "roles": [],
        }  # fmt: skip
    with acting_as("test"):
        events = SqlRegistryStore(store).audit_events(target_type="experiment")
    assert [e.actor for e in events] == ["dora"]
