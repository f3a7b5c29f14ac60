"""Named, expiring leases in the metadata database: one holder at a time, across processes.

Why in the database: the processes that must not work on the same thing at once (two
retraining controllers ticking one model, on one machine or several) share nothing else. A lease
is a row; taking it is one statement that only succeeds when it is free:

- an ``INSERT ... ON CONFLICT DO NOTHING`` when nobody ever held it, else
- an ``UPDATE ... WHERE expires_at < now OR holder = me``, which PostgreSQL re-checks under the
  row lock and SQLite runs under its single writer lock, so of two racing takers one wins.

The holder renews before expiry while it works and deletes the row when done. A holder that dies
stops renewing; once ``expires_at`` passes, the next taker gets the lease and is told who held it
before (:attr:`Taken.previous`), which is how work a dead holder left half-done is recognised.
Times are wall-clock milliseconds (a lease outlives any one process's clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, delete, or_, select, update

from loopwright.backends.sql import schema as s
from loopwright.backends.sql.store import now_ms
from loopwright.errors import InvalidInput

if TYPE_CHECKING:
    from loopwright.backends.sql.store import SqlTrackingStore

__all__ = ["Lease", "SqlLeases", "Taken"]


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    acquired_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of :meth:`SqlLeases.acquire`: ``ok`` with the lease now held, else the
    current holder's lease; ``previous`` is an expired lease of another holder that was taken
    over (its work may have been left half-done)."""

    ok: bool
    lease: Lease
    previous: Lease | None = None


class SqlLeases:
    """Leases over a :class:`~loopwright.backends.sql.store.SqlTrackingStore`'s database."""

    def __init__(self, base: SqlTrackingStore) -> None:
        self.base = base

    def __repr__(self) -> str:
        return f"SqlLeases({self.base!r})"

    def acquire(self, name: str, holder: str, ttl_ms: int, now: int | None = None) -> Taken:
        """Take ``name`` for ``ttl_ms`` if it is free, expired or already ours."""
        _check(name, holder, ttl_ms)
        at = now_ms() if now is None else int(now)
        t = s.leases
        fresh = {"name": name, "holder": holder, "acquired_at": at, "expires_at": at + ttl_ms}
        with self.base._write() as conn:
            before = _row(conn.execute(select(t).where(t.c.name == name)).first())
            insert: Any = self.base.dialect.insert(t).values(**fresh)
            insert = insert.on_conflict_do_nothing(index_elements=[t.c.name])
            if conn.execute(insert.returning(t.c.name)).first() is not None:
                return Taken(True, _lease(fresh))
            take = (
                update(t)
                .where(t.c.name == name, or_(t.c.expires_at < at, t.c.holder == holder))
                .values(
                    holder=holder,
                    expires_at=at + ttl_ms,
                    acquired_at=case((t.c.holder == holder, t.c.acquired_at), else_=at),
                )
                .returning(t.c.name, t.c.holder, t.c.acquired_at, t.c.expires_at)
            )
            taken = _row(conn.execute(take).first())
            if taken is not None:
                previous = before if before is not None and before.holder != holder else None
                return Taken(True, taken, previous)
            current = _row(conn.execute(select(t).where(t.c.name == name)).first())
        assert current is not None  # the row exists: the insert conflicted
        return Taken(False, current)

    def renew(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Push the expiry out again; False when the lease is no longer ours."""
        _check(name, holder, ttl_ms)
        t = s.leases
        stmt = (
            update(t)
            .where(t.c.name == name, t.c.holder == holder)
            .values(expires_at=now_ms() + ttl_ms)
            .returning(t.c.name)
        )
        with self.base._write() as conn:
            return conn.execute(stmt).first() is not None

    def release(self, name: str, holder: str) -> bool:
        """Give the lease up (only if it is still ours)."""
        t = s.leases
        with self.base._write() as conn:
            stmt = delete(t).where(t.c.name == name, t.c.holder == holder).returning(t.c.name)
            return conn.execute(stmt).first() is not None

    def get(self, name: str) -> Lease | None:
        t = s.leases
        with self.base._read() as conn:
            return _row(conn.execute(select(t).where(t.c.name == name)).first())


def _check(name: str, holder: str, ttl_ms: int) -> None:
    if not isinstance(name, str) or not name or len(name) > 250:
        raise InvalidInput("a lease name must be 1-250 characters", field="name")
    if not isinstance(holder, str) or not holder or len(holder) > 250:
        raise InvalidInput("a lease holder must be 1-250 characters", field="holder")
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
        raise InvalidInput("a lease's time to live must be a positive integer (ms)", field="ttl")


def _lease(row: dict[str, Any]) -> Lease:
    return Lease(row["name"], row["holder"], int(row["acquired_at"]), int(row["expires_at"]))


def _row(row: Any) -> Lease | None:
    return None if row is None else _lease(row._mapping)
