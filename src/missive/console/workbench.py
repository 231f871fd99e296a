"""The workbench's requests: a Messages API body that the signed-in admin runs through the pipeline in one
of the workspaces it may see. The workspace's spend limit, credit and rate limits apply as to any key;
the ledger records the call under the admin key's id (the usage page labels it "Workbench")."""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from missive.console.engines_view import served
from missive.engines.registry import Registry
from missive.gateway.admin import Admin
from missive.gateway.auth import Principal
from missive.gateway.pricing import Pricing
from missive.pipeline import Call, Pipeline
from missive.routes.context import read_body
from missive.routes.messages import respond
from missive.store.workspaces import get_workspace
from missive.wire.betas import parse_betas
from missive.wire.errors import not_found

API_VERSION = "2023-06-01"


def models(registry: Registry, pricing: Pricing) -> list[dict[str, Any]]:
    """The models to pick from, with their limits and prices (USD per million tokens; none: free)."""
    rows = []
    for model_id, route in served(registry):
        price = pricing.price(model_id, route.targets[0].engine.name)
        if price is not None:
            cache_write = price.cache_write_5m if price.cache_write_5m is not None else price.input * 1.25
            cache_read = price.cache_read if price.cache_read is not None else price.input * 0.1
            prices = {
                "input": price.input,
                "output": price.output,
                "cache_write": cache_write,
                "cache_read": cache_read,
            }
        rows.append(
            {
                "id": model_id,
                "name": route.card.display_name,
                "max_output_tokens": route.card.max_output_tokens,
                "context_window": route.card.context_window,
                "thinking": route.card.capabilities.thinking,
                "price": prices if price is not None else None,
            }
        )
    return rows


async def _call(request: Request, admin: Admin, workspace_id: str) -> Call:
    await anyio.to_thread.run_sync(admin.workspace, workspace_id)  # 404 unless this admin may see it
    workspace = await anyio.to_thread.run_sync(get_workspace, request.app.state.db, workspace_id)
    if workspace is None or workspace.archived_at is not None:
        raise not_found(f"workspace {workspace_id} not found")
    settings = request.app.state.settings
    betas = parse_betas(request.headers.get("anthropic-beta"), settings.strict_betas, settings.extra_betas)
    principal = Principal(admin.key.id, workspace.id, workspace)
    return Call(principal, API_VERSION, betas, request.state.request_id)


async def run(request: Request, admin: Admin, workspace_id: str) -> Response:
    return await respond(request, await _call(request, admin, workspace_id))


async def check(request: Request, admin: Admin, workspace_id: str) -> Response:
    call = await _call(request, admin, workspace_id)
    pipeline: Pipeline = request.app.state.pipeline
    body = await read_body(request)
    input_tokens, _ = await pipeline.count_tokens(call, _without_generation_fields(body))
    return JSONResponse({"input_tokens": input_tokens})


def _without_generation_fields(body: bytes) -> bytes:
    """count_tokens takes the request less what only generation reads (max_tokens, stream, sampling)."""
    try:
        params = json.loads(body)
    except ValueError:
        return body  # the API's own error names the problem
    if isinstance(params, dict):
        for name in ("max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
                     "service_tier"):  # fmt: skip
            params.pop(name, None)
    return json.dumps(params).encode()
