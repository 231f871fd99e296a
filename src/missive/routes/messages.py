"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: read the request, hand it to the pipeline,
render what comes back (SSE frames, or one Message)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from missive.pipeline import Call, Pipeline
from missive.routes.context import call_context, read_body
from missive.routes.streaming import EventStream, collect


async def create_message(request: Request) -> Response:
    return await respond(request, await call_context(request))


async def respond(request: Request, call: Call) -> Response:
    """Run the request's `/v1/messages` body through the pipeline as `call`; render the reply as SSE or one
    Message (the console's workbench answers this way too)."""
    pipeline: Pipeline = request.app.state.pipeline
    reply = await pipeline.create(call, await read_body(request))
    if reply.stream:
        ping = request.app.state.settings.ping_interval
        return EventStream(reply.builder, reply.first, reply.events, ping, call.request_id, reply.headers)  # type: ignore[return-value]
    if not await collect(reply.builder, reply.first, reply.events, request.receive):
        return Response(status_code=499)  # nobody is listening
    return JSONResponse(reply.builder.message, headers=reply.headers)


async def count_tokens(request: Request) -> Response:
    call = await call_context(request)
    pipeline: Pipeline = request.app.state.pipeline
    input_tokens, headers = await pipeline.count_tokens(call, await read_body(request))
    return JSONResponse({"input_tokens": input_tokens}, headers=headers)
