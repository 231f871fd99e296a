"""The Anthropic-compatible engine: forwards requests to a `/v1/messages` server and relays its stream.

The upstream is the Claude API, another Missive node, or any server that speaks the Messages API
(llama-server's, for one). `prepare` does no I/O: it refuses what cannot be relayed and estimates
the prompt's tokens for admission (the upstream's real usage is what gets settled). `generate` takes
a slot (`max_concurrency`), posts the client's request (request.py) with `stream: true`, and turns
each upstream event into Missive's events as it arrives (relay.py); closing the iterator closes the
upstream connection, which cancels the generation there. Failures follow engines/base.py's contract
(errors.py): before the first event, what another engine could serve raises `EngineUnavailable`.

Thinking blocks are the upstream's: its `signature_delta`s pass through, and thinking blocks sent
back are forwarded untouched, for the upstream to check (`signs_thinking`). The upstream key comes
from the environment variable `api_key_env` names, at start; it is sent as `x-api-key` and appears in
no log line, error or response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import anyio
import httpx

from missive.engines.anthropic import errors, request
from missive.engines.anthropic.relay import Relay, protocol_error, sse
from missive.engines.base import Generation
from missive.settings import EngineSettings
from missive.wire import requests as rq
from missive.wire.errors import invalid
from missive.wire.events import Event
from missive.wire.models import Capabilities, ModelCard

log = logging.getLogger("missive.engines.anthropic")
DRAIN_SECONDS = 0.5  # the most a finished stream waits for the end of the upstream's body
FRESH_CONNECTION_SERVERS = ("llama.cpp",)  # `Server` headers of upstreams that get no kept-alive connection


def base_url(url: str) -> str:
    """The server's root: `http://host:port`, whether or not the setting ends in `/v1`."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


class AnthropicEngine:
    signs_thinking = True

    def __init__(self, config: EngineSettings) -> None:
        self.name = config.name
        self.config = config
        self.url = base_url(config.url)
        self._upstream = {model.id: model.upstream or model.id for model in config.models}
        self._api_key: str | None = None
        # Whether connections may be kept alive: unknown (None) until the upstream's first answer says
        # which server it is; llama-server (this version) exits when a kept-alive connection carries a
        # second streaming request, so it gets a fresh connection for each request.
        self.keep_alive: bool | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

    def models(self) -> list[ModelCard]:
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
            for model in self.config.models
        ]

    async def start(self) -> None:
        config = self.config
        if config.api_key_env:
            self._api_key = os.environ.get(config.api_key_env)
            if not self._api_key:
                raise RuntimeError(
                    f"engine {self.name}: environment variable {config.api_key_env} is not set"
                )
        timeout = httpx.Timeout(
            connect=config.connect_timeout, read=config.read_timeout, write=config.read_timeout, pool=None
        )
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)  # the cap is the semaphore
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits)
        log.info(
            "engine %s: Anthropic-compatible upstream at %s, %d models",
            self.name,
            self.url,
            len(config.models),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"engine {self.name} is not started")
        return self._client

    def upstream_model(self, generation: Generation) -> str:
        return self._upstream.get(generation.model.id, generation.model.id)

    def headers(self, generation: Generation) -> dict[str, str]:
        sent = request.headers(generation, self._api_key)
        if not self.keep_alive:
            sent["connection"] = "close"
        return sent

    def answered(self, generation: Generation, response: httpx.Response) -> None:
        """Note who answered (for keep-alive) and log the upstream's request id with Missive's."""
        if self.keep_alive is None:
            server = response.headers.get("server", "")
            self.keep_alive = not server.lower().startswith(FRESH_CONNECTION_SERVERS)
            log.info("engine %s: upstream server %r, keep-alive %s", self.name, server, self.keep_alive)
        log.info(
            "%s engine %s upstream request-id=%s status=%d",
            generation.request_id,
            self.name,
            response.headers.get("request-id"),
            response.status_code,
        )

    async def count_tokens(self, generation: Generation) -> int:
        """The upstream's own count (`/v1/messages/count_tokens`): exact, one round trip."""
        _check_relayable(generation.params)
        body = request.body(generation, self.upstream_model(generation), stream=False)
        timeout = self.config.first_token_timeout
        try:
            with anyio.fail_after(timeout):
                response = await self.client.post(
                    "/v1/messages/count_tokens", json=body, headers=self.headers(generation)
                )
        except TimeoutError:
            raise errors.first_event_timeout(self.name, timeout) from None
        except httpx.HTTPError as exc:
            raise errors.unreachable(self.name, exc) from None
        self.answered(generation, response)
        if response.status_code != 200:
            raise errors.from_response(
                self.name, generation.request_id, response.status_code, response.content, response.headers
            )
        try:
            return int(response.json()["input_tokens"])
        except (ValueError, KeyError, TypeError):
            raise protocol_error(
                f"Engine {self.name}: the upstream's count_tokens answer has no input_tokens."
            ) from None

    async def prepare(self, generation: Generation) -> AnthropicPrepared:
        _check_relayable(generation.params)
        return AnthropicPrepared(self, generation, request.estimate_tokens(generation.params))


