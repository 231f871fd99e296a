"""`GET /v1/models` and `GET /v1/models/{model_id}` (spec §12)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from missive.engines.registry import Registry
from missive.routes.context import call_context
from missive.wire.errors import invalid
from missive.wire.models import model_info, page
from missive.wire.requests import first_error_message


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `beta=true` and other query noise
    limit: int = Field(default=20, ge=1, le=1000)
    after_id: str | None = None
    before_id: str | None = None


def paginate(items: list[dict], query: ListQuery) -> dict:  # type: ignore[type-arg]
    """Cursor pagination over a list ordered newest first: `after_id` pages forward, `before_id` back."""
    ids = [item["id"] for item in items]
    if query.after_id is not None:
        start = ids.index(query.after_id) + 1 if query.after_id in ids else len(ids)
        chosen = items[start : start + query.limit]
        return page(chosen, start + query.limit < len(items))
    if query.before_id is not None:
        end = ids.index(query.before_id) if query.before_id in ids else 0
        start = max(0, end - query.limit)
        return page(items[start:end], start > 0)
    return page(items[: query.limit], query.limit < len(items))


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
