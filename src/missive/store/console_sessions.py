"""Console sessions (docs/console.md): a random token in an HttpOnly cookie, stored here as its SHA-256
hash with the admin key it stands for, its CSRF token and its expiry. A row that is gone (signed out,
expired and pruned) or whose admin key is disabled no longer signs anyone in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from missive.store.db import admin_keys, metadata
from missive.store.keys import _admin_key, hash_key
from missive.wire.admin import AdminKey
from missive.wire.times import now, utc

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("admin_key_id", sa.String(40), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class SessionRow:
    admin_key: AdminKey
    csrf_token: str
    expires_at: datetime


def create_session(db: sa.Engine, token: str, admin_key_id: str, csrf_token: str, ttl: float) -> datetime:
    """Store a new session (and drop expired ones); returns its expiry."""
    created = now()
    expires = created + timedelta(seconds=ttl)
    with db.begin() as conn:
        conn.execute(console_sessions.delete().where(console_sessions.c.expires_at <= created))
        conn.execute(
            console_sessions.insert().values(
                token_hash=hash_key(token),
                admin_key_id=admin_key_id,
                csrf_token=csrf_token,
                created_at=created,
                expires_at=expires,
            )
        )
    return expires


def find_session(db: sa.Engine, token: str) -> SessionRow | None:
    """The unexpired session of this token whose admin key is still active."""
    query = (
        sa.select(
            admin_keys, console_sessions.c.csrf_token, console_sessions.c.expires_at.label("session_expires")
        )
        .join(admin_keys, admin_keys.c.id == console_sessions.c.admin_key_id)
        .where(console_sessions.c.token_hash == hash_key(token), admin_keys.c.disabled_at.is_(None))
    )
    with db.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    expires = utc(row.session_expires)
    assert expires is not None
    if expires <= now():
        return None
    return SessionRow(_admin_key(row), row.csrf_token, expires)


def end_session(db: sa.Engine, token: str) -> None:
    with db.begin() as conn:
        conn.execute(console_sessions.delete().where(console_sessions.c.token_hash == hash_key(token)))


def expire_session(db: sa.Engine, token: str) -> None:
    """Move a session's expiry into the past (what the tests use to see an expired session refused)."""
    with db.begin() as conn:
        conn.execute(
            console_sessions.update()
            .where(console_sessions.c.token_hash == hash_key(token))
            .values(expires_at=now() - timedelta(seconds=1))
        )
