"""The Admin API (spec §1.4): workspaces, API keys, usage and cost reports. Admin keys only.

An admin key of the whole organisation sees everything. An admin key scoped to a workspace (a team's
administrator) sees and manages only that workspace: its keys, its usage, its cost; other workspaces'
objects are 404 to it, and it cannot create, change or archive workspaces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from missive.gateway.auth import authenticate_admin
from missive.gateway.pricing import usd_to_pico
from missive.gateway.spend import month_start
from missive.routes.models import ListQuery, paginate
from missive.store import keys as key_store
from missive.store import ledger as ledger_store
from missive.store import reports as report_store
from missive.store import workspaces as workspace_store
from missive.store.keys import AdminKey
from missive.wire import reports
from missive.wire.admin import api_key_json, organization_json, workspace_json
from missive.wire.errors import ApiError, invalid, not_found
from missive.wire.requests import first_error_message


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("String should not contain NUL characters")
        return value


class WorkspaceCreate(_Body):
    name: str = Field(min_length=1, max_length=40)
    rate_limit_tier: str | None = None
    monthly_spend_limit: str | None = Field(default=None, description='USD, e.g. "100.00"')
    credit_balance: str | None = Field(default=None, description="USD of prepaid credit")


class WorkspaceUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=40)
    rate_limit_tier: str | None = None
    monthly_spend_limit: str | None = None
    credit_balance: str | None = None


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=500)
    workspace_id: str = "default"
    expires_at: datetime | None = None


class KeyUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=500)
    status: str | None = Field(default=None, pattern="^(active|inactive|archived)$")


class KeyListQuery(ListQuery):
    workspace_id: str | None = None
    status: str | None = None


class WorkspaceListQuery(ListQuery):
    include_archived: bool = False


async def _admin(request: Request) -> AdminKey:
    return await authenticate_admin(request.app.state.db, request.headers)


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


async def _body(request: Request, model: type[_Body]) -> Any:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None


def _query(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None


def _money(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        amount = usd_to_pico(value)
    except ArithmeticError:
        raise invalid(f"{name}: Input should be a decimal amount in USD") from None
    if amount < 0:
        raise invalid(f"{name}: Input should be greater than or equal to 0")
    return amount


def _check_tier(request: Request, tier: str | None) -> None:
    tiers = request.app.state.settings.rate_limits.tiers
    if tier is not None and tier not in tiers:
        raise invalid(f"rate_limit_tier: unknown tier `{tier}`; configured: {', '.join(sorted(tiers))}")


def _org_only(admin: AdminKey) -> None:
    if admin.workspace_id is not None:
        raise ApiError(403, "This admin key is scoped to one workspace and cannot manage workspaces.")


def _visible(admin: AdminKey, workspace_id: str | None) -> bool:
    return admin.workspace_id is None or admin.workspace_id == workspace_id


async def _workspace_json(request: Request, workspace: workspace_store.Workspace) -> dict[str, Any]:
    start = int(month_start(datetime.now(UTC)).timestamp())
    spent = await _run(ledger_store.spend_since, request.app.state.db, workspace.id, start)
    return workspace_json(workspace, spent)


async def get_organization(request: Request) -> JSONResponse:
    await _admin(request)
    return JSONResponse(organization_json(await _run(workspace_store.get_organization, request.app.state.db)))


async def list_workspaces(request: Request) -> JSONResponse:
    admin = await _admin(request)
    query: WorkspaceListQuery = _query(request, WorkspaceListQuery)
    found = await _run(workspace_store.list_workspaces, request.app.state.db, query.include_archived)
    items = [await _workspace_json(request, ws) for ws in found if _visible(admin, ws.id)]
    return JSONResponse(paginate(items, query))


async def create_workspace(request: Request) -> JSONResponse:
    _org_only(await _admin(request))
    body: WorkspaceCreate = await _body(request, WorkspaceCreate)
    _check_tier(request, body.rate_limit_tier)
    workspace = await _run(
        workspace_store.create_workspace,
        request.app.state.db,
        body.name,
        rate_limit_tier=body.rate_limit_tier,
        monthly_spend_limit=_money(body.monthly_spend_limit, "monthly_spend_limit"),
        credit_balance=_money(body.credit_balance, "credit_balance"),
    )
    return JSONResponse(await _workspace_json(request, workspace))


async def _find_workspace(request: Request, admin: AdminKey) -> workspace_store.Workspace:
    workspace_id = request.path_params["workspace_id"]
    workspace = (
        None
        if "\x00" in workspace_id
        else await _run(workspace_store.get_workspace, request.app.state.db, workspace_id)
    )
    if workspace is None or not _visible(admin, workspace_id):
        raise not_found(f"workspace {workspace_id} not found")
    return workspace


async def get_workspace(request: Request) -> JSONResponse:
    workspace = await _find_workspace(request, await _admin(request))
    return JSONResponse(await _workspace_json(request, workspace))


async def update_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    workspace = await _find_workspace(request, admin)
    _org_only(admin)
    body: WorkspaceUpdate = await _body(request, WorkspaceUpdate)
    changes: dict[str, Any] = {"name": body.name}
    for field in ("rate_limit_tier", "monthly_spend_limit", "credit_balance"):
        if field in body.model_fields_set:  # an explicit null clears it
            value = getattr(body, field)
            changes[field] = value if field == "rate_limit_tier" else _money(value, field)
    _check_tier(request, changes.get("rate_limit_tier"))
    try:
        updated = await _run(workspace_store.update_workspace, request.app.state.db, workspace.id, **changes)
    except workspace_store.WorkspaceError as exc:
        raise invalid(str(exc)) from None
    return JSONResponse(await _workspace_json(request, updated))


async def archive_workspace(request: Request) -> JSONResponse:
    admin = await _admin(request)
    workspace = await _find_workspace(request, admin)
    _org_only(admin)
    try:
        archived = await _run(workspace_store.archive_workspace, request.app.state.db, workspace.id)
    except workspace_store.WorkspaceError as exc:
        raise invalid(str(exc)) from None
    return JSONResponse(await _workspace_json(request, archived))


async def list_keys(request: Request) -> JSONResponse:
    admin = await _admin(request)
    query: KeyListQuery = _query(request, KeyListQuery)
    workspace_id = admin.workspace_id or query.workspace_id
    if admin.workspace_id and query.workspace_id not in (None, admin.workspace_id):
        return JSONResponse(paginate([], query))
    found = await _run(key_store.list_keys, request.app.state.db, workspace_id)
    items = [
        api_key_json(key) for key in reversed(found) if query.status in (None, key.status)
    ]  # newest first
    return JSONResponse(paginate(items, query))


async def create_key(request: Request) -> JSONResponse:
    """Missive's addition (the Claude API creates keys in its console): the secret is in `key`, once."""
    admin = await _admin(request)
    body: KeyCreate = await _body(request, KeyCreate)
    if not _visible(admin, body.workspace_id):
        raise not_found(f"workspace {body.workspace_id} not found")
    try:
        key, secret = await _run(
            key_store.create_key,
            request.app.state.db,
            body.name,
            body.workspace_id,
            expires_at=body.expires_at,
            created_by=admin.id,
        )
    except key_store.KeyStateError as exc:
        raise invalid(str(exc)) from None
    return JSONResponse({**api_key_json(key), "key": secret})


