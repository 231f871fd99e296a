"""What every API route does first: who is calling, which API version and betas, the body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from missive.gateway.auth import Principal, authenticate
from missive.wire.betas import parse_betas
from missive.wire.errors import ApiError, invalid
from missive.wire.requests import first_error_message

API_VERSIONS = ("2023-06-01", "2026-10-21")
Params = TypeVar("Params", bound=BaseModel)


@dataclass(frozen=True)
class CallContext:
    principal: Principal
    version: str
    betas: set[str]


async def call_context(request: Request) -> CallContext:
    state = request.app.state
    principal = await authenticate(state.db, request.headers)
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise invalid(f"anthropic-version: invalid version `{version}`; supported: {', '.join(API_VERSIONS)}")
    betas = parse_betas(request.headers.get("anthropic-beta"), state.settings.extra_betas)
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
