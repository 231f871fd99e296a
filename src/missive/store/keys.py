"""API keys and admin keys: created once, shown once, stored as a SHA-256 hash with a short hint.

Keys are 256-bit random secrets, so a fast hash is the right tool (nothing to brute-force), and the
lookup is by hash, so no comparison of secrets happens in Python. Admin keys live in their own table:
an admin key never authenticates a model request, and an API key never reaches the Admin API.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa

from missive.store.db import admin_keys, api_keys, workspaces
from missive.store.workspaces import workspace_from_row
from missive.wire.admin import AdminKey, ApiKey, Workspace
from missive.wire.ids import new_id
from missive.wire.times import now, utc

KEY_PREFIX = "sk-missive-"
ADMIN_KEY_PREFIX = "sk-missive-admin-"


class KeyStateError(LookupError):
    """A key operation that cannot be done (unknown key, archived key)."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _hint(secret: str, prefix: str) -> str:
    return f"{secret[: len(prefix) + 4]}...{secret[-4:]}"


def create_key(
    db: sa.Engine,
    name: str,
    workspace_id: str = "default",
    *,
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key in an open workspace; return it and its secret, which is never stored and cannot be
    shown again."""
    _require_open_workspace(db, workspace_id)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        new_id("apikey_"),
        name,
        workspace_id,
        _hint(secret, KEY_PREFIX),
        now(),
        None,
        None,
        utc(expires_at),
        created_by,
    )
    with db.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                workspace_id=key.workspace_id,
                key_hash=hash_key(secret),
                hint=key.hint,
                created_at=key.created_at,
                expires_at=key.expires_at,
                created_by=created_by,
            )
        )
    return key, secret


def find_active_key(db: sa.Engine, secret: str) -> ApiKey | None:
    """The key with this secret, if it is active (not disabled, archived or expired)."""
    with db.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(secret))).first()
    key = _key(row) if row else None
    return key if key is not None and key.status == "active" else None


def find_caller(db: sa.Engine, secret: str) -> tuple[ApiKey, Workspace] | None:
    """An active key with this secret and its open workspace, in one query (every request does this)."""
    with db.connect() as conn:  # one statement, no transaction around it: no BEGIN/ROLLBACK round trips
        row = (
            conn.execution_options(isolation_level="AUTOCOMMIT")
            .execute(_CALLER, {"key_hash": hash_key(secret)})
            .first()
        )
    if row is None or row.ws_archived_at is not None:
        return None
    key = _key(row)
    if key.status != "active":
        return None
    return key, workspace_from_row(row, prefix="ws_")


def get_key(db: sa.Engine, key_id: str) -> ApiKey | None:
    with db.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    return _key(row) if row else None


def list_keys(db: sa.Engine, workspace_id: str | None = None) -> list[ApiKey]:
    """Keys oldest first, of one workspace or all."""
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if workspace_id is not None:
        query = query.where(api_keys.c.workspace_id == workspace_id)
    with db.connect() as conn:
        rows = conn.execute(query).all()
    return [_key(row) for row in rows]


def count_keys(db: sa.Engine) -> int:
    with db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()


def update_key(db: sa.Engine, key_id: str, *, name: str | None = None, status: str | None = None) -> ApiKey:
    """Rename a key, or set its status: `inactive` disables it at once, `active` re-enables it,
    `archived` retires it for good. An archived key cannot change."""
    key = get_key(db, key_id)
    if key is None:
        raise KeyStateError(f"no API key {key_id}")
    if key.status == "archived":
        raise KeyStateError(f"API key {key_id} is archived and cannot be changed")
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = name
    if status == "inactive" and not key.disabled_at:
        values["disabled_at"] = now()
    elif status == "active":
        values["disabled_at"] = None
    elif status == "archived":
        values["archived_at"] = now()
    if values:
        with db.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))
    updated = get_key(db, key_id)
    assert updated is not None
    return updated


def disable_key(db: sa.Engine, key_id: str) -> bool:
    with db.begin() as conn:
        result = conn.execute(
            api_keys.update()
            .where(
                api_keys.c.id == key_id, api_keys.c.disabled_at.is_(None), api_keys.c.archived_at.is_(None)
            )
            .values(disabled_at=now())
        )
    return result.rowcount > 0


def create_admin_key(db: sa.Engine, name: str, workspace_id: str | None = None) -> tuple[AdminKey, str]:
    """An admin key for the Admin API: of the whole organisation, or scoped to one workspace."""
    if workspace_id is not None:
        _require_open_workspace(db, workspace_id)
    secret = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
    key = AdminKey(new_id("admkey_"), name, workspace_id, _hint(secret, ADMIN_KEY_PREFIX), now(), None)
    with db.begin() as conn:
        conn.execute(
            admin_keys.insert().values(
                id=key.id,
                name=name,
                workspace_id=workspace_id,
                key_hash=hash_key(secret),
                hint=key.hint,
                created_at=key.created_at,
            )
        )
    return key, secret


def find_admin_key(db: sa.Engine, secret: str) -> AdminKey | None:
    with db.connect() as conn:
        row = conn.execute(
            sa.select(admin_keys).where(
                admin_keys.c.key_hash == hash_key(secret), admin_keys.c.disabled_at.is_(None)
            )
        ).first()
    return _admin_key(row) if row else None


def list_admin_keys(db: sa.Engine) -> list[AdminKey]:
    with db.connect() as conn:
        rows = conn.execute(sa.select(admin_keys).order_by(admin_keys.c.created_at)).all()
    return [_admin_key(row) for row in rows]


def disable_admin_key(db: sa.Engine, key_id: str) -> bool:
    with db.begin() as conn:
        result = conn.execute(
            admin_keys.update()
            .where(admin_keys.c.id == key_id, admin_keys.c.disabled_at.is_(None))
            .values(disabled_at=now())
        )
    return result.rowcount > 0


_WORKSPACE_COLUMNS = [column.label(f"ws_{column.name}") for column in workspaces.c]
_CALLER = (  # built once: the statement every request runs
    sa.select(api_keys, *_WORKSPACE_COLUMNS)
    .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


def _require_open_workspace(db: sa.Engine, workspace_id: str) -> None:
    with db.connect() as conn:
        row = conn.execute(sa.select(workspaces.c.archived_at).where(workspaces.c.id == workspace_id)).first()
    if row is None:
        raise KeyStateError(f"no workspace {workspace_id}")
    if row.archived_at is not None:
        raise KeyStateError(f"workspace {workspace_id} is archived")


def _key(row: sa.Row) -> ApiKey:  # type: ignore[type-arg]
    return ApiKey(
        row.id,
        row.name,
        row.workspace_id,
        row.hint,
        utc(row.created_at),  # type: ignore[arg-type]
        utc(row.disabled_at),
        utc(row.archived_at),
        utc(row.expires_at),
        row.created_by,
    )


def _admin_key(row: sa.Row) -> AdminKey:  # type: ignore[type-arg]
    created_at = utc(row.created_at)
    assert created_at is not None
    return AdminKey(row.id, row.name, row.workspace_id, row.hint, created_at, utc(row.disabled_at))
