"""The console's pages and form actions. Each reads the request, calls the Admin API's operations (as the
signed-in admin key may do them), the batches service or the pipeline, and renders a template."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from missive.batches import service as batch_service
from missive.console import engines_view, sessions, usage, workbench
from missive.console.web import BASE, admin_of, call, form, redirect, refused, render, signed_in
from missive.wire.admin_params import KeyCreate, KeyListQuery, KeyUpdate, WorkspaceCreate, WorkspaceUpdate
from missive.wire.errors import ApiError
from missive.wire.models import ListQuery
from missive.wire.requests import first_error_message


def _script_json(value: Any) -> str:
    """JSON to embed in a <script type="application/json">: no `<` that could close the element."""
    return json.dumps(value).replace("<", "\\u003c")


# --- sign-in and sign-out


async def sign_in_page(request: Request) -> Response:
    token = sessions.new_token()
    message = "Your session has ended. Sign in again." if request.query_params.get("expired") else None
    response = render(request, "sign_in.html", login_csrf=token, error=message, next=_next(request))
    response.set_cookie(
        sessions.LOGIN_CSRF_COOKIE, token, max_age=3600, path=BASE, httponly=True, samesite="strict"
    )
    return response


def _next(request: Request, fields: dict[str, str] | None = None) -> str:
    target = (fields or {}).get("next") or request.query_params.get("next") or f"{BASE}/usage"
    return target if target.startswith(BASE + "/") and not target.startswith("//") else f"{BASE}/usage"


async def sign_in(request: Request) -> Response:
    fields = await form(request)
    if not sessions.same_token(request.cookies.get(sessions.LOGIN_CSRF_COOKIE, ""), fields.get("csrf")):
        return refused(
            request, 403, "Refused", "The sign-in form is out of date. Reload the page and try again."
        )
    state = request.app.state
    ttl = state.settings.console.session_ttl
    session = await sessions.sign_in(state.db, fields.get("key", ""), ttl)
    if session is None:
        token = sessions.new_token()
        response = render(
            request,
            "sign_in.html",
            status=401,
            login_csrf=token,
            next=_next(request, fields),
            error="That is not an active admin key. Admin keys start with sk-missive-admin- "
            "(create one with `missive keys create --admin --name NAME`).",
        )
        response.set_cookie(
            sessions.LOGIN_CSRF_COOKIE, token, max_age=3600, path=BASE, httponly=True, samesite="strict"
        )
        return response
    response = redirect(_next(request, fields).removeprefix(BASE))
    secure = state.settings.console.secure_cookie or request.url.scheme == "https"
    response.set_cookie(
        sessions.COOKIE,
        session.token,
        max_age=int(ttl),
        path=BASE,
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path=BASE)
    return response


@signed_in
async def sign_out(request: Request) -> Response:
    await sessions.sign_out(request.app.state.db, request.state.session.token)
    response = redirect("/sign-in")
    response.delete_cookie(sessions.COOKIE, path=BASE)
    return response


async def home(request: Request) -> Response:
    return redirect("/usage")


# --- API keys


async def _names(request: Request) -> dict[str, str]:
    """Ids -> names of the keys and workspaces this admin sees, for labels."""
    admin = admin_of(request)
    keys = await call(admin.keys, KeyListQuery())
    spaces = await call(admin.workspaces, True)
    names = {key["id"]: key["name"] for key in keys} | {space["id"]: space["name"] for space in spaces}
    names[request.state.session.admin_key.id] = f"Workbench ({request.state.session.admin_key.name})"
    return names


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return "within the hour"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def _last_used(latest: dict[str, int], now: float) -> dict[str, str]:
    """Key id -> when it last had usage, to the hour (the end of the hour of its latest request)."""
    return {key: _ago(max(0.0, now - ts // 3600 * 3600 - 3600)) for key, ts in latest.items()}


@signed_in
async def keys_page(request: Request, created: dict[str, Any] | None = None, status: int = 200) -> Response:
    admin = admin_of(request)
    params = request.query_params
    workspace = params.get("workspace") or None
    show = params.get("status") or None
    try:
        query = KeyListQuery(workspace_id=workspace, status=show)  # type: ignore[arg-type]
    except ValueError:
        query = KeyListQuery()
    keys = await call(admin.keys, query)
    spaces = await call(admin.workspaces, False)
    now = time.time()
    latest = await call(admin.last_used, (int(now) // 3600 + 1 - 168) * 3600)  # the last 7 days, by hour
    return render(
        request,
        "keys.html",
        status=status,
        nav="keys",
        keys=keys,
        workspaces=spaces,
        last_used=_last_used(latest, now),
        chosen_workspace=workspace,
        chosen_status=show,
        created=created,
    )


@signed_in
async def key_create(request: Request) -> Response:
    fields = await form(request)
    try:
        body = KeyCreate(
            name=fields.get("name", "").strip(), workspace_id=fields.get("workspace_id") or "default"
        )
    except ValueError as exc:
        return redirect("/keys", error=_field_error(exc))
    created = await call(admin_of(request).create_key, body)
    return await keys_page.__wrapped__(request, created=created)  # type: ignore[attr-defined]


@signed_in
async def key_update(request: Request) -> Response:
    fields = await form(request)
    key_id = request.path_params["key_id"]
    try:
        if fields.get("action") == "rename":
            body = KeyUpdate(name=fields.get("name", "").strip())
        else:
            body = KeyUpdate(status=fields.get("status"))  # type: ignore[arg-type]
    except ValueError as exc:
        return redirect("/keys", error=_field_error(exc))
    updated = await call(admin_of(request).update_key, key_id, body)
    done = "renamed" if body.name else f"is {updated['status']}"
    return redirect("/keys", notice=f"{updated['name']} {done}.")


def _field_error(exc: ValueError) -> str:
    return first_error_message(exc) if isinstance(exc, ValidationError) else str(exc)


# --- workspaces


@signed_in
async def workspaces_page(request: Request) -> Response:
    admin = admin_of(request)
    archived = request.query_params.get("archived") == "1"
    spaces = await call(admin.workspaces, archived)
    tiers = sorted(request.app.state.settings.rate_limits.tiers)
    default_tier = request.app.state.settings.rate_limits.default_tier
    return render(
        request,
        "workspaces.html",
        nav="workspaces",
        workspaces=spaces,
        tiers=tiers,
        default_tier=default_tier,
        show_archived=archived,
    )


def _usd_fields(fields: dict[str, str], names: tuple[str, ...]) -> dict[str, str | None]:
    """Form fields of money: blank means none (cleared); `$` and spaces are ignored."""
    found: dict[str, str | None] = {}
    for name in names:
        if name in fields:
            text = fields[name].replace("$", "").replace(",", "").strip()
            found[name] = text or None
    return found


@signed_in
async def workspace_create(request: Request) -> Response:
    fields = await form(request)
    try:
        body = WorkspaceCreate(
            name=fields.get("name", "").strip(),
            rate_limit_tier=fields.get("rate_limit_tier") or None,
            **_usd_fields(fields, ("monthly_spend_limit", "credit_balance")),  # type: ignore[arg-type]
        )
    except ValueError as exc:
        return redirect("/workspaces", error=_field_error(exc))
    made = await call(admin_of(request).create_workspace, body)
    return redirect("/workspaces", notice=f"Workspace {made['name']} created.")


@signed_in
async def workspace_update(request: Request) -> Response:
    fields = await form(request)
    workspace_id = request.path_params["workspace_id"]
    admin = admin_of(request)
    if fields.get("action") == "archive":
        done = await call(admin.archive_workspace, workspace_id)
        return redirect("/workspaces", notice=f"Workspace {done['name']} archived.")
    changes: dict[str, Any] = _usd_fields(fields, ("monthly_spend_limit", "credit_balance"))
    if "rate_limit_tier" in fields:
        changes["rate_limit_tier"] = fields["rate_limit_tier"] or None
    if fields.get("name", "").strip():
        changes["name"] = fields["name"].strip()
    try:
        body = WorkspaceUpdate(**changes)
    except ValueError as exc:
        return redirect("/workspaces", error=_field_error(exc))
    done = await call(admin.update_workspace, workspace_id, body)
    return redirect("/workspaces", notice=f"Workspace {done['name']} saved.")


# --- workbench


@signed_in
async def workbench_page(request: Request) -> Response:
    admin = admin_of(request)
    spaces = await call(admin.workspaces, False)
    state = request.app.state
    models = workbench.models(state.registry, state.policy.pricing)
    return render(
        request,
        "workbench.html",
        nav="workbench",
        workspaces=spaces,
        models=models,
        models_json=_script_json(models),
        default_model=state.settings.default_model,
    )


@signed_in
async def workbench_messages(request: Request) -> Response:
    """The workbench's request, run by the pipeline as the signed-in admin in the chosen workspace: streamed
    as the SSE of /v1/messages, or refused with the API's JSON error."""
    try:
        return await workbench.run(
            request, admin_of(request), request.query_params.get("workspace", "default")
        )
    except ApiError as error:
        return JSONResponse(
            error.body(request.state.request_id), status_code=error.status, headers=error.headers
        )


