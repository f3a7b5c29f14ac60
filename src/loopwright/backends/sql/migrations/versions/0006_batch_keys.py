"""Batch keys: idempotency keys of applied metric batches (safe retries over REST).

Revision ID: 0006
Revises: 0005

"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_keys",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_batch_keys")),
    )
    op.create_index(op.f("ix_batch_keys_created_at"), "batch_keys", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_batch_keys_created_at"), table_name="batch_keys")
    op.drop_table("batch_keys")
