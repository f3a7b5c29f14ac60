"""The access rules as pure functions: roles, scopes, token shape and refusal reasons."""

from __future__ import annotations

import pytest

from loopwright.errors import InvalidInput, PermissionDenied, Unauthenticated
from loopwright.governance.access import (
    GLOBAL,
    Permission,
    Principal,
    Role,
    RoleBinding,
    TokenInfo,
    User,
    authorize,
    check_token,
    generate_token,
    hash_token,
    looks_like_token,
    needs_touch,
    parse_duration,
    permissions,
)

R, W, A, ADM = Permission.READ, Permission.WRITE, Permission.APPROVE, Permission.ADMIN


def bind(role: Role, model: str = GLOBAL) -> RoleBinding:
    return RoleBinding("u", role, model, 0)


@pytest.mark.parametrize(
    ("bindings", "model", "expected"),
    [
        ([bind(Role.VIEWER)], None, {R}),
        ([bind(Role.ADMIN)], "any", {R, W, A, ADM}),
        ([bind(Role.APPROVER, "churn")], "churn", {R, A}),
        ([bind(Role.APPROVER, "churn")], "fraud", set()),
        # outside a model: read and write from any binding, approve and admin only globally
        ([bind(Role.APPROVER, "churn")], None, {R}),
        ([bind(Role.CONTRIBUTOR, "churn")], None, {R, W}),
        ([bind(Role.ADMIN, "churn")], None, {R, W}),
        ([bind(Role.VIEWER), bind(Role.APPROVER, "churn")], "churn", {R, A}),
    ],
)
def test_what_bindings_grant(bindings: list[RoleBinding], model: str | None, expected: set) -> None:
    assert permissions(bindings, model) == expected


def test_a_denial_names_user_permission_and_model() -> None:
    principal = Principal("ann", "t", (bind(Role.VIEWER),))
    with pytest.raises(PermissionDenied, match="ann lacks the 'approve' permission on model 'x'"):
        authorize(principal, A, "x")
    with pytest.raises(PermissionDenied, match="globally") as caught:
        authorize(principal, ADM, None)
    assert caught.value.details == {"permission": "admin", "model": None}


def test_tokens_are_prefixed_random_and_stored_as_sha256() -> None:
    first, second = generate_token(), generate_token()
    assert first != second and looks_like_token(first) and len(first) == 43
    assert len(hash_token(first)) == 64 and hash_token(first) == hash_token(first)
    assert not looks_like_token("lw_" + "!" * 40)


def test_refusal_reasons() -> None:
    user = User("ann", 0)
    live = TokenInfo("t", "ann", "", 0)
    check_token(live, user, now=1)
    cases = [
        (None, user, "unknown"),
        (TokenInfo("t", "ann", "", 0, revoked_at=5), user, "revoked"),
        (TokenInfo("t", "ann", "", 0, expires_at=10), user, "expired"),
        (live, User("ann", 0, disabled=True), "disabled"),
    ]
    for info, who, reason in cases:
        with pytest.raises(Unauthenticated, match=reason):
            check_token(info, who, now=10)


def test_last_used_is_touched_at_most_once_a_minute() -> None:
    assert needs_touch(TokenInfo("t", "u", "", 0), now=0)
    assert not needs_touch(TokenInfo("t", "u", "", 0, last_used_at=1000), now=60_999)
    assert needs_touch(TokenInfo("t", "u", "", 0, last_used_at=1000), now=61_000)


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86_400_000
    assert parse_duration("90s") == 90_000
    for bad in ("", "0d", "1y", "d30", "1.5h"):
        with pytest.raises(InvalidInput, match="30d"):
            parse_duration(bad)
