"""Run a generation against a client connection: as an SSE stream, or collected into one Message.

Both watch the connection: a client that disconnects cancels its generation at once (the event
iterator is closed, which tells the engine to stop), instead of when the next write fails.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
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
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, group.cancel_scope)
                await self._write(send, group)
                group.cancel_scope.cancel()
        except OSError:  # the client went away mid-write
            pass
        finally:
            await _close(self.events)

    async def _write(self, send: Send, group: anyio.abc.TaskGroup) -> None:
        """Write each event's frames as it comes. The engine's iterator is read here, not through a
        channel from another task: a relayed token costs one task switch fewer, and no timer. A quiet
        stream is kept alive by `ping`, a task that writes a ping once `ping` seconds pass without a
        write; each ASGI send is whole frames, so a ping never splits one."""
        last_write, writing = time.monotonic(), False

        async def write(payload: bytes) -> None:
            nonlocal last_write, writing
            last_write, writing = time.monotonic(), True
            try:
                await send({"type": "http.response.body", "body": payload, "more_body": True})
            finally:
                last_write, writing = time.monotonic(), False

        async def ping() -> None:
            with pinger:
                while True:
                    wait = last_write + self.ping - time.monotonic()
                    if writing:  # never two sends at once: a write blocked by a slow client counts as one
                        wait = self.ping
                    if wait > 0:
                        await anyio.sleep(wait)
                        continue
                    try:
                        await write(PING)
                    except OSError:  # the client went away: the writer finds out on its next write
                        return

        pinger = anyio.CancelScope()
        await write(b"".join(frame(event) for event in self.builder.feed(self.first)))
        group.start_soon(ping)
        pinged = False
        try:
            async for event in self.events:
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
        pinger.cancel()  # before the body's end: no ping may follow it
        message = self.builder.message
        log.info("%s stream ended stop=%s output_tokens=%d", message["id"], message["stop_reason"],
                 message["usage"]["output_tokens"])
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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
