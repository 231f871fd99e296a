"""The Message Batches API (spec §13): `/v1/messages/batches` and its `{id}`, `cancel` and `results`.
API keys, scoped to their workspace: another workspace's batch is a 404. The operations are in
batches/service.py; the worker that runs the requests, batches/worker.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from missive.batches import service
from missive.routes.context import call_context, read_body
from missive.wire.errors import invalid
from missive.wire.models import ListQuery
from missive.wire.requests import first_error_message

BASE = "/v1/messages/batches"


def _url_for(request: Request) -> service.UrlFor:
    """Results URLs: under `public_url`, or paths, which the SDKs join to the base URL they were given."""
    base = (request.app.state.settings.public_url or "").rstrip("/")
    return lambda batch_id: f"{base}{BASE}/{batch_id}/results"


async def _run(operation: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(operation, *args)


async def create_batch(request: Request) -> Response:
    call = await call_context(request)
    state = request.app.state
    config = state.settings.batches
    body = await read_body(request, config.max_bytes)
    principal = call.principal
    batch = await _run(
        service.create, state.db, config, principal.key_id, principal.workspace_id, call.version, call.betas.sent, body
    )
    state.batch_worker.wake()
    return JSONResponse(await _run(service.view, state.db, batch, _url_for(request)))


async def list_batches(request: Request) -> Response:
    call = await call_context(request)
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None
    db = request.app.state.db
    return JSONResponse(await _run(service.list_page, db, call.principal.workspace_id, query, _url_for(request)))


async def get_batch(request: Request) -> Response:
    call = await call_context(request)
    db = request.app.state.db
    batch = await _run(service.find, db, request.path_params["batch_id"], call.principal.workspace_id)
    return JSONResponse(await _run(service.view, db, batch, _url_for(request)))


async def cancel_batch(request: Request) -> Response:
    call = await call_context(request)
    db = request.app.state.db
    batch = await _run(service.cancel, db, request.path_params["batch_id"], call.principal.workspace_id)
    return JSONResponse(await _run(service.view, db, batch, _url_for(request)))


async def delete_batch(request: Request) -> Response:
    call = await call_context(request)
    db = request.app.state.db
    return JSONResponse(await _run(service.delete, db, request.path_params["batch_id"], call.principal.workspace_id))


async def batch_results(request: Request) -> Response:
    """JSONL, streamed a page of rows at a time (Starlette runs the iterator in a thread)."""
    call = await call_context(request)
    lines = await _run(service.results, request.app.state.db, request.path_params["batch_id"], call.principal.workspace_id)
    return StreamingResponse(lines, media_type="application/x-jsonl")


def routes() -> list[Route]:
    return [
        Route(BASE, create_batch, methods=["POST"]),
        Route(BASE, list_batches, methods=["GET"]),
        Route(BASE + "/{batch_id}", get_batch, methods=["GET"]),
        Route(BASE + "/{batch_id}", delete_batch, methods=["DELETE"]),
        Route(BASE + "/{batch_id}/cancel", cancel_batch, methods=["POST"]),
        Route(BASE + "/{batch_id}/results", batch_results, methods=["GET"]),
    ]