class AnthropicPrepared:
    def __init__(self, engine: AnthropicEngine, generation: Generation, estimate: int) -> None:
        self.engine, self.generation, self._estimate = engine, generation, estimate

    @property
    def input_tokens(self) -> int:
        """An estimate (request.estimate_tokens): counting exactly would cost a round trip."""
        return self._estimate

    async def generate(self) -> AsyncIterator[Event]:
        engine, generation = self.engine, self.generation
        relay = Relay(engine.name, generation.request_id, estimated_input=self._estimate)
        body = request.body(generation, engine.upstream_model(generation), stream=True)
        timeout = engine.config.first_token_timeout
        slots = engine._slots
        async with contextlib.AsyncExitStack() as stack:
            # Before the first event: everything that fails here lets the route fall back.
            waiting_for_slot = slots is not None
            try:
                with anyio.fail_after(timeout):
                    if slots is not None:
                        await slots.acquire()
                        stack.callback(slots.release)
                        waiting_for_slot = False
                    response = await stack.enter_async_context(
                        engine.client.stream(
                            "POST", "/v1/messages", json=body, headers=engine.headers(generation)
                        )
                    )
                    engine.answered(generation, response)
                    if response.status_code != 200:
                        content = await response.aread()
                        raise errors.from_response(
                            engine.name,
                            generation.request_id,
                            response.status_code,
                            content,
                            response.headers,
                        )
                    events = sse(response.aiter_lines())
                    stack.push_async_callback(events.aclose)  # type: ignore[attr-defined]
                    first: list[Event] = []
                    while not first:
                        name, data = await anext(events)
                        first = relay.feed(name, data)
            except TimeoutError:
                if waiting_for_slot:
                    raise errors.busy(engine.name, timeout) from None
                raise errors.first_event_timeout(engine.name, timeout) from None
            except StopAsyncIteration:
                raise errors.unreachable(engine.name, httpx.RemoteProtocolError("empty stream")) from None
            except httpx.HTTPError as exc:
                raise errors.unreachable(engine.name, exc) from None
            except ValueError:  # data that is not JSON
                raise errors.unreachable(engine.name, httpx.DecodingError("malformed event")) from None
            for event in first:
                yield event
            # After it: any failure ends the stream with an error event.
            try:
                async for name, data in events:
                    relayed = relay.feed(name, data)
                    if relay.finished and engine.keep_alive:  # read the body's end: the connection is reused
                        await _drain(events)
                    for event in relayed:
                        yield event
                    if relay.finished:
                        return
            except httpx.HTTPError as exc:
                raise errors.cut(engine.name, exc) from None
            except ValueError:
                raise protocol_error(
                    f"Engine {engine.name}: the upstream sent an event that is not JSON."
                ) from None
            if relay.stopped:  # message_delta came, message_stop did not: the message is complete
                for event in relay.finish():
                    yield event
                return
            raise protocol_error(f"Engine {engine.name}: the upstream stream ended before message_stop.")


async def _drain(events: AsyncIterator[tuple[str, object]]) -> None:
    """What follows message_stop (normally only the body's end): read it, for a short while at most, so
    the connection goes back to the pool instead of being closed unread."""
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in events:
                pass
        except (httpx.HTTPError, ValueError):
            pass


def _check_relayable(params: rq.MessageCreateParams | rq.CountTokensParams) -> None:
    """Refuse what would make the upstream answer with blocks Missive's events cannot carry: server
    tools (web search, code execution, ...) and the MCP connector. Blocks of earlier turns are forwarded."""
    for i, tool in enumerate(params.tools or []):
        if isinstance(tool, rq.ServerTool):
            raise invalid(f"tools.{i}: server tool {tool.type} is not available on this server")
    if params.mcp_servers:
        raise invalid("mcp_servers: the MCP connector is not available on this server")
