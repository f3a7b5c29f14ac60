"""Appending to and reading the hash-chained audit log, inside the caller's transaction."""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import Connection, select

from loopwright.backends.sql import schema as t
from loopwright.backends.sql.dialects import Dialect
from loopwright.governance.audit import GENESIS, AuditEvent, current_actor, event_hash


def jsonable(value: Any) -> Any:
    """JSON columns (and PostgreSQL) have no NaN/inf: store them as strings, like the wire does."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def append_event(
    conn: Connection,
    dialect: Dialect,
    action: str,
    target_type: str,
    target_id: str,
    *,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
) -> AuditEvent:
    """Chain one event to the newest; runs in the same transaction as the change it records."""
    dialect.lock_audit(conn)
    a = t.audit_events
    last = conn.execute(select(a.c.seq, a.c.hash).order_by(a.c.seq.desc()).limit(1)).first()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    before, after = jsonable(before), jsonable(after)
    ts, actor = int(time.time() * 1000), current_actor()
    digest = event_hash(seq, ts, actor, action, target_type, target_id, before, after, reason, prev)
    event = AuditEvent(
        seq, ts, actor, action, target_type, target_id, before, after, reason, prev, digest
    )
    conn.execute(a.insert().values(**event.to_dict()))
    return event


def read_events(
    conn: Connection,
    after_seq: int = 0,
    limit: int | None = 1000,
    target_type: str | None = None,
    target_id: str | None = None,
) -> list[AuditEvent]:
    a = t.audit_events
    stmt = select(a).where(a.c.seq > after_seq).order_by(a.c.seq)
    if target_type is not None:
        stmt = stmt.where(a.c.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(a.c.target_id == target_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [AuditEvent(**row._mapping) for row in conn.execute(stmt)]
