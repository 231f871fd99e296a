"""What every console page shares: the templates, the session check, CSRF, forms and redirects."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

import missive
from missive.console import sessions
from missive.console.sessions import Session
from missive.gateway.admin import Admin
from missive.wire.errors import ApiError

BASE = "/console"
FORM_LIMIT = 1024 * 1024
CHART_JS = "chart.js/dist/chart.umd.min.js"
Handler = Callable[[Request], Awaitable[Response]]

env = Environment(
    loader=PackageLoader("missive.console", "templates"), autoescape=select_autoescape(["html"])
)


def usd(amount: str | None) -> str:
    """The API's USD strings ("25.000000") as people write them: cents, and more digits only if needed."""
    if amount is None:
        return ""
    value = Decimal(amount)
    return f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else format(value.normalize(), "f")


env.filters["usd"] = usd


def assets_dir(configured: str | None) -> Path:
    """The npm assets: as configured, or where scripts/bootstrap puts them in a checkout."""
    if configured:
        return Path(configured)
    return Path(missive.__file__).resolve().parents[2] / ".cache" / "console" / "node_modules"


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    settings = request.app.state.settings
    page = env.get_template(template).render(
        base=BASE,
        session=session,
        csrf=session.csrf_token if session else None,
        scope=session.admin_key.workspace_id if session else None,
        notice=request.query_params.get("notice"),
        error=context.pop("error", None) or request.query_params.get("error"),
        charts_ok=(assets_dir(settings.console.assets_dir) / CHART_JS).is_file(),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})


def redirect(path: str, **params: str) -> RedirectResponse:
    query = urlencode({name: value for name, value in params.items() if value})
    return RedirectResponse(f"{BASE}{path}" + (f"?{query}" if query else ""), status_code=303)


def admin_of(request: Request) -> Admin:
    state = request.app.state
    session: Session = request.state.session
    return Admin(state.db, session.admin_key, state.settings.rate_limits.tiers)


async def call(operation: Callable[..., Any], *args: Any) -> Any:
    """The Admin API's operations are synchronous, as the store is: run them off the event loop."""
    return await anyio.to_thread.run_sync(operation, *args)


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form (the console's forms post nothing else), read once, at most FORM_LIMIT bytes."""
    if hasattr(request.state, "form"):
        return request.state.form  # type: ignore[no-any-return]
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise ApiError(413, "Request exceeds the maximum allowed number of bytes.")
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.form = fields
    return fields


def refused(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, title=title, message=message)


def signed_in(handler: Handler) -> Handler:
    """Only with a live session; a POST also needs the session's CSRF token (form field `csrf`, or the
    `x-csrf-token` header of the console's scripts)."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        cookie = request.cookies.get(sessions.COOKIE)
        session = await sessions.find(request.app.state.db, cookie)
        if session is None:
            if request.method == "GET":
                target = redirect("/sign-in", expired="1" if cookie else "", next=request.url.path)
                if cookie:
                    target.delete_cookie(sessions.COOKIE, path=BASE)
                return target
            return refused(request, 401, "Signed out", "Your console session has ended. Sign in again.")
        request.state.session = session
        if request.method == "POST":
            given = request.headers.get("x-csrf-token") or (await form(request)).get("csrf")
            if not sessions.same_token(session.csrf_token, given):
                return refused(
                    request,
                    403,
                    "Refused",
                    "This form is out of date or did not come from the console (CSRF check).",
                )
        try:
            return await handler(request)
        except ApiError as error:
            if request.method == "GET":
                return refused(request, error.status, "Not available", error.message)
            return redirect(_page_of(request.url.path), error=error.message)

    return checked


def _page_of(path: str) -> str:
    """The page a form action belongs to: /console/keys/apikey_x -> /keys."""
    parts = path.removeprefix(BASE).strip("/").split("/")
    return "/" + parts[0] if parts and parts[0] else "/"
