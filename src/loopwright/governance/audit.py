"""The audit trail: every state change as an event, each chained to the previous by SHA-256.

An event's hash covers its sequence number, time, actor, action, target, before/after, reason
and the previous event's hash. Changing any stored field breaks that event's hash; deleting an
event leaves a gap in the sequence and breaks the next event's ``prev_hash``. :func:`verify`
walks the chain and names the first event that does not hold. Deleting the newest events leaves
a shorter valid chain, which is why :func:`verify` also accepts an anchor ``(seq, hash)``
recorded elsewhere (``loopwright audit anchor``).
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson

GENESIS = "0" * 64

_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "loopwright_actor", default=None
)


def current_actor() -> str:
    """Who is acting: the authenticated user on the server, else the declared or OS user."""
    actor = _actor.get()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


@contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    """Attribute the state changes made inside the block to ``user``."""
    token = _actor.set(user)
    try:
        yield
    finally:
        _actor.reset(token)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    ts: int
    actor: str
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    reason: str | None
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEvent:
        return cls(**{k: data.get(k) for k in cls.__slots__})  # type: ignore[arg-type]


def event_hash(
    seq: int,
    ts: int,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: Any,
    after: Any,
    reason: str | None,
    prev_hash: str,
) -> str:
    """Canonical JSON (sorted keys) so the same event hashes the same on every backend."""
    body = [seq, ts, actor, action, target_type, target_id, before, after, reason, prev_hash]
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(events: Iterable[AuditEvent], anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Check the chain in sequence order; stop at the first event that does not hold."""
    prev_hash, expected_seq, checked = GENESIS, 1, 0
    for ev in events:
        if ev.seq != expected_seq:
            return _bad(
                checked,
                expected_seq,
                prev_hash,
                f"event {expected_seq} is missing (next stored event is {ev.seq})",
            )
        if ev.prev_hash != prev_hash:
            return _bad(
                checked,
                ev.seq,
                prev_hash,
                f"event {ev.seq} does not follow event {ev.seq - 1} (prev_hash differs)",
            )
        recomputed = event_hash(
            ev.seq,
            ev.ts,
            ev.actor,
            ev.action,
            ev.target_type,
            ev.target_id,
            ev.before,
            ev.after,
            ev.reason,
            ev.prev_hash,
        )
        if recomputed != ev.hash:
            return _bad(
                checked,
                ev.seq,
                prev_hash,
                f"event {ev.seq} was altered after it was written (hash mismatch)",
            )
        if anchor is not None and ev.seq == anchor[0] and ev.hash != anchor[1]:
            return _bad(checked, ev.seq, prev_hash, f"event {ev.seq} does not match the anchor")
        prev_hash, expected_seq, checked = ev.hash, ev.seq + 1, checked + 1
    if anchor is not None and anchor[0] >= expected_seq:
        return _bad(
            checked,
            expected_seq,
            prev_hash,
            f"events {expected_seq}..{anchor[0]} are missing: the anchor is at {anchor[0]}",
        )
    return VerifyResult(True, checked, expected_seq - 1, prev_hash)


def _bad(checked: int, seq: int, head_hash: str, problem: str) -> VerifyResult:
    return VerifyResult(False, checked, seq - 1, head_hash, first_bad_seq=seq, problem=problem)
