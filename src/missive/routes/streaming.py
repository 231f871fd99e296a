"""Run a generation against a client connection: as an SSE stream, or collected into one Message.

Both watch the connection: a client that disconnects cancels its generation at once (the event
iterator is closed, which tells the engine to stop), instead of when the next write fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import Receive, Scope, Send

from missive.wire.errors import ApiError, error_body
from missive.wire.events import Event
from missive.wire.messages import MessageBuilder
from missive.wire.sse import PING, frame

log = logging.getLogger("missive.stream")


async def _until_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected; cancelling generation")
    scope.cancel()


async def _close(events: AsyncIterator[Event]) -> None:
    aclose: Callable[[], Awaitable[None]] | None = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


class EventStream:
    """An ASGI response that streams a generation as Anthropic server-sent events."""

    def __init__(
        self,
        builder: MessageBuilder,
        first: Event,
        events: AsyncIterator[Event],
        ping: float,
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.builder, self.first, self.events, self.ping = builder, first, events, ping
        self.request_id = request_id
        self.headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        # The engine's events are pumped through a channel, so that waiting for the next event can
        # time out (to send a ping) without cancelling the engine's iterator.
        channel_in, channel_out = anyio.create_memory_object_stream[Event | Exception](max_buffer_size=1024)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, group.cancel_scope)
                group.start_soon(_pump, self.events, channel_in)
                await self._write(send, channel_out)
                group.cancel_scope.cancel()
        except OSError:  # the client went away mid-write
            pass
        finally:
            await _close(self.events)

    async def _write(self, send: Send, events: MemoryObjectReceiveStream[Event | Exception]) -> None:
        async def write(payload: bytes) -> None:
            await send({"type": "http.response.body", "body": payload, "more_body": True})

        await write(b"".join(frame(event) for event in self.builder.feed(self.first)))
        pinged = False
        try:
            while True:
                with anyio.move_on_after(self.ping) as waited:
                    try:
                        event = await events.receive()
                    except anyio.EndOfStream:
                        break
                if waited.cancelled_caught:
                    await write(PING)
                    continue
                if isinstance(event, Exception):
                    raise event
                frames = self.builder.feed(event)
                if not pinged and frames and frames[0]["type"] == "content_block_start":
                    frames.append({"type": "ping"})  # as the Claude API does, after the first block opens
                    pinged = True
                await write(b"".join(frame(item) for item in frames))
        except Exception as exc:  # after the 200: report inside the stream
            error = exc if isinstance(exc, ApiError) else ApiError(500, "Internal server error")
            if not isinstance(exc, ApiError):
                log.error("generation failed mid-stream", exc_info=exc)
            body = error_body(error.error_type, error.message, self.request_id)
            await write(f"event: error\ndata: {json.dumps(body)}\n\n".encode())
        message = self.builder.message
        log.info("%s stream ended stop=%s output_tokens=%d", message["id"], message["stop_reason"],
                 message["usage"]["output_tokens"])
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(events: AsyncIterator[Event], channel: MemoryObjectSendStream[Event | Exception]) -> None:
    async with channel:
        try:
            async for event in events:
                await channel.send(event)
        except Exception as exc:
            await channel.send(exc)


async def collect(builder: MessageBuilder, first: Event, events: AsyncIterator[Event], receive: Receive) -> bool:
    """Feed every event into `builder`. Returns False if the client disconnected first."""
    finished = False
    builder.feed(first)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_until_disconnect, receive, group.cancel_scope)
            async for event in events:
                builder.feed(event)
            finished = True
            group.cancel_scope.cancel()
    except* ApiError as failed:  # the engine's error is the answer, not the task group's wrapper
        raise failed.exceptions[0] from None
    finally:
        await _close(events)
    return finished
