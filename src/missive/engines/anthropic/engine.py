"""The Anthropic-compatible engine: forwards requests to a `/v1/messages` server and relays its stream.

The upstream is the Claude API, another Missive node, or any server that speaks the Messages API
(llama-server's, for one). `prepare` does no I/O: it refuses what cannot be relayed and estimates
the prompt's tokens for admission (the upstream's real usage is what gets settled). `generate` takes
a slot (`max_concurrency`), posts the client's request (request.py) with `stream: true`, and turns
each upstream event into Missive's events as it arrives (relay.py); closing the iterator closes the
upstream connection, which cancels the generation there. Failures follow engines/base.py's contract
(engines/upstream.py, errors.py): before the first event, what another engine could serve raises
`EngineUnavailable`.

Thinking blocks are the upstream's: its `signature_delta`s pass through, and thinking blocks sent
back are forwarded untouched, for the upstream to check (`signs_thinking`). The upstream key comes
from the environment variable `api_key_env` names, at start; it is sent as `x-api-key` and appears in
no log line, error or response.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from missive.engines import upstream
from missive.engines.anthropic import errors, request
from missive.engines.anthropic.relay import Relay, sse
from missive.engines.base import Generation
from missive.engines.upstream import (
    Headers,
    Refusal,
    Upstream,
    check_relayable,
    estimate_tokens,
    protocol_error,
)
from missive.settings import EngineSettings
from missive.wire.errors import ApiError
from missive.wire.events import Event
from missive.wire.models import ModelCard

log = logging.getLogger("missive.engines.anthropic")


class AnthropicEngine:
    signs_thinking = True
    fetches_urls = True  # blocks go upstream as sent; only file sources are made inline

    def __init__(self, config: EngineSettings) -> None:
        self.name = config.name
        self.config = config
        self.upstream = Upstream(config)

    @property
    def keep_alive(self) -> bool | None:
        return self.upstream.keep_alive

    def models(self) -> list[ModelCard]:
        return upstream.model_cards(self.config)

    async def start(self) -> None:
        await self.upstream.start()
        log.info(
            "engine %s: Anthropic-compatible upstream at %s, %d models",
            self.name,
            self.upstream.url,
            len(self.config.models),
        )

    async def close(self) -> None:
        await self.upstream.close()

    def headers(self, generation: Generation) -> dict[str, str]:
        return request.headers(generation, self.upstream.api_key)

    def refusal(self, generation: Generation) -> Refusal:
        def refuse(status: int, content: bytes, headers: Headers) -> ApiError:
            return errors.from_response(self.name, generation.request_id, status, content, headers)

        return refuse

    async def count_tokens(self, generation: Generation) -> int:
        """The upstream's own count (`/v1/messages/count_tokens`): exact, one round trip."""
        check_relayable(generation.params)
        body = request.body(generation, self.upstream.upstream_model(generation), stream=False)
        answer = await self.upstream.post(
            generation, "/v1/messages/count_tokens", body, self.headers(generation), self.refusal(generation)
        )
        try:
            return int(json.loads(answer)["input_tokens"])
        except (ValueError, KeyError, TypeError):
            raise protocol_error(
                f"Engine {self.name}: the upstream's count_tokens answer has no input_tokens."
            ) from None

    async def prepare(self, generation: Generation) -> AnthropicPrepared:
        check_relayable(generation.params)
        return AnthropicPrepared(self, generation, estimate_tokens(generation.params))


class AnthropicPrepared:
    def __init__(self, engine: AnthropicEngine, generation: Generation, estimate: int) -> None:
        self.engine, self.generation, self._estimate = engine, generation, estimate

    @property
    def input_tokens(self) -> int:
        """An estimate (upstream.estimate_tokens): counting exactly would cost a round trip."""
        return self._estimate

    async def generate(self) -> AsyncIterator[Event]:
        engine, generation = self.engine, self.generation
        relay = Relay(engine.name, generation.request_id, estimated_input=self._estimate)
        body = request.body(generation, engine.upstream.upstream_model(generation), stream=True)
        async with contextlib.AsyncExitStack() as stack:

            async def first_events(
                response: aiohttp.ClientResponse,
            ) -> tuple[AsyncIterator[tuple[str, Any]], list[Event]]:
                events = sse(response.content.iter_any())
                stack.push_async_callback(events.aclose)  # type: ignore[attr-defined]
                first: list[Event] = []
                while not first:
                    name, data = await anext(events)
                    first = relay.feed(name, data)
                return events, first

            # Before the first event: everything that fails here lets the route fall back.
            events, first = await engine.upstream.open(
                stack,
                generation,
                "/v1/messages",
                body,
                engine.headers(generation),
                engine.refusal(generation),
                first_events,
            )
            for event in first:
                yield event
            # After it: any failure ends the stream with an error event.
            try:
                async for name, data in events:
                    relayed = relay.feed(name, data)
                    if relay.finished and engine.keep_alive:  # read the body's end: the connection is reused
                        await upstream.drain(events)
                    for event in relayed:
                        yield event
                    if relay.finished:
                        return
            except aiohttp.ClientError as exc:
                raise upstream.cut(engine.name, exc) from None
            except ValueError:
                raise protocol_error(f"Engine {engine.name}: the upstream sent an event that is not JSON.") from None
            if relay.stopped:  # message_delta came, message_stop did not: the message is complete
                for event in relay.finish():
                    yield event
                return
            raise protocol_error(f"Engine {engine.name}: the upstream stream ended before message_stop.")
