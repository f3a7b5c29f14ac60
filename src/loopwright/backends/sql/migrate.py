"""Schema versions of the SQL store, driven by Alembic from inside the package.

A brand-new database is created at the current schema (``metadata.create_all`` then stamped at
head, under a lock so two processes opening it at once do not race). An existing database behind
head is refused with :class:`SchemaOutdated` naming ``loopwright db upgrade``; only that command
migrates.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from loopwright.backends.sql.dialects import WRITE, Dialect, mask_url
from loopwright.backends.sql.schema import metadata
from loopwright.errors import SchemaOutdated

SCRIPT_LOCATION = "loopwright.backends.sql:migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine, dialect: Dialect) -> None:
    """Create an empty store at head; refuse one whose schema is behind (or unknown)."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return
    with engine.execution_options(**{WRITE: True}).begin() as conn, dialect.init_lock(conn):
        current = current_revision(conn)
        if current == head:
            return
        if current is None and not _has_tables(conn):
            metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(
                ScriptDirectory.from_config(alembic_config(dialect.url)), head
            )
            return
    raise SchemaOutdated(
        f"the metadata store at {mask_url(dialect.url)} is at schema revision {current or 'none'}, "
        f"this loopwright needs {head}; run `loopwright db upgrade --store-uri "
        f"{mask_url(dialect.url)}` (back up the database first)",
        current=current,
        head=head,
    )


def upgrade(engine: Engine, dialect: Dialect, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; idempotent. Returns (revision before, revision after)."""
    cfg = alembic_config(dialect.url)
    with engine.execution_options(**{WRITE: True}).begin() as conn, dialect.init_lock(conn):
        before = current_revision(conn)
        if before is None and not _has_tables(conn) and revision == "head":
            metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(ScriptDirectory.from_config(cfg), "head")
        else:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        after = current_revision(conn)
    if after != before:
        analyze(engine)
    return before, after or ""


def analyze(engine: Engine) -> None:
    """Refresh the planner's statistics after a schema change.

    Why: PostgreSQL has no statistics for tables and indexes a migration just made until
    autovacuum gets to them, and until then the first searches can pick poor plans; SQLite never
    gathers them unless asked. ``ANALYZE`` is cheap next to the migration itself.
    """
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def _has_tables(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    return bool(names & set(metadata.tables))
