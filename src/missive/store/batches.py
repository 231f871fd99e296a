"""Message batches as stored: a batch row, and one row per request holding its params, state and result.

A request moves queued -> running (claimed by one front end) -> succeeded | errored, or queued ->
canceled | expired. A retryable refusal puts it back to queued with a `not_before`; a front end that
died leaves its claims running, and `recover` puts them back. Writing a result is conditional on the
claim, so a request taken over from a front end thought dead is never written twice. A batch ends
(its `ended_at`) in the same transaction as its last request, under a lock of the batch's row, so two
front ends finishing its last two requests together cannot both miss it; `end_finished` is the backstop.

Counts are derived from the request rows, never kept by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from missive.store.db import batch_requests, instances, message_batches
from missive.wire.batches import CANCELED, EXPIRED, PENDING, QUEUED, RUNNING, Batch
from missive.wire.times import now, utc

_INSERT_ROWS = 1000


@dataclass(frozen=True)
class Claimed:
    """A request this front end now runs, with what it needs to run as its batch's creator."""

    id: str
    batch_id: str
    custom_id: str
    params: str
    attempts: int
    workspace_id: str
    key_id: str
    version: str
    betas: tuple[str, ...]


def _batch(row: sa.Row) -> Batch:  # type: ignore[type-arg]
    return Batch(
        id=row.id,
        workspace_id=row.workspace_id,
        key_id=row.key_id,
        version=row.version,
        betas=tuple(name for name in row.betas.split(",") if name),
        created_at=utc(row.created_at),  # type: ignore[arg-type]
        expires_at=utc(row.expires_at),  # type: ignore[arg-type]
        ended_at=utc(row.ended_at),
        cancel_initiated_at=utc(row.cancel_initiated_at),
        archived_at=utc(row.archived_at),
    )


# --- the API's operations ---------------------------------------------------------------------------


def create(db: sa.Engine, batch: Batch, requests: list[tuple[str, str, str]]) -> None:
    """Store a batch and its requests, `(request id, custom_id, params JSON)` in order, in one transaction."""
    with db.begin() as conn:
        conn.execute(
            message_batches.insert().values(
                id=batch.id,
                workspace_id=batch.workspace_id,
                key_id=batch.key_id,
                version=batch.version,
                betas=",".join(batch.betas),
                created_at=batch.created_at,
                expires_at=batch.expires_at,
            )
        )
        for start in range(0, len(requests), _INSERT_ROWS):
            rows = [
                {"id": rid, "batch_id": batch.id, "position": start + i, "custom_id": cid, "params": params,
                 "status": QUEUED, "attempts": 0}
                for i, (rid, cid, params) in enumerate(requests[start : start + _INSERT_ROWS])
            ]  # fmt: skip
            conn.execute(batch_requests.insert(), rows)


def get(db: sa.Engine, batch_id: str, workspace_id: str | None) -> Batch | None:
    """The batch, if it exists and belongs to `workspace_id` (None: any workspace, for the operator)."""
    query = sa.select(message_batches).where(message_batches.c.id == batch_id)
    if workspace_id is not None:
        query = query.where(message_batches.c.workspace_id == workspace_id)
    with db.connect() as conn:
        row = conn.execute(query).first()
    return _batch(row) if row else None


def list_batches(db: sa.Engine, workspace_id: str | None) -> list[Batch]:
    """Newest first."""
    query = sa.select(message_batches).order_by(message_batches.c.created_at.desc(), message_batches.c.id.desc())
    if workspace_id is not None:
        query = query.where(message_batches.c.workspace_id == workspace_id)
    with db.connect() as conn:
        return [_batch(row) for row in conn.execute(query)]


