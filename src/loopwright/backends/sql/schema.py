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
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
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
    # revision 0003: metric filters range-scan this (covering) index; see backends/sql/search.py
    Index(None, "key", "value", "run_id"),
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
    # revision 0003: a dataset registered with its content keeps it as a Parquet blob
    Column("content_digest", String(64)),
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

# -- model registry (revision 0003) ------------------------------------------------------------

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(250), primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("created_by", String(250)),
    Column("policy", JSON),  # the gate policy (GatePolicy as a dict), None = no gates
)

model_tags = Table(
    "model_tags",
    metadata,
    Column("model", String(250), ForeignKey("registered_models.name", ondelete="CASCADE"),
           primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("value", Text, nullable=False),
)  # fmt: skip

model_versions = Table(
    "model_versions",
    metadata,
    Column("model", String(250), ForeignKey("registered_models.name", ondelete="CASCADE"),
           primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("run_id", ID, ForeignKey("runs.id"), index=True),
    Column("artifact_path", String(1000), nullable=False),
    Column("digest", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("flavor", String(64), nullable=False),
    Column("signature", JSON),
    Column("metrics", JSON, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(250)),
)  # fmt: skip

version_tags = Table(
    "version_tags",
    metadata,
    Column("model", String(250), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("value", Text, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model", String(250), ForeignKey("registered_models.name", ondelete="CASCADE"),
           primary_key=True),
    Column("alias", String(250), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(250)),
)  # fmt: skip

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("model", String(250), nullable=False),
    Column("version", Integer, nullable=False),
    Column("dataset_digest", String(64)),
    Column("dataset_name", String(250), nullable=False),
    Column("champion_version", Integer),
    Column("passed", Boolean, nullable=False),
    Column("report", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(250)),
    Index(None, "model", "version"),
)

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", ID, primary_key=True),
    Column("model", String(250), nullable=False, index=True),
    Column("alias", String(250), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # PENDING APPROVED REJECTED APPLIED CANCELLED
    Column("required", Integer, nullable=False),
    Column("requested_by", String(250), nullable=False),
    Column("requested_at", BigInteger, nullable=False),
    Column("comment", Text, nullable=False),
)

approval_decisions = Table(
    "approval_decisions",
    metadata,
    Column("request_id", ID, ForeignKey("approval_requests.id", ondelete="CASCADE"),
           primary_key=True),
    Column("approver", String(250), primary_key=True),
    Column("decision", String(16), nullable=False),  # APPROVE REJECT
    Column("comment", Text, nullable=False),
    Column("decided_at", BigInteger, nullable=False),
)  # fmt: skip

# -- access control and audit (revision 0003) --------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("name", String(250), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user", String(250), ForeignKey("users.name", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("revoked_at", BigInteger),
    Column("last_used_at", BigInteger),
)  # fmt: skip

role_bindings = Table(
    "role_bindings",
    metadata,
    Column("user", String(250), ForeignKey("users.name", ondelete="CASCADE"), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("model", String(250), primary_key=True),  # "*" = every model
    Column("granted_at", BigInteger, nullable=False),
    Column("granted_by", String(250)),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(250), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_type", String(64), nullable=False),
    Column("target_id", String(500), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "target_type", "target_id"),
)

# -- monitoring (revision 0004): its own module, registered on this metadata at import ------------

from loopwright.backends.sql import schema_monitoring  # noqa: E402, F401

# -- leases (revision 0005) ---------------------------------------------------------------------

#: Named, expiring leases: one holder at a time (e.g. ``loop:<model>``, the retraining controller
#: allowed to advance a model's loop). Taken by an atomic insert-or-conditional-update.
leases = Table(
    "leases",
    metadata,
    Column("name", String(250), primary_key=True),
    Column("holder", String(250), nullable=False),
    Column("acquired_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# -- batch keys (revision 0006) ------------------------------------------------------------------

#: Idempotency keys of applied metric batches: a batch retried after its answer was lost is
#: recognised by its key and not applied twice. Recorded in the batch's own transaction.
batch_keys = Table(
    "batch_keys",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("run_id", ID, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "created_at"),
)
