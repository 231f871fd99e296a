"""Message batches: one row per batch, one per request in it (its params, its state and its result).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "message_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("betas", sa.Text, nullable=False),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("expires_at", moment, nullable=False),
        sa.Column("ended_at", moment, nullable=True),
        sa.Column("cancel_initiated_at", moment, nullable=True),
        sa.Column("archived_at", moment, nullable=True),
    )
    op.create_index("ix_batches_workspace", "message_batches", ["workspace_id", "created_at"])
    op.create_index("ix_batches_ended", "message_batches", ["ended_at"])
    op.create_table(
        "batch_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("params", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("not_before", sa.BigInteger, nullable=True),
        sa.Column("claimed_by", sa.String(40), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("finished_at", moment, nullable=True),
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_batch_requests_custom_id"),
    )
    op.create_index("ix_batch_requests_order", "batch_requests", ["batch_id", "position"])  # results
    op.create_index("ix_batch_requests_queue", "batch_requests", ["batch_id", "status", "position"])  # claims, counts
    op.create_index("ix_batch_requests_claims", "batch_requests", ["status", "claimed_by"])  # recovery


def downgrade() -> None:
    op.drop_table("batch_requests")
    op.drop_table("message_batches")
