"""Report indexes: what the usage and cost reports (store/reports.py) need to stay fast on a month of usage.

SQLite sorts the rows of a GROUP BY and has no hash aggregate, so the cost that an index can remove is
reading the table: `ix_usage_report` holds, in time order, every column a report groups, filters or
sums, and a report scans it alone. It replaces `ix_usage_ts`, its prefix.

PostgreSQL aggregates in a hash table when it expects few groups, but without statistics on the bucket
expression it expects one group per row and sorts them all (on disk past `work_mem`). Statistics on
`ts / width` for the three bucket widths give it the true count; its seq or bitmap scan needs no
wider index.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REPORT_COLUMNS = [
    "ts",
    "model",
    "key_id",
    "workspace_id",
    "service_tier",
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
]
WIDTHS = {"minute": 60, "hour": 3600, "day": 86400}  # wire/reports.py WIDTHS


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        if bind.dialect.server_version_info < (14,):
            return  # statistics on expressions came with PostgreSQL 14; older ones sort
        for name, seconds in WIDTHS.items():
            op.execute(f"CREATE STATISTICS st_usage_{name} ON ((ts / {seconds})) FROM usage_records")
        op.execute("ANALYZE usage_records")  # now, not at the next autovacuum
    else:
        op.create_index("ix_usage_report", "usage_records", REPORT_COLUMNS)
        op.drop_index("ix_usage_ts", "usage_records")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in WIDTHS:
            op.execute(f"DROP STATISTICS IF EXISTS st_usage_{name}")
    else:
        op.create_index("ix_usage_ts", "usage_records", ["ts"])
        op.drop_index("ix_usage_report", "usage_records")
