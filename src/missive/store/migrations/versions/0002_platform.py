"""The platform: organisation, workspaces, admin keys, key expiry, the usage ledger, front ends.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = datetime.now(UTC)
    organization = op.create_table(
        "organization",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(organization, [{"id": str(uuid.uuid4()), "name": "Missive", "created_at": now}])
    workspaces = op.create_table(
        "workspaces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("display_color", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limit_tier", sa.String(64), nullable=True),
        sa.Column("monthly_spend_limit", sa.BigInteger, nullable=True),
        sa.Column("credit_balance", sa.BigInteger, nullable=True),
    )
    op.bulk_insert(
        workspaces,
        [{"id": "default", "name": "Default Workspace", "display_color": "#6C5BB9", "created_at": now}],
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
        batch.create_index("ix_api_keys_workspace", ["workspace_id", "created_at"])
    op.create_table(
        "admin_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("requested_model", sa.String(256), nullable=False),
        sa.Column("service_tier", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.String(40), nullable=True),
        *[
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "input_tokens",
                "cache_write_5m_tokens",
                "cache_write_1h_tokens",
                "cache_read_tokens",
                "output_tokens",
                "cost_input",
                "cost_cache_write",
                "cost_cache_read",
                "cost_output",
                "cost",
            )
        ],  # fmt: skip
        sa.Column("latency_ms", sa.Integer, nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_usage_workspace_ts", "usage_records", ["workspace_id", "ts"])
    op.create_index("ix_usage_ts", "usage_records", ["ts"])
    op.create_index("ix_usage_status", "usage_records", ["status", "instance_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("usage_records")
    op.drop_table("admin_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_workspace")
        batch.drop_column("created_by")
        batch.drop_column("expires_at")
        batch.drop_column("archived_at")
    op.drop_table("workspaces")
    op.drop_table("organization")
