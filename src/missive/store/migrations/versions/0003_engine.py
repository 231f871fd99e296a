"""Each usage record names the engine that served it (routes and fallback can pick any engine).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.add_column(sa.Column("engine", sa.String(64), nullable=False, server_default="local"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("engine")
