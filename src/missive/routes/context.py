"""What every API route does first: who is calling, which API version and betas, the body."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request

from missive.gateway.auth import authenticate
from missive.pipeline import Call
from missive.wire.betas import parse_betas
from missive.wire.errors import ApiError, invalid
from missive.wire.requests import parse_body

API_VERSIONS = ("2023-06-01", "2026-10-21")
Params = TypeVar("Params", bound=BaseModel)
log = logging.getLogger("missive.betas")
_unknown_logged: set[str] = set()  # each unknown beta is logged once per process


async def call_context(request: Request) -> Call:
    state = request.app.state
    principal = await authenticate(state.db, request.headers)
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise invalid(f"anthropic-version: invalid version `{version}`; supported: {', '.join(API_VERSIONS)}")
    settings = state.settings
    betas = parse_betas(request.headers.get("anthropic-beta"), settings.strict_betas, settings.extra_betas)
    for name in betas.unknown:
        if name not in _unknown_logged:
            _unknown_logged.add(name)
            log.info("accepting unknown anthropic-beta %r (it enables nothing; strict_betas refuses it)", name)
    return Call(principal, version, betas, request.state.request_id)


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The body, refused with 413 past `limit` (default `max_request_bytes`) before more than that is read."""
    limit = limit or request.app.state.settings.max_request_bytes
    too_large = ApiError(413, "Request exceeds the maximum allowed number of bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to read the answer, but the log line says what happened
        raise invalid("The connection closed before the request body was complete.") from None
    return b"".join(chunks)


async def read_params(request: Request, model: type[Params]) -> Params:
    return parse_body(await read_body(request), model)