async def _find_key(request: Request, admin: AdminKey) -> key_store.ApiKey:
    key_id = request.path_params["key_id"]
    key = None if "\x00" in key_id else await _run(key_store.get_key, request.app.state.db, key_id)
    if key is None or not _visible(admin, key.workspace_id):
        raise not_found(f"api key {key_id} not found")
    return key


async def get_key(request: Request) -> JSONResponse:
    return JSONResponse(api_key_json(await _find_key(request, await _admin(request))))


async def update_key(request: Request) -> JSONResponse:
    admin = await _admin(request)
    key = await _find_key(request, admin)
    body: KeyUpdate = await _body(request, KeyUpdate)
    try:
        updated = await _run(
            key_store.update_key, request.app.state.db, key.id, name=body.name, status=body.status
        )
    except key_store.KeyStateError as exc:
        raise invalid(str(exc)) from None
    return JSONResponse(api_key_json(updated))


def _list_param(request: Request, name: str) -> list[str]:
    values = [*request.query_params.getlist(f"{name}[]"), *request.query_params.getlist(name)]
    if any("\x00" in value for value in values):
        raise invalid(f"{name}: String should not contain NUL characters")
    return values


def _limit(request: Request) -> int | None:
    value = request.query_params.get("limit")
    if value is None:
        return None
    if not value.isdigit():
        raise invalid("limit: Input should be a valid integer")
    return int(value)


def _report_window(request: Request, default_width: str) -> reports.Window:
    params = request.query_params
    return reports.window(
        params.get("starting_at"),
        params.get("ending_at"),
        params.get("bucket_width", default_width),
        _limit(request),
        params.get("page"),
    )


def _filters(request: Request, admin: AdminKey) -> dict[str, list[str]] | None:
    """The report filters; None when the caller asked only for what it may not see."""
    filters = {
        "api_key_id": _list_param(request, "api_key_ids"),
        "workspace_id": _list_param(request, "workspace_ids"),
        "model": _list_param(request, "models"),
        "service_tier": _list_param(request, "service_tiers"),
    }
    if admin.workspace_id is not None:  # a workspace's admin sees its own usage and nothing else
        asked = filters["workspace_id"]
        if asked and admin.workspace_id not in asked:
            return None
        filters["workspace_id"] = [admin.workspace_id]
    return filters


async def _summed(
    request: Request, win: reports.Window, group_by: list[str], admin: AdminKey
) -> list[dict[str, Any]]:
    filters = _filters(request, admin)
    if filters is None:
        return []
    return await _run(
        report_store.summed, request.app.state.db, win.start, win.end, win.width, group_by, filters
    )


def _group_by(request: Request, allowed: tuple[str, ...]) -> list[str]:
    group_by = _list_param(request, "group_by")
    for name in group_by:
        if name not in allowed:
            raise invalid(f"group_by: Input should be {', '.join(repr(item) for item in allowed)}")
    return group_by


async def usage_report(request: Request) -> JSONResponse:
    admin = await _admin(request)
    win = _report_window(request, "1d")
    group_by = _group_by(request, reports.USAGE_GROUPS)
    rows = await _summed(request, win, group_by, admin)
    return JSONResponse(reports.usage_report(win, rows, group_by))


async def cost_report(request: Request) -> JSONResponse:
    admin = await _admin(request)
    if request.query_params.get("bucket_width", "1d") != "1d":
        raise invalid("bucket_width: Input should be '1d'")
    win = _report_window(request, "1d")
    group_by = _group_by(request, reports.COST_GROUPS)
    columns = [name for name in ("workspace_id",) if name in group_by]
    if "description" in group_by:
        columns += ["model", "service_tier"]
    rows = await _summed(request, win, columns, admin)
    return JSONResponse(reports.cost_report(win, rows, group_by))


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
