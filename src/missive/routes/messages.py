"""`POST /v1/messages` and `POST /v1/messages/count_tokens`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from missive.engines.base import BlockStart, BlockStop, Delta, Event, Generation, Started
from missive.engines.registry import Registry
from missive.gateway.policy import Policy
from missive.routes.context import CallContext, call_context, read_params
from missive.routes.streaming import EventStream, collect
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.errors import ApiError, invalid
from missive.wire.ids import new_id
from missive.wire.messages import MessageBuilder
from missive.wire.signatures import sign_thinking

log = logging.getLogger("missive.messages")


def _generation(
    registry: Registry,
    params: rq.MessageCreateParams | rq.CountTokensParams,
    context: CallContext,
    thinking_key: bytes,
) -> Generation:
    validate.check_version_rules(params, context.version)
    validate.check_beta_fields(params, context.betas)
    validate.check_roles(params)
    validate.check_breakpoints(params)
    validate.check_tools(params)
    validate.check_tool_pairing(params.messages)  # the indexes the client sent, before turns are merged
    validate.check_thinking_signatures(params.messages, thinking_key)
    resolved = registry.resolve(params.model)
    return Generation(resolved.card, params, validate.normalize(params), context.principal.workspace_id)


async def create_message(request: Request) -> Response:
    context = await call_context(request)
    policy: Policy = request.app.state.policy
    try:
        return await _create_message(request, context, policy)
    except ApiError as error:  # rate-limit headers on every response, errors included
        await policy.add_rate_headers(error, context.principal, getattr(request.state, "model", None))
        raise


async def _create_message(request: Request, context: CallContext, policy: Policy) -> Response:
    params = await read_params(request, rq.MessageCreateParams)
    registry: Registry = request.app.state.registry
    generation = _generation(registry, params, context, request.app.state.thinking_key)
    validate.check_generation(params)
    card = generation.model
    request.state.model = card.id
    if params.max_tokens > card.max_output_tokens:
        raise invalid(
            f"max_tokens: {params.max_tokens} > {card.max_output_tokens}, which is the maximum allowed number "
            f"of output tokens for {params.model}"
        )

    events = _signed(registry.resolve(params.model).engine.generate(generation), request.app.state.thinking_key)
    first = await anext(events)  # errors up to here are plain HTTP errors
    assert isinstance(first, Started)
    try:
        admission = await policy.admit(
            context.principal, card.id, params.model, first.usage, params.max_tokens, request.state.request_id
        )
    except BaseException:
        await events.aclose()  # cancels the generation
        raise
    events = admission.track(events)
    builder = MessageBuilder(new_id("msg_"), params.model)
    log.info(
        "%s %s model=%s input_tokens=%d stream=%s",
        request.state.request_id,
        builder.message["id"],
        params.model,
        first.usage.input_tokens,
        bool(params.stream),
    )
    if params.stream:
        ping = request.app.state.settings.ping_interval
        return EventStream(builder, first, events, ping, admission.headers)  # type: ignore[return-value]
    if not await collect(builder, first, events, request.receive):
        return Response(status_code=499)  # nobody is listening
    return JSONResponse(builder.message, headers=admission.headers)


async def count_tokens(request: Request) -> Response:
    context = await call_context(request)
    policy: Policy = request.app.state.policy
    try:
        headers = await policy.admit_count_tokens(context.principal)  # its own RPM
        params = await read_params(request, rq.CountTokensParams)
        registry: Registry = request.app.state.registry
        generation = _generation(registry, params, context, request.app.state.thinking_key)
        engine = registry.resolve(params.model).engine
        return JSONResponse({"input_tokens": await engine.count_tokens(generation)}, headers=headers)
    except ApiError as error:
        await policy.count_tokens_headers(error, context.principal)
        raise


async def _signed(events: AsyncIterator[Event], key: bytes) -> AsyncIterator[Event]:
    """Sign every thinking block, whatever engine wrote it: a `signature` delta just before its stop."""
    thinking: list[str] | None = None
    async for event in events:
        if isinstance(event, BlockStart):
            thinking = [] if event.kind == "thinking" else None
        elif isinstance(event, Delta) and event.kind == "thinking" and thinking is not None:
            thinking.append(event.text)
        elif isinstance(event, BlockStop) and thinking is not None:
            yield Delta("signature", sign_thinking(key, "".join(thinking)))
            thinking = None
        yield event
