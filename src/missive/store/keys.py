"""API keys: created once, shown once, stored as a SHA-256 hash with a short hint for display.

Keys are 256-bit random secrets, so a fast hash is the right tool (nothing to brute-force), and the
lookup is by hash, so no comparison of secrets happens in Python.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from missive.store.db import api_keys
from missive.wire.ids import new_id

KEY_PREFIX = "sk-missive-"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    workspace_id: str
    hint: str
    created_at: datetime
    disabled_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _hint(secret: str) -> str:
    return f"{secret[:len(KEY_PREFIX) + 4]}...{secret[-4:]}"


def create_key(db: sa.Engine, name: str, workspace_id: str = "default") -> tuple[ApiKey, str]:
    """Create a key; return it and its secret, which is never stored and cannot be shown again."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(new_id("apikey_"), name, workspace_id, _hint(secret), datetime.now(UTC), None)
    with db.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                workspace_id=key.workspace_id,
                key_hash=hash_key(secret),
                hint=key.hint,
                created_at=key.created_at,
            )
        )
    return key, secret


def find_active_key(db: sa.Engine, secret: str) -> ApiKey | None:
    with db.connect() as conn:
        row = conn.execute(
            sa.select(api_keys).where(api_keys.c.key_hash == hash_key(secret), api_keys.c.disabled_at.is_(None))
        ).first()
    return _key(row) if row else None


def list_keys(db: sa.Engine) -> list[ApiKey]:
    with db.connect() as conn:
        rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
    return [_key(row) for row in rows]


def count_keys(db: sa.Engine) -> int:
    with db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()


def disable_key(db: sa.Engine, key_id: str) -> bool:
    with db.begin() as conn:
        result = conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.disabled_at.is_(None))
            .values(disabled_at=datetime.now(UTC))
        )
    return result.rowcount > 0


def _key(row: sa.Row) -> ApiKey:
    return ApiKey(row.id, row.name, row.workspace_id, row.hint, row.created_at, row.disabled_at)
