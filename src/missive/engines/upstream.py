"""What the remote engines (OpenAI-compatible and Anthropic-compatible) have in common.

`Upstream` is one remote server as an engine holds it: the model cards its settings list, the key
read from the environment at start, one aiohttp session with the settings' timeouts, the keep-alive
decision, and the `max_concurrency` slots (slots.py: interactive requests before batch work). aiohttp
rather than httpx: a request on a fresh connection costs 1.1 ms against httpx's 2.6 ms here, and a
relayed chunk a fraction of the CPU (docs/engines.md).
`Upstream.open` runs the part of a request before its first
event (slot, request, status, first event) under `first_token_timeout`, and turns every failure there
into what engines/base.py's contract asks: `EngineUnavailable` where another engine could serve.

Connections are kept alive, except to an upstream whose `Server` header names a server that gets a
fresh connection per request: llama-server (the pinned llama.cpp) exits when a kept-alive connection
carries a second streaming request. Until the first answer says which server it is, every request
goes on a fresh connection. A fresh connection is one of a second session whose connector never
reuses one (it sends `Connection: close` and closes at the response's end): aiohttp pools a connection
by the response's headers, and a server that closes after a `Connection: close` request without saying
so in its answer would otherwise leave a dead connection in the pool, to fail the next request.

Error mapping shared by both kinds (each parses its own error bodies):

upstream answer                      what Missive raises
400, 404, 413, other 4xx             ApiError: the same status, and the upstream's type and message
401, 402, 403                        EngineUnavailable 500 api_error, no retry: Missive's own upstream
                                     credentials (or billing) are wrong, which is neither the client's
                                     fault nor its key; another engine of the route may serve
408, 409, 429, 5xx, 529              EngineUnavailable, same status, retry-after passed on
connect error, broken connection     EngineUnavailable 529 overloaded_error
no first event in time               EngineUnavailable 504 timeout_error
no slot in time (max_concurrency)    EngineUnavailable 529 overloaded_error
connection lost / silent mid-stream  ApiError 500 api_error / 504 timeout_error: the stream ends with it
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import anyio

from missive.engines.base import EngineUnavailable, Generation
from missive.engines.slots import SlotPool
from missive.settings import EngineSettings
from missive.wire import requests as rq
from missive.wire.errors import ERROR_TYPES, RETRYABLE, ApiError, invalid
from missive.wire.models import Capabilities, ModelCard

log = logging.getLogger("missive.engines")

FRESH_CONNECTION_SERVERS = ("llama.cpp",)  # `Server` headers of upstreams that get no kept-alive connection
DRAIN_SECONDS = 0.5  # the most a finished stream waits for the end of the upstream's body
CREDENTIALS = {401, 402, 403}
RETRY_HEADERS = ("retry-after", "retry-after-ms")

# Admission's estimate of a prompt's tokens, without asking the upstream (`prepare` must not add a
# round trip): about four characters of text per token, a fixed price per image or base64 document.
CHARS_PER_TOKEN = 4
TOKENS_PER_MEDIA = 1600
_BINARY_KEYS = ("data",)  # base64 payloads of image and document sources

First = TypeVar("First")
Headers = Mapping[str, str]  # an answer's headers, read case-insensitively
Refusal = Callable[[int, bytes, Headers], ApiError]  # an engine's error for a non-200 answer


def base_url(url: str) -> str:
    """The server's root: `http://host:port`, whether or not the setting ends in `/v1`."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def model_cards(config: EngineSettings) -> list[ModelCard]:
    """The cards of the models `[[engines.models]]` lists: what /v1/models advertises for this engine."""
    return [
        ModelCard(
            id=model.id,
            display_name=model.display_name or model.id,
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            capabilities=Capabilities(
                image_input=model.image_input,
                pdf_input=model.pdf_input,
                tools=model.tools,
                thinking=model.thinking,
                structured_outputs=model.structured_outputs,
            ),
        )
        for model in config.models
    ]


