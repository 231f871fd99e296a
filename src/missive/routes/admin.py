"""The Admin API's routes (spec §1.4): each reads the request (bodies under the one size limit of every
route), runs its operation of gateway/admin.py in a thread (the store is synchronous) and renders it.
Admin keys only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from missive.gateway.admin import Admin
from missive.gateway.auth import authenticate_admin
from missive.routes.context import read_body
from missive.wire import reports
from missive.wire.admin_params import (
    KeyCreate,
    KeyListQuery,
    KeyUpdate,
    WorkspaceCreate,
    WorkspaceListQuery,
    WorkspaceUpdate,
)
from missive.wire.errors import invalid
from missive.wire.models import paginate
from missive.wire.requests import first_error_message

Params = TypeVar("Params", bound=BaseModel)


async def _admin(request: Request) -> Admin:
    state = request.app.state
    key = await authenticate_admin(state.db, request.headers)
    return Admin(state.db, key, state.settings.rate_limits.tiers)


async def _call(operation: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(operation, *args)


async def _body(request: Request, model: type[Params]) -> Params:
    raw = await read_body(request)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None


def _query(request: Request, model: type[Params]) -> Params:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None


async def get_organization(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.organization))


async def list_workspaces(request: Request) -> JSONResponse:
    admin = await _admin(request)
    query = _query(request, WorkspaceListQuery)
    items = await _call(admin.workspaces, query.include_archived)
    return JSONResponse(paginate(items, query))


async def create_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.create_workspace, await _body(request, WorkspaceCreate)))


async def get_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.workspace, request.path_params["workspace_id"]))


async def update_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    body = await _body(request, WorkspaceUpdate)
    return JSONResponse(await _call(admin.update_workspace, request.path_params["workspace_id"], body))


async def archive_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.archive_workspace, request.path_params["workspace_id"]))


async def list_keys(request: Request) -> JSONResponse:
    admin = await _admin(request)
    query = _query(request, KeyListQuery)
    return JSONResponse(paginate(await _call(admin.keys, query), query))


async def create_key(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.create_key, await _body(request, KeyCreate)))


async def get_key(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.api_key, request.path_params["key_id"]))


async def update_key(request: Request) -> JSONResponse:
    admin = await _admin(request)
    body = await _body(request, KeyUpdate)
    return JSONResponse(await _call(admin.update_key, request.path_params["key_id"], body))


def _list_param(request: Request, name: str) -> list[str]:
    values = [*request.query_params.getlist(f"{name}[]"), *request.query_params.getlist(name)]
    if any("\x00" in value for value in values):
        raise invalid(f"{name}: String should not contain NUL characters")
    return values


Report = tuple[reports.Window, list[str], dict[str, list[str]]]


def _report(request: Request, groups: tuple[str, ...]) -> Report:
    """The window, the group_by and the filters of a report's query."""
    params = request.query_params
    win = reports.window(
        params.get("starting_at"), params.get("ending_at"), params.get("bucket_width", "1d"),
        params.get("limit"), params.get("page"),
    )  # fmt: skip
    group_by = _list_param(request, "group_by")
    for name in group_by:
        if name not in groups:
            raise invalid(f"group_by: Input should be {', '.join(repr(item) for item in groups)}")
    filters = {
        "api_key_id": _list_param(request, "api_key_ids"),
        "workspace_id": _list_param(request, "workspace_ids"),
        "model": _list_param(request, "models"),
        "service_tier": _list_param(request, "service_tiers"),
    }
    return win, group_by, filters


async def usage_report(request: Request) -> JSONResponse:
    admin = await _admin(request)
    return JSONResponse(await _call(admin.usage_report, *_report(request, reports.USAGE_GROUPS)))


async def cost_report(request: Request) -> JSONResponse:
    admin = await _admin(request)
    if request.query_params.get("bucket_width", "1d") != "1d":
        raise invalid("bucket_width: Input should be '1d'")
    return JSONResponse(await _call(admin.cost_report, *_report(request, reports.COST_GROUPS)))


def routes() -> list[Route]:
    base = "/v1/organizations"
    return [
        Route(f"{base}/me", get_organization, methods=["GET"]),
        Route(f"{base}/workspaces", list_workspaces, methods=["GET"]),
        Route(f"{base}/workspaces", create_workspace, methods=["POST"]),
        Route(f"{base}/workspaces/{{workspace_id}}", get_workspace, methods=["GET"]),
        Route(f"{base}/workspaces/{{workspace_id}}", update_workspace, methods=["POST"]),
        Route(f"{base}/workspaces/{{workspace_id}}/archive", archive_workspace, methods=["POST"]),
        Route(f"{base}/api_keys", list_keys, methods=["GET"]),
        Route(f"{base}/api_keys", create_key, methods=["POST"]),
        Route(f"{base}/api_keys/{{key_id}}", get_key, methods=["GET"]),
        Route(f"{base}/api_keys/{{key_id}}", update_key, methods=["POST"]),
        Route(f"{base}/usage_report/messages", usage_report, methods=["GET"]),
        Route(f"{base}/cost_report", cost_report, methods=["GET"]),
    ]
