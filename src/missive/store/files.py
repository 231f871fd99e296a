"""Files' metadata as stored: one row per file, scoped to a workspace (None: the operator's view).

A file past its `expires_at` is gone for every read here at once; `expired` hands its rows to the
sweep that removes them and their bytes. Lists are newest first, paged on (created_at, id).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from missive.store.db import files
from missive.wire.files import FileRecord
from missive.wire.times import utc


def _record(row: sa.Row) -> FileRecord:  # type: ignore[type-arg]
    return FileRecord(
        id=row.id,
        workspace_id=row.workspace_id,
        key_id=row.key_id,
        filename=row.filename,
        mime_type=row.mime_type,
        size_bytes=int(row.size_bytes),
        sha256=row.sha256,
        created_at=utc(row.created_at),  # type: ignore[arg-type]
        expires_at=utc(row.expires_at),
    )


def _visible(workspace_id: str | None, moment: datetime) -> list[sa.ColumnElement[bool]]:
    alive = sa.or_(files.c.expires_at.is_(None), files.c.expires_at > moment)
    return [alive] if workspace_id is None else [alive, files.c.workspace_id == workspace_id]


def insert(db: sa.Engine, record: FileRecord) -> None:
    with db.begin() as conn:
        conn.execute(
            files.insert().values(
                id=record.id,
                workspace_id=record.workspace_id,
                key_id=record.key_id,
                filename=record.filename,
                mime_type=record.mime_type,
                size_bytes=record.size_bytes,
                sha256=record.sha256,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
        )


def get(db: sa.Engine, file_id: str, workspace_id: str | None, moment: datetime) -> FileRecord | None:
    """The file, if it exists, has not expired and belongs to `workspace_id` (None: any workspace)."""
    query = sa.select(files).where(files.c.id == file_id, *_visible(workspace_id, moment))
    with db.connect() as conn:
        row = conn.execute(query).first()
    return _record(row) if row else None


def page(
    db: sa.Engine, workspace_id: str | None, moment: datetime, limit: int, after_id: str | None = None,
    before_id: str | None = None,
) -> tuple[list[FileRecord], bool]:  # fmt: skip
    """Up to `limit` files, newest first, and whether there are more beyond them: those after
    `after_id` (older), or those just before `before_id` (newer). An unknown cursor is an empty page."""
    where = _visible(workspace_id, moment)
    newest_first = (files.c.created_at.desc(), files.c.id.desc())
    cursor_id = after_id or before_id
    with db.connect() as conn:
        if cursor_id is not None:
            cursor = conn.execute(sa.select(files.c.created_at).where(files.c.id == cursor_id, *where)).first()
            if cursor is None:
                return [], False
            at = cursor.created_at
            if after_id is not None:
                where.append(sa.or_(files.c.created_at < at, sa.and_(files.c.created_at == at, files.c.id < after_id)))
            else:
                where.append(sa.or_(files.c.created_at > at, sa.and_(files.c.created_at == at, files.c.id > before_id)))
                oldest_first = (files.c.created_at.asc(), files.c.id.asc())
                rows = conn.execute(sa.select(files).where(*where).order_by(*oldest_first).limit(limit + 1)).all()
                return [_record(row) for row in reversed(rows[:limit])], len(rows) > limit
        rows = conn.execute(sa.select(files).where(*where).order_by(*newest_first).limit(limit + 1)).all()
    return [_record(row) for row in rows[:limit]], len(rows) > limit


def among(db: sa.Engine, workspace_id: str | None, moment: datetime, ids: list[str]) -> list[FileRecord]:
    """Those of `ids` that are visible, newest first; the others are left out."""
    query = sa.select(files).where(files.c.id.in_(ids), *_visible(workspace_id, moment))
    with db.connect() as conn:
        rows = conn.execute(query.order_by(files.c.created_at.desc(), files.c.id.desc())).all()
    return [_record(row) for row in rows]


def delete(db: sa.Engine, file_id: str) -> bool:
    """Remove the row; False when another request removed it first."""
    with db.begin() as conn:
        return conn.execute(files.delete().where(files.c.id == file_id)).rowcount > 0


def expired(db: sa.Engine, moment: datetime, limit: int = 500) -> list[str]:
    """Ids of files past their expiry (their rows are removed by `delete`, one by one)."""
    query = sa.select(files.c.id).where(files.c.expires_at <= moment).limit(limit)
    with db.connect() as conn:
        return list(conn.execute(query).scalars())


def totals(db: sa.Engine, workspace_id: str | None = None) -> tuple[int, int]:
    """(files, bytes) stored, expired ones not yet swept included."""
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size_bytes), 0))
    if workspace_id is not None:
        query = query.where(files.c.workspace_id == workspace_id)
    with db.connect() as conn:
        count, size = conn.execute(query).one()
    return int(count), int(size)