class Upstream:
    """One remote server: its client, key, keep-alive decision and concurrency slots."""

    def __init__(self, config: EngineSettings) -> None:
        self.name = config.name
        self.config = config
        self.url = base_url(config.url)
        self.api_key: str | None = None
        # Whether connections may be kept alive: unknown (None) until the upstream's first answer says
        # which server it is (`Server` header).
        self.server: str | None = None
        self.keep_alive: bool | None = None
        self._sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession] | None = None  # pooled, fresh
        self.slots = SlotPool(config.max_concurrency) if config.max_concurrency else None
        self._upstream_names = {model.id: model.upstream or model.id for model in config.models}

    async def start(self) -> None:
        """Read the key (a missing variable stops the start, naming it) and open the session."""
        config = self.config
        if config.api_key_env:
            self.api_key = os.environ.get(config.api_key_env)
            if not self.api_key:
                raise RuntimeError(f"engine {self.name}: environment variable {config.api_key_env} is not set")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        pooled = aiohttp.TCPConnector(limit=0)  # no limit: the cap is the slots
        fresh = aiohttp.TCPConnector(limit=0, force_close=True)
        self._sessions = (
            aiohttp.ClientSession(timeout=timeout, connector=pooled),
            aiohttp.ClientSession(timeout=timeout, connector=fresh),
        )

    async def close(self) -> None:
        if self._sessions is not None:
            for session in self._sessions:
                await session.close()
            self._sessions = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session for the next request: the pooled one once the upstream is known to survive reuse."""
        if self._sessions is None:
            raise RuntimeError(f"engine {self.name} is not started")
        return self._sessions[0 if self.keep_alive else 1]

    def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A POST of `body` as JSON (compact, ASCII); entered, the response. Leaving it before the body's
        end closes the connection, which cancels the generation upstream."""
        sent = {**headers, "content-type": "application/json"}
        return self.session.post(self.url + path, data=json.dumps(body, separators=(",", ":")), headers=sent)

    def upstream_model(self, generation: Generation) -> str:
        return self._upstream_names.get(generation.model.id, generation.model.id)

    def answered(self, request_id: str, response: aiohttp.ClientResponse) -> None:
        """Note who answered (for keep-alive) and log the upstream's request id with Missive's."""
        headers = response.headers
        if self.keep_alive is None:
            self.server = headers.get("server", "")
            self.keep_alive = not self.server.lower().startswith(FRESH_CONNECTION_SERVERS)
            log.info("engine %s: upstream server %r, keep-alive %s", self.name, self.server, self.keep_alive)
        upstream_id = headers.get("request-id") or headers.get("x-request-id")
        status = response.status
        log.info("%s engine %s upstream request-id=%s status=%d", request_id, self.name, upstream_id, status)

    async def identify(self) -> None:
        """Learn which server this is before the first request, where it answers quickly (`GET /v1/models`);
        an upstream that does not is identified by its first real answer instead."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            with anyio.fail_after(self.config.connect_timeout):
                async with self.session.get(self.url + "/v1/models", headers=self.auth_headers()) as response:
                    await response.read()
            self.answered("start", response)

    def auth_headers(self) -> dict[str, str]:
        """Overridden per kind: how the key is sent. The default is a bearer token."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def post(
        self,
        generation: Generation,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        refusal: Refusal,
    ) -> bytes:
        """A plain (non-streaming) request, such as a count: no slot, `first_token_timeout` to answer.
        Returns the body of its 200."""
        timeout = self.config.first_token_timeout
        try:
            with anyio.fail_after(timeout):
                async with self._post(path, body, headers) as response:
                    content = await response.read()
        except aiohttp.ClientError as exc:  # first: aiohttp's own timeouts are TimeoutErrors too
            raise unreachable(self.name, exc) from None
        except TimeoutError:
            raise first_event_timeout(self.name, timeout) from None
        self.answered(generation.request_id, response)
        if response.status != 200:
            raise refusal(response.status, content, response.headers)
        return content

    async def open(
        self,
        stack: contextlib.AsyncExitStack,
        generation: Generation,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        refusal: Refusal,
        first: Callable[[aiohttp.ClientResponse], Awaitable[First]],
    ) -> First:
        """Take a slot, post a streaming request, check its status and read up to its first event (`first`),
        all within `first_token_timeout`. The slot and the response stay open on `stack`.

        A background request (batch work) waits for its slot without a time limit, behind every
        interactive one (slots.py); its `first_token_timeout` starts once it holds the slot."""
        timeout = self.config.first_token_timeout
        slots = self.slots
        if slots is not None and generation.background:
            await slots.acquire(background=True)
            stack.callback(slots.release)
            slots = None  # held
        waiting_for_slot = slots is not None
        try:
            with anyio.fail_after(timeout):
                if slots is not None:
                    await slots.acquire()
                    stack.callback(slots.release)
                    waiting_for_slot = False
                response = await stack.enter_async_context(self._post(path, body, headers))
                self.answered(generation.request_id, response)
                if response.status != 200:
                    raise refusal(response.status, await response.read(), response.headers)
                return await first(response)
        except aiohttp.ClientError as exc:  # first: aiohttp's own timeouts are TimeoutErrors too
            raise unreachable(self.name, exc) from None
        except TimeoutError:
            if waiting_for_slot:
                raise busy(self.name, timeout) from None
            raise first_event_timeout(self.name, timeout) from None
        except StopAsyncIteration:
            raise unreachable(self.name, aiohttp.ServerDisconnectedError("empty stream")) from None
        except ValueError:  # data that is not JSON
            raise unreachable(self.name, aiohttp.ClientPayloadError("malformed event")) from None


async def sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """Server-sent events as (event name or None, data), read from the body's bytes without decoding every
    line to text first (a stream of many small events costs a fraction of the CPU). Lines may end in CRLF,
    LF or CR; comments (pings) and events without data are skipped."""
    buffer, held = b"", b""  # held: a CR that ends a chunk, until the next says whether an LF follows
    async for chunk in chunks:
        if held or b"\r" in chunk:
            chunk, held = held + chunk, b""
            if chunk.endswith(b"\r"):
                chunk, held = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer += chunk
        if b"\n\n" not in buffer:
            continue
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:  # one data line: the usual event
                yield None, event[6:]
            elif (parsed := _event(event)) is not None:
                yield parsed
    if (parsed := _event(buffer)) is not None:  # a last event without its blank line
        yield parsed


