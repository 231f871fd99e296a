"""The OpenAI-compatible engine: translates requests to `/v1/chat/completions` and the stream back.

The upstream is vLLM, SGLang, llama-server, Ollama, LM Studio or any server of that API. `prepare`
does no I/O: it refuses what cannot be translated and estimates the prompt's tokens for admission (the
upstream's usage, reported at the end of the stream, is what gets settled). `generate` takes a slot
(`max_concurrency`), posts the translated request (request.py) with `stream: true` and
`stream_options.include_usage`, and turns each chunk into Missive's events as it arrives (relay.py);
closing the iterator closes the upstream connection, which cancels the generation there. Failures
follow engines/base.py's contract (engines/upstream.py, errors.py).

The upstream writes no signatures, so this engine does not sign its thinking (`signs_thinking`):
Missive signs the thinking blocks it relays and checks those sent back. The key, from the variable
`api_key_env` names, is sent as `Authorization: Bearer` and appears in no log line, error or response.

`count_tokens` renders the prompt through the upstream's own template and tokenizer where it has an
endpoint for that: llama-server's `POST /apply-template` then `POST /tokenize`, vLLM's `POST /tokenize`
with `messages`. Elsewhere (SGLang's /tokenize takes only text; Ollama and LM Studio have none) it is
the admission estimate, about four characters per token. Which one an upstream has is learnt once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from missive.engines import upstream
from missive.engines.base import Generation
from missive.engines.openai import errors, request
from missive.engines.openai.relay import Relay
from missive.engines.prompt import check_input_support
from missive.engines.upstream import (
    TOKENS_PER_MEDIA,
    Headers,
    Refusal,
    Upstream,
    check_relayable,
    estimate_tokens,
    protocol_error,
)
from missive.settings import EngineSettings
from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.events import Event
from missive.wire.models import ModelCard

log = logging.getLogger("missive.engines.openai")

# What llama-server's final chunk says, when asked (`verbose`), about how it stopped: which stop
# sequence matched is in none of its OpenAI-shaped fields.
LLAMA_STOP_FIELDS = ["stop_type", "stopping_word"]
NO_TOKENIZER = {404, 405, 422, 501}  # answers that mean "no such endpoint, or not in this shape"
PATH = "/v1/chat/completions"


async def _chunks(body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any] | None]:
    """The stream's chunks, parsed; None for `[DONE]`. Text that is not UTF-8 is read as the text decoder
    would read it (replacement characters)."""
    async for _, data in upstream.sse(body):
        yield None if data.strip() == b"[DONE]" else json.loads(data.decode(errors="replace"))


class OpenAIEngine:
    signs_thinking = False
    fetches_urls = False

    def __init__(self, config: EngineSettings) -> None:
        self.name = config.name
        self.config = config
        self.upstream = Upstream(config)
        self.estimates = False  # the upstream has no chat tokenizer endpoint: counts are estimates

    @property
    def keep_alive(self) -> bool | None:
        return self.upstream.keep_alive

    @property
    def llama_cpp(self) -> bool:
        return (self.upstream.server or "").lower().startswith("llama.cpp")

    def models(self) -> list[ModelCard]:
        return upstream.model_cards(self.config)

    async def start(self) -> None:
        await self.upstream.start()
        await self.upstream.identify()
        log.info(
            "engine %s: OpenAI-compatible upstream at %s (server %r), %d models",
            self.name,
            self.upstream.url,
            self.upstream.server,
            len(self.config.models),
        )

    async def close(self) -> None:
        await self.upstream.close()

    def headers(self, generation: Generation) -> dict[str, str]:
        sent = self.upstream.auth_headers()
        if generation.request_id:
            sent["x-request-id"] = generation.request_id  # vLLM takes it as its own request id
        return sent

    def refusal(self, generation: Generation) -> Refusal:
        def refuse(status: int, content: bytes, headers: Headers) -> ApiError:
            return errors.from_response(self.name, generation.request_id, status, content, headers)

        return refuse

    def check(self, generation: Generation) -> None:
        """What no chat-completions server can take: server tools, the MCP connector, and what the model's
        card says it cannot read (images, PDFs, tools)."""
        check_relayable(generation.params)
        check_input_support(generation.params, generation.model)

    async def count_tokens(self, generation: Generation) -> int:
        self.check(generation)
        body = request.prompt_body(generation, self.upstream.upstream_model(generation), not self.llama_cpp)
        if self.llama_cpp:
            return await self._count_llama(generation, body)
        if not self.estimates:
            counted = await self._count_vllm(generation, body)
            if counted is not None:
                return counted
            if self.llama_cpp:  # the probe's answer was the first to say which server this is
                return await self.count_tokens(generation)
        return estimate_tokens(generation.params)

    async def _count_llama(self, generation: Generation, body: dict[str, Any]) -> int:
        """llama-server renders the body as its chat completion would, then tokenizes it as a chat
        completion does (special tokens on). Images are not in the text: each counts as an estimate."""
        refuse, headers = self.refusal(generation), self.headers(generation)
        rendered = await self.upstream.post(generation, "/apply-template", body, headers, refuse)
        try:
            prompt = json.loads(rendered)["prompt"]
            sent = {"content": prompt, "add_special": True, "parse_special": True}
            tokens = json.loads(await self.upstream.post(generation, "/tokenize", sent, headers, refuse))["tokens"]
            return len(tokens) + TOKENS_PER_MEDIA * _images(body)
        except (ValueError, KeyError, TypeError):
            raise protocol_error(
                f"Engine {self.name}: the upstream's template or tokenizer answer is malformed."
            ) from None

    async def _count_vllm(self, generation: Generation, body: dict[str, Any]) -> int | None:
        """vLLM's `/tokenize` takes the chat (messages, tools, template arguments) and answers `count`. A
        server without one (404), or with one of another shape (SGLang's takes text only: 422), gets
        the estimate from then on; None means "estimate this one"."""
        sent = {key: value for key, value in body.items() if key not in ("tool_choice", "parallel_tool_calls")}
        sent.setdefault("add_generation_prompt", True)

        def refuse(status: int, content: bytes, headers: Headers) -> ApiError:
            if status in NO_TOKENIZER or status == 400:
                return _NoTokenizer(status, f"/tokenize answered {status}")
            return errors.from_response(self.name, generation.request_id, status, content, headers)

        try:
            content = await self.upstream.post(generation, "/tokenize", sent, self.headers(generation), refuse)
        except _NoTokenizer as error:
            self.estimates = error.status in NO_TOKENIZER
            log.info("engine %s: no chat tokenizer at /tokenize (%d); counts are estimates", self.name, error.status)
            return None
        answer = upstream.json_or_none(content)
        count = answer.get("count") if isinstance(answer, dict) else None
        if not isinstance(count, int):
            self.estimates = not self.llama_cpp
            return None
        return count

    async def prepare(self, generation: Generation) -> OpenAIPrepared:
        self.check(generation)
        estimate = estimate_tokens(generation.params)
        body, sent_max = request.body(
            generation, self.upstream.upstream_model(generation), estimate, prefill_flags=not self.llama_cpp
        )
        params = generation.params
        assert isinstance(params, rq.MessageCreateParams)
        if params.stop_sequences and self.llama_cpp:
            body.update(verbose=True, response_fields=LLAMA_STOP_FIELDS)
        relay = Relay(
            self.name,
            generation.request_id,
            estimated_input=estimate,
            max_tokens=params.max_tokens,
            stop_sequences=tuple(params.stop_sequences or ()),
            thinking=generation.model.capabilities.thinking and request.thinking_on(params),
            thinking_text=getattr(params.thinking, "display", None) != "omitted",
            forced_tool=forced.name if (forced := request.forced_tool(params)) else None,
        )
        log.debug("%s engine %s: max_tokens %d sent as %d", generation.request_id, self.name, params.max_tokens, sent_max)
        return OpenAIPrepared(self, generation, body, relay)


class _NoTokenizer(ApiError):
    """/tokenize is not there, or not for chats."""


def _images(body: dict[str, Any]) -> int:
    return sum(
        1
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )


class OpenAIPrepared:
    def __init__(self, engine: OpenAIEngine, generation: Generation, body: dict[str, Any], relay: Relay) -> None:
        self.engine, self.generation, self.body, self.relay = engine, generation, body, relay

    @property
    def input_tokens(self) -> int:
        """An estimate (upstream.estimate_tokens): counting exactly would cost a round trip."""
        return self.relay.estimated_input

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[AsyncIterator[Any], list[Event]]:
        """Post the request and read up to its first events; the slot, response and stream stay open on
        `stack`, unless this fails (then they are closed here, so that a second try can take the slot)."""
        engine, generation, relay = self.engine, self.generation, self.relay
        async with contextlib.AsyncExitStack() as attempt:

            async def first_events(response: aiohttp.ClientResponse) -> tuple[AsyncIterator[Any], list[Event]]:
                chunks = _chunks(response.content.iter_any())
                attempt.push_async_callback(chunks.aclose)  # type: ignore[attr-defined]
                first: list[Event] = []
                while not first:
                    chunk = await anext(chunks)
                    if chunk is None:  # [DONE] before anything
                        raise StopAsyncIteration
                    first = relay.feed(chunk)
                return chunks, first

            opened = await engine.upstream.open(
                attempt, generation, PATH, self.body, engine.headers(generation), engine.refusal(generation), first_events
            )
            stack.push_async_exit(attempt.pop_all())
            return opened

    async def generate(self) -> AsyncIterator[Event]:
        engine, generation, relay = self.engine, self.generation, self.relay
        async with contextlib.AsyncExitStack() as stack:
            # Before the first event: everything that fails here lets the route fall back.
            try:
                chunks, first = await self._open(stack)
            except errors.NoRoom as short:  # the window leaves less than max_tokens: ask for what it leaves
                if short.room >= self.body["max_tokens"]:
                    raise
                log.info(
                    "%s engine %s: max_tokens %d -> %d, what the window leaves",
                    generation.request_id,
                    engine.name,
                    self.body["max_tokens"],
                    short.room,
                )
                self.body["max_tokens"] = short.room
                chunks, first = await self._open(stack)
            for event in first:
                yield event
            # After it: any failure ends the stream with an error event.
            try:
                async for chunk in chunks:
                    if chunk is None:  # [DONE]
                        if engine.keep_alive:  # read the body's end: the connection is reused
                            await upstream.drain(chunks)
                        break
                    for event in relay.feed(chunk):
                        yield event
            except aiohttp.ClientError as exc:
                raise upstream.cut(engine.name, exc) from None
            except ValueError:
                raise protocol_error(f"Engine {engine.name}: the upstream sent a chunk that is not JSON.") from None
            if not relay.complete:
                raise protocol_error(f"Engine {engine.name}: the upstream stream ended before its finish_reason.")
            for event in relay.finish():
                yield event
