"""Console sign-in: an admin key becomes a session (a random token in an HttpOnly, SameSite=Strict cookie
with an expiry), stored server-side, so that sign-out, expiry and disabling the admin key end it on every
front end. Each session has its own CSRF token, which every form and every script's POST must carry."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import anyio.to_thread
import sqlalchemy as sa

from missive.store import console_sessions as store
from missive.store.keys import find_admin_key
from missive.wire.admin import AdminKey

COOKIE = "missive_console"
LOGIN_CSRF_COOKIE = "missive_console_login"  # double-submit token of the sign-in form (no session yet)


@dataclass(frozen=True)
class Session:
    token: str
    admin_key: AdminKey
    csrf_token: str
    expires_at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _sign_in(db: sa.Engine, secret: str, ttl: float) -> Session | None:
    admin_key = find_admin_key(db, secret.strip())
    if admin_key is None:
        return None
    token, csrf = new_token(), new_token()
    expires = store.create_session(db, token, admin_key.id, csrf, ttl)
    return Session(token, admin_key, csrf, expires)


async def sign_in(db: sa.Engine, secret: str, ttl: float) -> Session | None:
    """A new session for an active admin key; None for any other secret."""
    if not secret or "\x00" in secret or len(secret) > 200:
        return None
    return await anyio.to_thread.run_sync(_sign_in, db, secret, ttl)


def _find(db: sa.Engine, token: str) -> Session | None:
    row = store.find_session(db, token)
    return Session(token, row.admin_key, row.csrf_token, row.expires_at) if row else None


async def find(db: sa.Engine, token: str | None) -> Session | None:
    if not token or len(token) > 100:
        return None
    return await anyio.to_thread.run_sync(_find, db, token)


async def sign_out(db: sa.Engine, token: str) -> None:
    await anyio.to_thread.run_sync(store.end_session, db, token)


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