@signed_in
async def workbench_check(request: Request) -> Response:
    """The request checked as the API checks it (count_tokens): its input tokens, or the API's error."""
    try:
        return await workbench.check(
            request, admin_of(request), request.query_params.get("workspace", "default")
        )
    except ApiError as error:
        return JSONResponse(error.body(request.state.request_id), status_code=error.status)


# --- usage and cost


@signed_in
async def usage_page(request: Request) -> Response:
    query = usage.Query.read(dict(request.query_params))
    names = await _names(request)
    started = time.perf_counter()
    figures = await call(usage.figures, admin_of(request), query, names)
    return render(
        request,
        "usage.html",
        nav="usage",
        query=query,
        ranges=usage.RANGES,
        groups=usage.GROUPS,
        figures=figures,
        figures_json=_script_json(figures),
        kinds=usage.KINDS,
        built_ms=round((time.perf_counter() - started) * 1000),
    )


@signed_in
async def usage_csv(request: Request) -> Response:
    query = usage.Query.read(dict(request.query_params))
    names = await _names(request)
    cost = request.url.path.endswith("cost.csv")
    text = await call(usage.cost_csv if cost else usage.usage_csv, admin_of(request), query, names)
    filename = f"missive-{'cost' if cost else 'usage'}-{query.range}-by-{query.group}.csv"
    return PlainTextResponse(
        text, media_type="text/csv", headers={"content-disposition": f'attachment; filename="{filename}"'}
    )


