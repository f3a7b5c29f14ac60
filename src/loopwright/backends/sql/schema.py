"""Tables of the SQL metadata store (SQLAlchemy Core; rows never leave ``backends/sql``).

Conventions, so every dialect agrees:
- times are integer milliseconds since the epoch (no timezone surprises across SQLite/PostgreSQL);
- a metric ``value`` of NULL means NaN (SQLite cannot store NaN; +/-inf are stored as such);
- ``latest_metrics`` keeps the highest-step point per (run, key) so filters and ordering on metrics
  never scan the full series.

The Alembic migrations in ``migrations/versions`` must produce exactly this schema; a test compares
them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

KEY = String(250)
ID = String(32)

experiments = Table(
    "experiments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(250), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("tags", JSON, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("experiment_id", ID, ForeignKey("experiments.id"), nullable=False, index=True),
    Column("name", String(250), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("user", String(250)),
    Column("parent_run_id", ID, index=True),
    Column("heartbeat_at", BigInteger),
    Column("error", Text),
)

params = Table(
    "params",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("value", Text, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("value", Text, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", ID, nullable=False),
    Column("key", KEY, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float(precision=53)),
    Index(None, "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float(precision=53)),
)

datasets = Table(
    "datasets",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("name", String(250), nullable=False),
    Column("schema", JSON, nullable=False),
    Column("num_rows", BigInteger, nullable=False),
    Column("source", Text),
    Column("created_at", BigInteger, nullable=False),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(64), ForeignKey("datasets.digest"), primary_key=True),
    Column("context", String(64), primary_key=True),
    Column("name", String(250), nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1000), primary_key=True),
    Column("digest", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
)
