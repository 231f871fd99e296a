"""The usage ledger as stored: one row per request, opened at admission and settled exactly once.

A row is inserted `in_flight` as the first engine is asked to serve (before the first byte of the
response), its tokens are checkpointed while it runs, and it is settled (tokens, cost, status) in
one conditional update. Settling moves a row's cost and the workspace's prepaid balance by the same
difference, in one transaction, so a row settled twice (by its front end, after a recovery that
thought it dead) is never counted twice.

Writes take a connection inside a transaction (the caller's, usually the group-committing `Writer`);
reads take the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from missive.store.db import instances, usage_records, workspaces
from missive.wire.times import now

IN_FLIGHT = "in_flight"
TOKEN_COLUMNS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)
COST_COLUMNS = ("cost_input", "cost_cache_write", "cost_cache_read", "cost_output", "cost")


@dataclass
class Record:
    id: str
    ts: int
    instance_id: str
    key_id: str
    workspace_id: str
    model: str
    requested_model: str
    service_tier: str
    engine: str = "local"
    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    status: str = IN_FLIGHT


@dataclass(frozen=True)
class Settlement:
    status: str
    tokens: dict[str, int]  # TOKEN_COLUMNS
    costs: dict[str, int]  # COST_COLUMNS, pico-USD
    stop_reason: str | None = None
    latency_ms: int | None = None


_ZERO_COSTS = {column: 0 for column in COST_COLUMNS}
_INSERT = usage_records.insert()  # statements built once: each request runs them
_SETTLE_IN_FLIGHT = (
    usage_records.update()
    .where(
        usage_records.c.id == sa.bindparam("record_id"),
        usage_records.c.status == IN_FLIGHT,
        usage_records.c.cost == 0,
    )
    .returning(usage_records.c.workspace_id)
)


def open_record(conn: sa.Connection, record: Record, created_at: datetime) -> None:
    conn.execute(_INSERT, {**record.__dict__, "created_at": created_at, **_ZERO_COSTS})


def reopen_record(conn: sa.Connection, record: Record, created_at: datetime) -> None:
    """Open a record whose id may have been opened before: a batch request run again after a crash or a
    retry. The earlier attempt's row is replaced, its cost given back, so the request keeps one record."""
    row = conn.execute(
        sa.select(usage_records.c.cost, usage_records.c.workspace_id).where(usage_records.c.id == record.id)
    ).first()
    if row is not None:
        _charge(conn, row.workspace_id, -row.cost)
        conn.execute(usage_records.delete().where(usage_records.c.id == record.id))
    open_record(conn, record, created_at)


def retarget(conn: sa.Connection, record_id: str, engine: str, model: str) -> None:
    """Name another engine (and its model) in a record in flight: the one first asked could not serve."""
    conn.execute(
        usage_records.update()
        .where(usage_records.c.id == record_id, usage_records.c.status == IN_FLIGHT)
        .values(engine=engine, model=model)
    )


def discard(conn: sa.Connection, record_id: str) -> None:
    """Remove a record in flight whose request no engine served: it was opened as the first engine was
    asked, and nothing was used."""
    conn.execute(
        usage_records.delete().where(usage_records.c.id == record_id, usage_records.c.status == IN_FLIGHT)
    )


def checkpoint(conn: sa.Connection, progress: dict[str, dict[str, int]]) -> None:
    """Save the tokens so far (`TOKEN_COLUMNS`) of requests still in flight."""
    for record_id, tokens in progress.items():
        conn.execute(
            usage_records.update()
            .where(usage_records.c.id == record_id, usage_records.c.status == IN_FLIGHT)
            .values(**tokens)
        )


def settle(
    conn: sa.Connection, record_id: str, settlement: Settlement, from_statuses: tuple[str, ...]
) -> bool:
    """Settle a row that is in one of `from_statuses`; False if it was not (already settled)."""
    values = {
        "status": settlement.status,
        "stop_reason": settlement.stop_reason,
        "latency_ms": settlement.latency_ms,
        "settled_at": now(),
        **settlement.tokens,
        **settlement.costs,
    }
    if IN_FLIGHT in from_statuses:  # the usual case: a row in flight, which costs 0 until settled
        first = conn.execute(_SETTLE_IN_FLIGHT.values(**values), {"record_id": record_id}).first()
        if first is not None:
            _charge(conn, first.workspace_id, settlement.costs["cost"])
            return True
    while True:
        row = conn.execute(
            sa.select(usage_records.c.status, usage_records.c.cost, usage_records.c.workspace_id).where(
                usage_records.c.id == record_id
            )
        ).first()
        if row is None or row.status not in from_statuses:
            return False
        changed = conn.execute(
            usage_records.update()
            .where(
                usage_records.c.id == record_id,
                usage_records.c.status == row.status,
                usage_records.c.cost == row.cost,
            )
            .values(**values)
        ).rowcount
        if not changed:
            continue  # settled concurrently: look again
        _charge(conn, row.workspace_id, settlement.costs["cost"] - row.cost)
        return True


def _charge(conn: sa.Connection, workspace_id: str, amount: int) -> None:
    """Take `amount` from the workspace's prepaid balance, if it keeps one."""
    if amount:
        conn.execute(
            workspaces.update()
            .where(workspaces.c.id == workspace_id, workspaces.c.credit_balance.is_not(None))
            .values(credit_balance=workspaces.c.credit_balance - amount)
        )


def orphans(db: sa.Engine, now_ms: int, dead_after_ms: int) -> list[Record]:
    """Rows still in flight whose front end has stopped beating (or is gone)."""
    alive = sa.select(instances.c.id).where(instances.c.heartbeat >= now_ms - dead_after_ms)
    query = sa.select(usage_records).where(
        usage_records.c.status == IN_FLIGHT, usage_records.c.instance_id.not_in(alive)
    )
    with db.connect() as conn:
        rows = conn.execute(query).all()
    fields = Record.__dataclass_fields__
    return [Record(**{name: getattr(row, name) for name in fields}) for row in rows]


def heartbeat(conn: sa.Connection, instance_id: str, now_ms: int) -> None:
    updated = conn.execute(
        instances.update().where(instances.c.id == instance_id).values(heartbeat=now_ms)
    ).rowcount
    if not updated:
        conn.execute(instances.insert().values(id=instance_id, started_at=now(), heartbeat=now_ms))


def remove_instance(conn: sa.Connection, instance_id: str) -> None:
    conn.execute(instances.delete().where(instances.c.id == instance_id))


def spend_since(db: sa.Engine, workspace_id: str, since_ts: int) -> int:
    """pico-USD settled by a workspace's requests that started at or after `since_ts`."""
    with db.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(usage_records.c.cost), 0)).where(
                usage_records.c.workspace_id == workspace_id, usage_records.c.ts >= since_ts
            )
        ).scalar_one()
    return int(total)


def get_record(db: sa.Engine, record_id: str) -> dict[str, object] | None:
    with db.connect() as conn:
        row = conn.execute(sa.select(usage_records).where(usage_records.c.id == record_id)).first()
    return dict(row._mapping) if row else None