# --- rate limits


@signed_in
async def limits_page(request: Request) -> Response:
    admin = admin_of(request)
    spaces = await call(admin.workspaces, False)
    state = request.app.state
    rows = await engines_view.limits(state.settings.rate_limits, state.policy.limiter, state.registry, spaces)
    return render(request, "limits.html", nav="limits", rows=rows)


# --- batches


def _results_url(batch_id: str) -> str:
    return f"{BASE}/batches/{batch_id}/results"


@signed_in
async def batches_page(request: Request) -> Response:
    scope = request.state.session.admin_key.workspace_id
    db = request.app.state.db
    page = await call(batch_service.list_page, db, scope, ListQuery(limit=100), _results_url)
    progress = await call(batch_service.progress, db, [batch["id"] for batch in page["data"]])
    return render(request, "batches.html", nav="batches", batches=page["data"], progress=progress)


@signed_in
async def batch_cancel(request: Request) -> Response:
    scope = request.state.session.admin_key.workspace_id
    batch = await call(batch_service.cancel, request.app.state.db, request.path_params["batch_id"], scope)
    return redirect("/batches", notice=f"Batch {batch.id} is {batch.processing_status}.")


@signed_in
async def batch_results(request: Request) -> Response:
    scope = request.state.session.admin_key.workspace_id
    batch_id = request.path_params["batch_id"]
    lines = await call(batch_service.results, request.app.state.db, batch_id, scope)
    return StreamingResponse(
        lines,
        media_type="application/x-jsonl",
        headers={"content-disposition": f'attachment; filename="{batch_id}_results.jsonl"'},
    )


# --- models and engines


@signed_in
async def models_page(request: Request) -> Response:
    state = request.app.state
    models = engines_view.models(state.registry, state.settings)
    figures = await engines_view.headline(state.engines)
    return render(
        request,
        "models.html",
        nav="models",
        models=models,
        engines=engines_view.engines(state),
        figures=figures,
    )
