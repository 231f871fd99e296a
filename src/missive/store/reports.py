"""Usage and cost, summed in the database per time bucket and per chosen dimensions."""

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


def summed(
    db: sa.Engine,
    start_ts: int,
    end_ts: int,
    width: int,
    group_by: Sequence[str],
    filters: dict[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """One row per (bucket index, group) with the sums of tokens, costs and requests, in [start, end)."""
    table = usage_records.c
    bucket = ((table.ts - start_ts) // width).label("bucket")
    groups = [DIMENSIONS[name].label(name) for name in group_by]
    sums = [sa.func.sum(table[column]).label(column) for column in (*TOKEN_COLUMNS, *COST_COLUMNS)]
    query = sa.select(bucket, *groups, *sums, sa.func.count().label("requests")).where(
        table.ts >= start_ts, table.ts < end_ts
    )
    for name, values in filters.items():
        if values:
            query = query.where(DIMENSIONS[name].in_(list(values)))
    query = query.group_by(bucket, *groups).order_by(bucket, *groups)
    with db.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{key: (int(value) if key in _INTEGERS else value) for key, value in row.items()} for row in rows]


_INTEGERS = frozenset((*TOKEN_COLUMNS, *COST_COLUMNS, "requests", "bucket"))
