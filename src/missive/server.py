"""create_app(settings): the routes, the middleware and the lifespan (store, engines)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from missive import metrics
from missive.batches.worker import BatchWorker
from missive.engines.base import Engine
from missive.engines.breaker import Breaker
from missive.engines.build import build_engines
from missive.engines.registry import Registry
from missive.files.service import FileService
from missive.files.storage import DiskStorage
from missive.gateway import outages
from missive.gateway.policy import Policy
from missive.media.fetch import Fetcher
from missive.media.sources import Media
from missive.pipeline import Pipeline
from missive.routes import admin, batches, console, files, messages, models
from missive.settings import Settings
from missive.store import db as store_db
from missive.store.keys import count_keys, create_key
from missive.store.secrets import thinking_key
from missive.wire.errors import ApiError
from missive.wire.ids import new_id

log = logging.getLogger("missive.server")


def error_response(error: ApiError, request_id: str | None) -> JSONResponse:
    headers = {**error.headers, "x-should-retry": "true" if error.should_retry else "false"}
    return JSONResponse(error.body(request_id), status_code=error.status, headers=headers)


class RequestIdMiddleware:
    """Gives every request a `req_…` id, sent back as `request-id` on every response, errors included.

    An exception that escapes everything else becomes a 500 `api_error` here, so that even that
    response has the Anthropic shape and the header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("%s unhandled error", request_id)
            if started:
                raise
            response = error_response(ApiError(500, "Internal server error"), request_id)
            await response(scope, receive, send_with_id)


def _refused(request: Request, error: ApiError) -> Response:
    """Every refusal leaves one log line, as a success does: clients such as Claude Code hide some
    4xx by quietly re-sending the request without the refused part."""
    log.log(
        logging.ERROR if error.status == 500 else logging.WARNING if error.status > 500 else logging.INFO,
        "%s %s %s -> %d %s: %s",
        request.state.request_id,
        request.method,
        request.url.path,
        error.status,
        error.error_type,
        error.message,
    )
    return error_response(error, request.state.request_id)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _refused(request, exc)


async def _backend_error(request: Request, exc: Exception) -> Response:
    log.warning("%s backend unavailable: %s", request.state.request_id, outages.describe(exc))
    return _refused(request, outages.unavailable(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):  # unknown path, or a method the path does not take
        return _refused(request, ApiError(404, f"Not found: {request.method} {request.url.path}"))
    return _refused(request, ApiError(exc.status_code, str(exc.detail)))


async def _metrics(request: Request) -> Response:
    """Prometheus text format: queue, sequences, KV and prompt cache, time to first token, throughput, and
    requests, errors, latency and fallbacks per engine."""
    isolated = [engine for engine in request.app.state.engines if hasattr(engine, "metrics_text")]
    sources = [await engine.metrics_text() for engine in isolated] or [generate_latest(metrics.ENGINE_REGISTRY)]
    return Response(generate_latest(metrics.REGISTRY) + b"".join(sources), media_type=CONTENT_TYPE_LATEST)


def ensure_first_key(settings: Settings, database: sa.Engine) -> None:
    """On first start, create an API key and show it once; only its hash is stored."""
    if count_keys(database) > 0:
        return
    key, secret = create_key(database, name="first key")
    bar = "=" * 72
    print(
        f"\n{bar}\nMissive created its first API key ({key.id}). It is shown only this once:\n\n"
        f"    {secret}\n\nexport ANTHROPIC_BASE_URL=http://{settings.host}:{settings.port}\n"
        f"export ANTHROPIC_API_KEY={secret}\n{bar}\n",
        flush=True,
    )


def create_app(settings: Settings, engines: list[Engine] | None = None) -> Starlette:
    """The ASGI application. `engines` defaults to those that settings describe."""
    engines = engines if engines is not None else build_engines(settings)
    aliases = {alias: model.id for model in settings.models for alias in model.aliases}
    aliases |= {alias: model.id for engine in settings.engines for model in engine.models for alias in model.aliases}
    routes_to = {route.model: route.to for route in settings.routes}
    breaker = settings.circuit_breaker
    registry = Registry(
        engines,
        aliases,
        settings.default_model,
        settings.claude_aliases,
        routes_to,
        lambda: Breaker(breaker.failures, breaker.cool_down),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = store_db.connect(settings.database)  # migrated to the current schema
        ensure_first_key(settings, database)
        app.state.db = database
        app.state.policy = policy = Policy(settings, database)
        app.state.files = file_service = FileService(database, settings.files, DiskStorage(settings.files_dir))
        await file_service.start()
        fetcher = Fetcher(settings.media)
        media = Media(settings.media, fetcher, file_service)
        app.state.pipeline = pipeline = Pipeline(registry, policy, thinking_key(settings.data_dir), media)
        app.state.batch_worker = worker = BatchWorker(database, pipeline, settings, policy.ledger.instance_id)
        await policy.start()
        for engine in engines:
            await engine.start()
        log.info("listening on http://%s:%d", settings.host, settings.port)
        try:
            async with anyio.create_task_group() as upkeep:
                upkeep.start_soon(policy.ledger.run)  # heartbeat, checkpoints, recovery
                upkeep.start_soon(worker.run)  # message batches, in the capacity interactive requests leave
                yield
                upkeep.cancel_scope.cancel()
        finally:
            for engine in engines:
                await engine.close()
            await fetcher.close()
            await policy.close()
            database.dispose()

    routes = [
        Route("/v1/messages", messages.create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        *batches.routes(),
        *files.routes(),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        *admin.routes(),
        Route("/metrics", _metrics, methods=["GET"]),
        *(console.routes(settings.console) if settings.console.enabled else []),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            **{error: _backend_error for error in outages.BACKEND_ERRORS},
        },
    )
    app.router.redirect_slashes = False  # `/v1/messages/` is a 404 of the API's shape, not a redirect
    app.state.settings = settings
    app.state.registry = registry
    app.state.engines = engines
    return app