def _event(event: bytes) -> tuple[str | None, bytes] | None:
    name: str | None = None
    data = []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if key == b"event":
            name = value.decode(errors="replace")
        elif key == b"data":
            data.append(value)
    return (name, b"\n".join(data)) if data else None


async def drain(events: AsyncIterator[Any]) -> None:
    """What follows the end of a message (normally only the body's end): read it, for a short while at
    most, so that a kept-alive connection goes back to the pool instead of being closed unread."""
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in events:
                pass
        except (aiohttp.ClientError, ValueError):
            pass


def check_relayable(params: rq.MessageCreateParams | rq.CountTokensParams) -> None:
    """Refuse what would make the upstream answer with blocks Missive's events cannot carry: server
    tools (web search, code execution, ...) and the MCP connector."""
    for i, tool in enumerate(params.tools or []):
        if isinstance(tool, rq.ServerTool):
            raise invalid(f"tools.{i}: server tool {tool.type} is not available on this server")
    if params.mcp_servers:
        raise invalid("mcp_servers: the MCP connector is not available on this server")


def estimate_tokens(params: rq.MessageCreateParams | rq.CountTokensParams) -> int:
    """A cheap estimate of the prompt's input tokens (system, messages, tools): the characters of its text
    over four, and a flat `TOKENS_PER_MEDIA` for each base64 image or document."""
    dumped = params.model_dump(
        mode="json", exclude_unset=True, include={"system", "messages", "tools"}, warnings=False
    )
    chars, media = _measure(dumped)
    return max(1, chars // CHARS_PER_TOKEN + media * TOKENS_PER_MEDIA)


def _measure(node: Any) -> tuple[int, int]:
    if isinstance(node, str):
        return len(node), 0
    chars = media = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BINARY_KEYS and isinstance(value, str) and node.get("type") == "base64":
                media += 1
                continue
            more_chars, more_media = _measure(value)
            chars, media = chars + more_chars, media + more_media
    elif isinstance(node, list):
        for value in node:
            more_chars, more_media = _measure(value)
            chars, media = chars + more_chars, media + more_media
    return chars, media


# --- errors ---------------------------------------------------------------------------------------


def falls_back(status: int) -> bool:
    return status in RETRYABLE or status >= 500


def refused(
    engine: str,
    request_id: str,
    status: int,
    error_type: str | None,
    message: str,
    headers: Mapping[str, str],
) -> ApiError:
    """The error for an upstream's non-200 answer, once its body is read (`error_type` None: by status)."""
    error_type = error_type or ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    log.info(
        "%s engine %s upstream request-id=%s answered %d %s: %s",
        request_id,
        engine,
        headers.get("request-id") or headers.get("x-request-id"),
        status,
        error_type,
        message,
    )
    if status in CREDENTIALS:
        log.error(
            "%s engine %s: the upstream refused Missive's credentials (%d %s); check api_key_env",
            request_id,
            engine,
            status,
            error_type,
        )
        return EngineUnavailable(
            500,
            f"Engine {engine} could not authenticate with its upstream ({status} {error_type}).",
            error_type="api_error",
            should_retry=False,
        )
    if falls_back(status):
        passed = {name: headers[name] for name in RETRY_HEADERS if name in headers}
        return EngineUnavailable(status, message, error_type=error_type, headers=passed)
    return ApiError(status, message, error_type=error_type)


def body_text(content: bytes, status: int) -> str:
    """An error body that is not the JSON expected, as a message."""
    return content.decode(errors="replace").strip()[:500] or f"upstream answered {status}"


def json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def unreachable(engine: str, exc: aiohttp.ClientError) -> EngineUnavailable:
    """A transport failure before the first event: this engine cannot serve now."""
    if isinstance(exc, aiohttp.SocketTimeoutError):  # connected, then silent for read_timeout
        return first_event_timeout(engine, None)
    return EngineUnavailable(
        529,
        f"Overloaded: engine {engine} cannot reach its upstream ({type(exc).__name__}).",
        error_type="overloaded_error",
    )


def first_event_timeout(engine: str, seconds: float | None) -> EngineUnavailable:
    within = f" within {seconds:g} s" if seconds is not None else ""
    return EngineUnavailable(
        504, f"Engine {engine}: no first event from the upstream{within}.", error_type="timeout_error"
    )


def busy(engine: str, seconds: float) -> EngineUnavailable:
    return EngineUnavailable(
        529,
        f"Overloaded: engine {engine} is at its max_concurrency and no slot freed within {seconds:g} s.",
        error_type="overloaded_error",
    )


def cut(engine: str, exc: aiohttp.ClientError) -> ApiError:
    """A transport failure after the first event: the stream ends with this error."""
    if isinstance(exc, TimeoutError):
        return ApiError(504, f"Engine {engine}: the upstream fell silent mid-stream.", error_type="timeout_error")
    return ApiError(500, f"Engine {engine}: the upstream connection was lost mid-stream.", error_type="api_error")


def protocol_error(message: str) -> ApiError:
    return ApiError(500, message, error_type="api_error")
