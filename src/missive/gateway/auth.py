"""Who is calling: `x-api-key`, or `Authorization: Bearer` (which wins when both are sent)."""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
import sqlalchemy as sa
from starlette.datastructures import Headers

from missive.store.keys import find_active_key
from missive.wire.errors import ApiError


@dataclass(frozen=True)
class Principal:
    key_id: str
    workspace_id: str


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


async def authenticate(db: sa.Engine, headers: Headers) -> Principal:
    secret = presented_key(headers)
    if secret is None:
        raise ApiError(401, "x-api-key header is required")
    key = await anyio.to_thread.run_sync(find_active_key, db, secret)
    if key is None:
        raise ApiError(401, "invalid x-api-key")
    return Principal(key.id, key.workspace_id)
