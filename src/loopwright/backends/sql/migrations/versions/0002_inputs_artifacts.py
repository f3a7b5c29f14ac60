"""Datasets by content digest, run inputs, and run artifacts (logical path -> digest).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("num_rows", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_datasets"),
    )
    op.create_table(
        "run_inputs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("context", sa.String(64), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "digest", "context", name="pk_run_inputs"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_inputs_run_id_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["digest"], ["datasets.digest"], name="fk_run_inputs_digest_datasets"
        ),
    )
    op.create_table(
        "artifacts",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_artifacts"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_artifacts_run_id_runs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_artifacts_digest", "artifacts", ["digest"])


def downgrade() -> None:
    for name in ("artifacts", "run_inputs", "datasets"):
        op.drop_table(name)
