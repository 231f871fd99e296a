"""`GET /v1/models` and `GET /v1/models/{model_id}` (spec §12)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from missive.engines.registry import Registry
from missive.routes.context import call_context
from missive.wire.errors import invalid
from missive.wire.models import ListQuery, model_info, paginate
from missive.wire.requests import first_error_message


async def list_models(request: Request) -> JSONResponse:
    await call_context(request)
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None
    registry: Registry = request.app.state.registry
    return JSONResponse(paginate([model_info(card, model_id) for model_id, card in registry.listing()], query))


async def get_model(request: Request) -> JSONResponse:
    await call_context(request)
    registry: Registry = request.app.state.registry
    return JSONResponse(model_info(registry.resolve(request.path_params["model_id"]).card))
