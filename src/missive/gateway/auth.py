"""Who is calling: `x-api-key`, or `Authorization: Bearer` (which wins when both are sent).

Every request looks its key up in the store, so a key disabled, archived or expired anywhere is
refused on the very next request, on every front end. Only key ids are ever logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
import sqlalchemy as sa
from starlette.datastructures import Headers

from missive.store.keys import find_active_key, find_admin_key, find_caller
from missive.wire.admin import AdminKey, Workspace
from missive.wire.errors import ApiError


@dataclass(frozen=True)
class Principal:
    key_id: str
    workspace_id: str
    workspace: Workspace | None = None  # tier, spend limit and balance as of this request


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def _principal(db: sa.Engine, secret: str) -> Principal | None:
    found = find_caller(db, secret)
    if found is None:
        return None
    key, workspace = found
    return Principal(key.id, key.workspace_id, workspace)


async def authenticate(db: sa.Engine, headers: Headers) -> Principal:
    secret = presented_key(headers)
    if secret is None:
        raise ApiError(401, "x-api-key header is required")
    principal = await anyio.to_thread.run_sync(_principal, db, secret)
    if principal is None:
        raise ApiError(401, "invalid x-api-key")
    return principal


def _admin(db: sa.Engine, secret: str) -> AdminKey | ApiError:
    admin = find_admin_key(db, secret)
    if admin is not None:
        return admin
    if find_active_key(db, secret) is not None:
        return ApiError(403, "This endpoint requires an admin API key; API keys cannot use the Admin API.")
    return ApiError(401, "invalid x-api-key")


async def authenticate_admin(db: sa.Engine, headers: Headers) -> AdminKey:
    """An active admin key, or 401 (no or unknown key) / 403 (an ordinary API key)."""
    secret = presented_key(headers)
    if secret is None:
        raise ApiError(401, "x-api-key header is required")
    result = await anyio.to_thread.run_sync(_admin, db, secret)
    if isinstance(result, ApiError):
        raise result
    return result
