"""Usage and cost, summed in the database per time bucket and per chosen dimensions.

The queries are shaped for the indexes of migration 0007 (docs/platform.md, "Report queries"): a
window aligned on its bucket width groups by `ts / width`, the expression that PostgreSQL keeps
statistics on, so that it estimates a few hundred groups and aggregates in a hash table instead of
sorting every row; on SQLite the scan reads the covering index `ix_usage_report` and never the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from missive.store.db import usage_records
from missive.store.ledger import COST_COLUMNS, TOKEN_COLUMNS

# Admin API group_by / filter names -> ledger columns
DIMENSIONS = {
    "api_key_id": usage_records.c.key_id,
    "workspace_id": usage_records.c.workspace_id,
    "model": usage_records.c.model,
    "service_tier": usage_records.c.service_tier,
}
SUMMED = (*TOKEN_COLUMNS, *COST_COLUMNS)


def summed(
    db: sa.Engine,
    start_ts: int,
    end_ts: int,
    width: int,
    group_by: Sequence[str],
    filters: dict[str, Sequence[str]],
    columns: Sequence[str] = SUMMED,
) -> list[dict[str, Any]]:
    """One row per (bucket index, group) with the sums of `columns` and the count of requests, in
    [start, end), ordered by bucket then group."""
    table = usage_records.c
    offset = start_ts % width  # 0 for every Admin API window: they start on a bucket boundary
    moment = table.ts - offset if offset else table.ts
    # the width as a literal, not a bound value: PostgreSQL matches `ts / 3600` to its statistics
    slot = (moment // sa.literal_column(str(int(width)), sa.BigInteger)).label("slot")
    groups = [DIMENSIONS[name].label(name) for name in group_by]
    sums = [sa.func.sum(table[column]).label(column) for column in columns]
    query = sa.select(slot, *groups, *sums, sa.func.count().label("requests")).where(
        table.ts >= start_ts, table.ts < end_ts
    )
    for name, values in filters.items():
        if values:
            query = query.where(DIMENSIONS[name].in_(list(values)))
    query = query.group_by(slot, *groups).order_by(slot, *groups)
    with db.connect() as conn:
        rows = conn.execute(query).all()
    first = (start_ts - offset) // width
    names = [*group_by, *columns, "requests"]
    return [
        {
            "bucket": row[0] - first,
            **{name: (int(value) if name in _INTEGERS else value) for name, value in zip(names, row[1:])},
        }
        for row in rows
    ]


def last_used(db: sa.Engine, since_ts: int, workspace_id: str | None = None) -> dict[str, int]:
    """Key id -> the start (epoch seconds) of its latest request at or after `since_ts`: one small
    aggregate over the covering index, instead of an hourly usage report by key."""
    table = usage_records.c
    query = sa.select(table.key_id, sa.func.max(table.ts)).where(table.ts >= since_ts).group_by(table.key_id)
    if workspace_id is not None:
        query = query.where(table.workspace_id == workspace_id)
    with db.connect() as conn:
        return {key: int(ts) for key, ts in conn.execute(query)}


_INTEGERS = frozenset((*SUMMED, "requests"))
