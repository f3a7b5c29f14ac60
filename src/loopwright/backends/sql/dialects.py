"""Everything that differs between SQLite and PostgreSQL, in one small class per dialect.

The store never says ``if dialect == ...``; it asks its :class:`Dialect` for an engine, an upsert,
a lock for first-time initialisation, or a bulk insert.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql.dml import Insert

from loopwright.errors import InvalidInput

WRITE = "loopwright_write"  # execution option: this connection is going to write


class Dialect:
    name: ClassVar[str]
    bulk_placeholder: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = url

    def create_engine(self) -> Engine:
        raise NotImplementedError

    def insert(self, table: Table) -> Insert:
        raise NotImplementedError

    @contextmanager
    def init_lock(self, conn: Connection):  # type: ignore[no-untyped-def]
        """Serialise first-time schema creation between processes opening a new store at once."""
        yield

    def lock_audit(self, conn: Connection) -> None:
        """Serialise audit appends so the hash chain stays a chain under concurrent writers."""

    def bulk_insert_sql(self, table: str, columns: Sequence[str]) -> str:
        marks = ", ".join([self.bulk_placeholder] * len(columns))
        cols = ", ".join(f'"{c}"' for c in columns)
        return f'INSERT INTO "{table}" ({cols}) VALUES ({marks})'


class SQLiteDialect(Dialect):
    """SQLite in WAL mode: many readers, one writer at a time, writers queue on a busy timeout.

    Writers open their transaction with ``BEGIN IMMEDIATE`` so that two processes never both hold
    a read lock and deadlock while upgrading to a write lock (which SQLite reports at once as
    "database is locked", whatever the busy timeout). ``synchronous=NORMAL`` in WAL mode survives
    a killed process; only an operating-system crash may lose the last few commits.
    """

    name = "sqlite"
    bulk_placeholder = "?"
    busy_timeout_ms = 60_000

    def create_engine(self) -> Engine:
        url = make_url(self.url)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, connect_args={"isolation_level": None, "timeout": 60})
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "begin", self._on_begin)
        return engine

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: search and hydration share hot pages
        cur.close()

    @staticmethod
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def insert(self, table: Table) -> Insert:
        return sqlite.insert(table)


class PostgresDialect(Dialect):
    name = "postgresql"
    bulk_placeholder = "%s"

    def create_engine(self) -> Engine:
        return create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    def insert(self, table: Table) -> Insert:
        return postgresql.insert(table)

    @contextmanager
    def init_lock(self, conn: Connection):  # type: ignore[no-untyped-def]
        conn.execute(text("SELECT pg_advisory_xact_lock(4242420001)"))
        yield

    def lock_audit(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(4242420002)"))


def dialect_for(url: str) -> Dialect:
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise InvalidInput(f"not a database URL: {mask_url(url)!r}", field="store_uri") from None
    if backend == "sqlite":
        return SQLiteDialect(url)
    if backend == "postgresql":
        return PostgresDialect(url)
    raise InvalidInput(
        f"unsupported database {backend!r} in {mask_url(url)!r}; use sqlite:/// or "
        "postgresql+psycopg://",
        field="store_uri",
    )


def mask_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
