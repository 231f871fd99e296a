"""The Files API (`files-api-2025-04-14`): `/v1/files`, its `{file_id}` and `{file_id}/content`. API
keys, scoped to their workspace: another workspace's file is a 404. With the beta header a request
gets the beta's shapes, without it the generally available ones (wire/files.py). The operations are
in files/service.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from missive.files.service import FileService
from missive.pipeline import Call
from missive.routes.context import call_context
from missive.wire.errors import invalid
from missive.wire.files import FILES_BETA, BetaListQuery, ListQuery
from missive.wire.requests import first_error_message

BASE = "/v1/files"
Query = TypeVar("Query", bound=BaseModel)


def _service(request: Request) -> FileService:
    return request.app.state.files


def _beta(call: Call) -> bool:
    return FILES_BETA in call.betas


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise invalid("The connection closed before the request body was complete.") from None


def _query(request: Request, model: type[Query]) -> Query:
    params: dict[str, object] = dict(request.query_params)
    ids = request.query_params.getlist("ids") + request.query_params.getlist("ids[]")
    if ids:
        params["ids"] = ids
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None


async def upload_file(request: Request) -> Response:
    call = await call_context(request)
    principal = call.principal
    record = await _service(request).upload(
        principal.workspace_id,
        principal.key_id,
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        _body(request),
    )
    return JSONResponse(_service(request).view(record, _beta(call)))


async def list_files(request: Request) -> Response:
    call = await call_context(request)
    service = _service(request)
    workspace = call.principal.workspace_id
    if _beta(call):
        return JSONResponse(await service.list_beta(workspace, _query(request, BetaListQuery)))
    for name in ("after_id", "before_id"):
        if name in request.query_params:
            raise invalid(
                f"{name}: without the `{FILES_BETA}` beta, files are listed a page at a time with `page` "
                "(the next_page of the previous list); send the beta header to page by id"
            )
    return JSONResponse(await service.list_ga(workspace, _query(request, ListQuery)))


async def get_file(request: Request) -> Response:
    call = await call_context(request)
    service = _service(request)
    record = await service.find(call.principal.workspace_id, request.path_params["file_id"])
    return JSONResponse(service.view(record, _beta(call)))


async def file_content(request: Request) -> Response:
    call = await call_context(request)
    record, content = await _service(request).content(call.principal.workspace_id, request.path_params["file_id"])
    headers = {
        "content-length": str(record.size_bytes),
        "content-disposition": f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}",
    }
    return StreamingResponse(content, media_type=record.mime_type, headers=headers)


async def delete_file(request: Request) -> Response:
    call = await call_context(request)
    return JSONResponse(await _service(request).delete(call.principal.workspace_id, request.path_params["file_id"]))


def routes() -> list[Route]:
    return [
        Route(BASE, upload_file, methods=["POST"]),
        Route(BASE, list_files, methods=["GET"]),
        Route(BASE + "/{file_id}", get_file, methods=["GET"]),
        Route(BASE + "/{file_id}", delete_file, methods=["DELETE"]),
        Route(BASE + "/{file_id}/content", file_content, methods=["GET"]),
    ]
