"""What every API route does first: who is calling, which API version and betas, the body."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from missive.gateway.auth import Principal, authenticate
from missive.wire.betas import Betas, parse_betas
from missive.wire.errors import ApiError, invalid
from missive.wire.requests import first_error_message

API_VERSIONS = ("2023-06-01", "2026-10-21")
Params = TypeVar("Params", bound=BaseModel)
log = logging.getLogger("missive.betas")
_unknown_logged: set[str] = set()  # each unknown beta is logged once per process


@dataclass(frozen=True)
class CallContext:
    principal: Principal
    version: str
    betas: Betas


async def call_context(request: Request) -> CallContext:
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
    return CallContext(principal, version, betas)


async def read_params(request: Request, model: type[Params]) -> Params:
    limit = request.app.state.settings.max_request_bytes
    too_large = ApiError(413, "Request exceeds the maximum allowed number of bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise invalid("Request body is empty; expected a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None