def counts(db: sa.Engine, batch_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """For each batch, its requests by status."""
    ids = list(batch_ids)
    found: dict[str, dict[str, int]] = {batch_id: {} for batch_id in ids}
    if not ids:
        return found
    query = (
        sa.select(batch_requests.c.batch_id, batch_requests.c.status, sa.func.count())
        .where(batch_requests.c.batch_id.in_(ids))
        .group_by(batch_requests.c.batch_id, batch_requests.c.status)
    )
    with db.connect() as conn:
        for batch_id, status, number in conn.execute(query):
            found[batch_id][status] = int(number)
    return found


def cancel(db: sa.Engine, batch_id: str) -> None:
    """Mark the batch canceling; its queued requests become canceled now, running ones finish."""
    moment = now()
    with db.begin() as conn:
        _lock(conn, batch_id)
        conn.execute(
            message_batches.update()
            .where(message_batches.c.id == batch_id, message_batches.c.cancel_initiated_at.is_(None))
            .values(cancel_initiated_at=moment)
        )
        conn.execute(
            batch_requests.update()
            .where(batch_requests.c.batch_id == batch_id, batch_requests.c.status == QUEUED)
            .values(status=CANCELED, finished_at=moment)
        )
        _end_if_done(conn, batch_id, moment)


def delete(db: sa.Engine, batch_id: str) -> None:
    with db.begin() as conn:
        conn.execute(batch_requests.delete().where(batch_requests.c.batch_id == batch_id))
        conn.execute(message_batches.delete().where(message_batches.c.id == batch_id))


def results(db: sa.Engine, batch_id: str, after: int, limit: int) -> list[tuple[int, str, str, str | None]]:
    """`(position, custom_id, status, result JSON)` of the requests after `after`, in order."""
    query = (
        sa.select(batch_requests.c.position, batch_requests.c.custom_id, batch_requests.c.status,
                  batch_requests.c.result)
        .where(batch_requests.c.batch_id == batch_id, batch_requests.c.position > after)
        .order_by(batch_requests.c.position)
        .limit(limit)
    )  # fmt: skip
    with db.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


# --- the worker's ---------------------------------------------------------------------------------


def claim(db: sa.Engine, instance_id: str, limit: int, now_ms: int) -> list[Claimed]:
    """Take up to `limit` queued requests, oldest batch first, for this front end.

    PostgreSQL skips rows another front end is claiming (`FOR UPDATE SKIP LOCKED`); the update is
    conditional on the row still being queued, which is what keeps SQLite (one writer) correct too.
    Each batch's queue is read in order on its index (batch, status, position).
    """
    ready = sa.or_(batch_requests.c.not_before.is_(None), batch_requests.c.not_before <= now_ms)
    open_batches = (
        sa.select(message_batches.c.id)
        .where(message_batches.c.ended_at.is_(None))
        .order_by(message_batches.c.created_at, message_batches.c.id)
    )
    with db.begin() as conn:
        ids: list[str] = []
        for batch_id in conn.execute(open_batches).scalars():
            ids += conn.execute(
                sa.select(batch_requests.c.id)
                .where(batch_requests.c.batch_id == batch_id, batch_requests.c.status == QUEUED, ready)
                .order_by(batch_requests.c.position)
                .limit(limit - len(ids))
                .with_for_update(skip_locked=True)
            ).scalars()
            if len(ids) >= limit:
                break
        if not ids:
            return []
        conn.execute(
            batch_requests.update()
            .where(batch_requests.c.id.in_(ids), batch_requests.c.status == QUEUED)
            .values(status=RUNNING, claimed_by=instance_id, attempts=batch_requests.c.attempts + 1)
        )
        rows = conn.execute(
            sa.select(batch_requests, message_batches.c.workspace_id, message_batches.c.key_id,
                      message_batches.c.version, message_batches.c.betas)
            .join(message_batches, message_batches.c.id == batch_requests.c.batch_id)
            .where(batch_requests.c.id.in_(ids), batch_requests.c.claimed_by == instance_id,
                   batch_requests.c.status == RUNNING)
            .order_by(message_batches.c.created_at, batch_requests.c.position)
        ).all()  # fmt: skip
    return [
        Claimed(row.id, row.batch_id, row.custom_id, row.params, row.attempts, row.workspace_id, row.key_id,
                row.version, tuple(name for name in row.betas.split(",") if name))
        for row in rows
    ]  # fmt: skip


def finish(db: sa.Engine, request_id: str, batch_id: str, instance_id: str, status: str, result: str | None) -> bool:
    """Write a claimed request's result, and end its batch if it was the last; False if the claim was lost."""
    moment = now()
    with db.begin() as conn:
        _lock(conn, batch_id)
        written = conn.execute(
            batch_requests.update()
            .where(batch_requests.c.id == request_id, batch_requests.c.status == RUNNING,
                   batch_requests.c.claimed_by == instance_id)
            .values(status=status, result=result, finished_at=moment)
        ).rowcount  # fmt: skip
        if written:
            _end_if_done(conn, batch_id, moment)
    return bool(written)


def requeue(db: sa.Engine, request_id: str, instance_id: str, not_before_ms: int) -> None:
    """Give a claimed request back, to be tried again from `not_before_ms`."""
    with db.begin() as conn:
        conn.execute(
            batch_requests.update()
            .where(batch_requests.c.id == request_id, batch_requests.c.status == RUNNING,
                   batch_requests.c.claimed_by == instance_id)
            .values(status=QUEUED, claimed_by=None, not_before=not_before_ms)
        )  # fmt: skip


def recover(db: sa.Engine, now_ms: int, dead_after_ms: int) -> int:
    """Put back the requests claimed by front ends that stopped beating; returns how many."""
    alive = sa.select(instances.c.id).where(instances.c.heartbeat >= now_ms - dead_after_ms)
    return _unclaim(db, batch_requests.c.claimed_by.not_in(alive))


def give_back(db: sa.Engine, instance_id: str) -> int:
    """Queue again what this front end still runs (it is stopping); returns how many."""
    return _unclaim(db, batch_requests.c.claimed_by == instance_id)


def _unclaim(db: sa.Engine, claimed: sa.ColumnElement[bool]) -> int:
    with db.begin() as conn:
        return conn.execute(
            batch_requests.update()
            .where(batch_requests.c.status == RUNNING, claimed)
            .values(status=QUEUED, claimed_by=None)
        ).rowcount


def expire(db: sa.Engine) -> int:
    """Requests still queued in batches past their `expires_at` become expired; returns how many."""
    moment = now()
    overdue = sa.select(message_batches.c.id).where(
        message_batches.c.ended_at.is_(None), message_batches.c.expires_at <= moment
    )
    with db.begin() as conn:
        return conn.execute(
            batch_requests.update()
            .where(batch_requests.c.status == QUEUED, batch_requests.c.batch_id.in_(overdue))
            .values(status=EXPIRED, finished_at=moment)
        ).rowcount


def end_finished(db: sa.Engine) -> list[str]:
    """End every batch left with nothing queued or running; returns their ids."""
    moment = now()
    with db.begin() as conn:
        open_ids = list(conn.execute(sa.select(message_batches.c.id).where(message_batches.c.ended_at.is_(None))).scalars())
        return [batch_id for batch_id in open_ids if _end_if_done(conn, batch_id, moment)]


def purge(db: sa.Engine, created_before: datetime) -> int:
    """Drop the params and results of batches created before `created_before`, marking them archived."""
    moment = now()
    old = sa.select(message_batches.c.id).where(
        message_batches.c.created_at < created_before, message_batches.c.archived_at.is_(None),
        message_batches.c.ended_at.is_not(None),
    )  # fmt: skip
    with db.begin() as conn:
        ids = list(conn.execute(old).scalars())
        if ids:
            conn.execute(
                batch_requests.update().where(batch_requests.c.batch_id.in_(ids)).values(params=None, result=None)
            )
            conn.execute(message_batches.update().where(message_batches.c.id.in_(ids)).values(archived_at=moment))
    return len(ids)


def open_counts(db: sa.Engine) -> dict[str, dict[str, int]]:
    """The requests of every batch not yet ended, by status (progress and metrics)."""
    open_ids = sa.select(message_batches.c.id).where(message_batches.c.ended_at.is_(None))
    query = (
        sa.select(batch_requests.c.batch_id, batch_requests.c.status, sa.func.count())
        .where(batch_requests.c.batch_id.in_(open_ids))
        .group_by(batch_requests.c.batch_id, batch_requests.c.status)
    )
    found: dict[str, dict[str, int]] = {}
    with db.connect() as conn:
        for batch_id, status, number in conn.execute(query):
            found.setdefault(batch_id, {})[status] = int(number)
    return found


def _lock(conn: sa.Connection, batch_id: str) -> None:
    """Serialise the writers of one batch (PostgreSQL; SQLite has one writer anyway)."""
    conn.execute(sa.select(message_batches.c.id).where(message_batches.c.id == batch_id).with_for_update())


def _end_if_done(conn: sa.Connection, batch_id: str, moment: datetime) -> bool:
    pending = sa.select(batch_requests.c.id).where(
        batch_requests.c.batch_id == batch_id, batch_requests.c.status.in_(PENDING)
    )
    return bool(
        conn.execute(
            message_batches.update()
            .where(message_batches.c.id == batch_id, message_batches.c.ended_at.is_(None), ~pending.exists())
            .values(ended_at=moment)
        ).rowcount
    )
