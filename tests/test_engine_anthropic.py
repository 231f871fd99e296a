"""The Anthropic-compatible engine between real servers: a front Missive with no local model whose
`[[engines]]` entry of kind anthropic forwards to a second Missive process (the upstream), through a
recording proxy (tests/clients/recorder.py) that shows what crossed the wire. The official SDK drives it.

The engine class is also run against llama.cpp's own llama-server (its `/v1/messages`; scripts/llama_server
builds it): several streams over one engine's kept-alive connections.
The upstreams keep to one core (`threads = 1`): two llama.cpp engines on both cores collapse each other.
What no Missive upstream can send (redacted thinking, server-tool blocks, citations, a mid-stream error
event) is checked on the relay alone, with event sequences of the shape the Claude API documents.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import llamacpp
import pytest
from clients.recorder import Recorder
from conftest import COUNTING, Server, free_port, launch, stop

from missive.engines.anthropic import request
from missive.engines.anthropic.engine import AnthropicEngine
from missive.engines.anthropic.relay import Relay, usage_from
from missive.engines.base import EngineUnavailable, Generation
from missive.engines.upstream import TOKENS_PER_MEDIA, estimate_tokens
from missive.settings import EngineSettings, RemoteModelSettings
from missive.store.secrets import thinking_key
from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.events import BlockStart, BlockStop, Delta, Finished, Started, Usage
from missive.wire.models import ModelCard
from missive.wire.signatures import sign_thinking

UPSTREAM = """
default_model = "smollm2-135m-instruct"
ping_interval = 0.5

[local]
threads = 1
parallel = 2

[[models]]
id = "smollm2-135m-instruct"
context_window = 2048
min_cache_tokens = 64

[[models]]
id = "smollm2-think"
context_window = 2048
reasoning = true
"""

FRONT = """
default_model = "remote-smollm2"
models = []
ping_interval = 0.5

[[engines]]
name = "upstream"
kind = "anthropic"
url = "{recorder}/v1"
api_key_env = "MISSIVE_TEST_UPSTREAM_KEY"
max_concurrency = 4

[[engines.models]]
id = "remote-smollm2"
upstream = "smollm2-135m-instruct"
context_window = 100000  # more than the upstream's: its "prompt is too long" is the answer

[[engines.models]]
id = "remote-think"
upstream = "smollm2-think"
thinking = true

[[engines.models]]
id = "remote-missing"
upstream = "no-such-model"

[[engines]]
name = "wrong-key"
kind = "anthropic"
url = "{upstream}"
api_key_env = "MISSIVE_TEST_WRONG_KEY"

[[engines.models]]
id = "remote-wrong-key"
upstream = "smollm2-135m-instruct"
"""

HI = [{"role": "user", "content": "Say hi."}]
THINK = {"type": "enabled", "budget_tokens": 1024}
QUESTION = [{"role": "user", "content": "What is 12 times 12?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, server = launch(tmp_path_factory.mktemp("upstream"), UPSTREAM, "upstream.log")
    try:
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="module")
def recorder(upstream: Server) -> Iterator[Recorder]:
    proxy = Recorder(upstream.base_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, upstream: Server, recorder: Recorder) -> Iterator[Server]:
    os.environ["MISSIVE_TEST_UPSTREAM_KEY"] = upstream.api_key
    os.environ["MISSIVE_TEST_WRONG_KEY"] = "sk-missive-not-a-key"
    try:
        config = FRONT.format(recorder=recorder.url, upstream=upstream.base_url)
        process, server = launch(tmp_path_factory.mktemp("front"), config, "front.log")
    finally:
        del os.environ["MISSIVE_TEST_UPSTREAM_KEY"], os.environ["MISSIVE_TEST_WRONG_KEY"]
    try:
        yield server
    finally:
        stop(process)


def sdk(server: Server, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120, default_headers=headers
    )


def raw(server: Server) -> httpx.Client:
    headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=120)


def sse_events(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    with raw(server) as http, http.stream("POST", "/v1/messages", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def last_forwarded(recorder: Recorder, path: str = "/v1/messages"):
    exchanges = recorder.requests(path)
    assert exchanges, f"nothing was forwarded to {path}"
    return exchanges[-1]


# --- what is forwarded: the request as the client sent it ----------------------------------------


RICH = {
    "model": "remote-x",
    "max_tokens": 100,
    "stream": False,
    "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    "citations": {"enabled": True},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {
                    "type": "text",
                    "text": "a",
                    "citations": [
                        {
                            "type": "char_location",
                            "cited_text": "d",
                            "document_index": 0,
                            "document_title": None,
                            "start_char_index": 0,
                            "end_char_index": 1,
                        }
                    ],
                },
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "q"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {"type": "web_search_result", "url": "u", "title": "t", "encrypted_content": "e"}
                    ],
                },
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "f",
                    "input": {"a": [1, {"b": None}]},
                    "caller": {"type": "direct"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "r"}],
                    "is_error": False,
                }
            ],
        },
    ],
    "tools": [
        {
            "name": "f",
            "description": "d",
            "input_schema": {
                "type": "object",
                "properties": {"a": {"type": "array"}},
                "additionalProperties": False,
            },
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool", "max_characters": 10},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "summarized"},
    "cache_control": {"type": "ephemeral"},
    "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    "metadata": {"user_id": '{"session": 1}'},
    "temperature": None,
    "stop_sequences": ["###"],
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}
CARD = ModelCard("remote-x", "remote-x", 200_000, 64_000)


def generation_of(body: dict[str, Any], **fields: Any) -> Generation:
    params = rq.MessageCreateParams.model_validate_json(json.dumps(body))
    return Generation(CARD, params, params.messages, **fields)


def test_the_body_is_the_request_as_sent_with_the_upstream_model_and_streaming() -> None:
    sent = request.body(generation_of(RICH), "upstream-x", stream=True)
    assert sent == {**RICH, "model": "upstream-x", "stream": True}
    assert list(sent["messages"][1]["content"][0]) == ["type", "thinking", "signature"]


def test_headers_carry_the_clients_version_and_betas_and_the_upstream_key_only() -> None:
    gen = generation_of(RICH, version="2026-10-21", betas=("b-one-2099-01-01", "prompt-caching-2024-07-31"))
    assert request.headers(gen, "sk-up") == {
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "b-one-2099-01-01,prompt-caching-2024-07-31",
        "x-api-key": "sk-up",
        "content-type": "application/json",
    }
    assert "anthropic-beta" not in request.headers(generation_of(RICH), None)


def test_the_admission_estimate_counts_text_not_base64() -> None:
    small = estimate_tokens(generation_of(RICH).params)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 400_000}}
    big = {**RICH, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "x" * 4000}]}]}
    assert TOKENS_PER_MEDIA < small < TOKENS_PER_MEDIA + 200  # RICH has one image
    assert estimate_tokens(generation_of(big).params) < 1000 + TOKENS_PER_MEDIA + 100


# --- the relay: upstream events -> Missive's events ---------------------------------------------


def relay_all(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    relay = Relay("test")
    out: list[Any] = []
    for name, data in events:
        out += relay.feed(name, data)
    return out


START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_up",
            "usage": {
                "input_tokens": 17,
                "cache_creation_input_tokens": 30,
                "cache_read_input_tokens": 100,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
                "output_tokens": 1,
            },
        },
    },
)


def block(index: int, content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": content}


def delta(index: int, content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": content}


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def end(stop_reason: str, usage: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_relay_translates_usage_blocks_and_deltas_one_for_one() -> None:
    usage = {
        "input_tokens": 17,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 100,
        "output_tokens": 9,
    }
    events = relay_all(
        [
            START,
            ("ping", {"type": "ping"}),
            block(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
            delta(0, {"type": "signature_delta", "signature": "UPSTREAM-SIG"}),
            block_stop(0),
            block(1, {"type": "text", "text": ""}),
            delta(1, {"type": "text_delta", "text": "Hi"}),
            block_stop(1),
            block(2, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}),
            delta(2, {"type": "input_json_delta", "partial_json": ""}),
            delta(2, {"type": "input_json_delta", "partial_json": '{"a": 1}'}),
            block_stop(2),
            *end("tool_use", usage),
        ]
    )
    expected_usage = Usage(17, 1, 100, 10, 20)
    assert events == [
        Started(expected_usage),
        BlockStart("thinking"),
        Delta("thinking", "hmm"),
        Delta("signature", "UPSTREAM-SIG"),
        BlockStop(),
        BlockStart("text"),
        Delta("text", "Hi"),
        BlockStop(),
        BlockStart("tool_use", tool_id="toolu_9", tool_name="f"),
        Delta("input_json", ""),
        Delta("input_json", '{"a": 1}'),
        BlockStop(),
        Finished("tool_use", Usage(17, 9, 100, 10, 20)),  # the 5m/1h split of message_start is kept
    ]


def test_usage_without_a_split_is_all_5m_and_thinking_tokens_are_read() -> None:
    usage = usage_from(
        {"cache_creation_input_tokens": 40, "output_tokens_details": {"thinking_tokens": 7}}, Usage()
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens, usage.thinking_tokens) == (40, 0, 7)


def test_relay_leaves_out_what_missive_events_cannot_carry() -> None:
    events = relay_all(
        [
            START,
            block(0, {"type": "redacted_thinking", "data": "opaque"}),
            block_stop(0),
            block(1, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
            block_stop(1),
            block(2, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
            block_stop(2),
            block(3, {"type": "text", "text": ""}),
            delta(3, {"type": "citations_delta", "citation": {"type": "web_search_result_location"}}),
            delta(3, {"type": "text_delta", "text": "cited"}),
            delta(3, {"type": "some_future_delta", "x": 1}),
            block_stop(3),
            *end("refusal", {"output_tokens": 4}),
        ]
    )
    assert [type(e).__name__ for e in events] == ["Started", "BlockStart", "Delta", "BlockStop", "Finished"]
    assert events[2] == Delta("text", "cited")
    assert events[-1].stop_reason == "refusal"  # an API stop reason, passed on as it is


def test_relay_completes_blocks_that_arrive_whole_in_their_start_event() -> None:
    events = relay_all(
        [
            START,
            block(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Oslo"}}),
            block_stop(0),
            block(1, {"type": "thinking", "thinking": "all at once", "signature": "S"}),
            block_stop(1),
            *end("end_turn", {"output_tokens": 4}),
        ]
    )
    assert events[1:8] == [
        BlockStart("tool_use", tool_id="toolu_1", tool_name="f"),
        Delta("input_json", '{"city": "Oslo"}'),
        BlockStop(),
        BlockStart("thinking"),
        Delta("thinking", "all at once"),
        Delta("signature", "S"),
        BlockStop(),
    ]


def test_a_stream_without_message_start_starts_at_its_first_block_with_the_input_estimated() -> None:
    relay = Relay("test", estimated_input=42)
    items = [
        block(0, {"type": "text", "text": ""}),
        delta(0, {"type": "text_delta", "text": "Hi"}),
        block_stop(0),
        *end("end_turn", {"output_tokens": 3}),
    ]
    events = [event for item in items for event in relay.feed(*item)]
    assert events == [
        Started(Usage(input_tokens=42)),
        BlockStart("text"),
        Delta("text", "Hi"),
        BlockStop(),
        Finished("end_turn", Usage(input_tokens=42, output_tokens=3)),
    ]


def test_an_error_event_before_message_start_falls_back_and_after_it_ends_the_stream() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(EngineUnavailable) as before:
        relay_all([("error", overloaded)])
    assert (before.value.status, before.value.error_type) == (529, "overloaded_error")
    relay = Relay("test")
    relay.feed(*START)
    relay.feed(*block(0, {"type": "text", "text": ""}))
    with pytest.raises(ApiError) as after:
        relay.feed("error", overloaded)
    assert not isinstance(after.value, EngineUnavailable)
    assert (after.value.status, after.value.error_type, after.value.message) == (
        529,
        "overloaded_error",
        "Overloaded",
    )


# --- the engine class against the upstream Missive, directly --------------------------------------


def engine_config(url: str, **fields: Any) -> EngineSettings:
    models = [RemoteModelSettings(id="remote-smollm2", upstream="smollm2-135m-instruct", context_window=2048)]
    return EngineSettings(name="direct", kind="anthropic", url=url, models=models, **fields)


def direct_generation(
    engine: AnthropicEngine, body: dict[str, Any], version: str = "2023-06-01"
) -> Generation:
    params = rq.MessageCreateParams.model_validate({"model": "remote-smollm2", **body})
    return Generation(engine.models()[0], params, params.messages, version=version, request_id="req_direct")


def collect(engine: AnthropicEngine, gen: Generation, limit: int | None = None) -> list[Any]:
    async def run() -> list[Any]:
        await engine.start()
        try:
            prepared = await engine.prepare(gen)
            assert prepared.input_tokens > 0
            events: list[Any] = []
            stream = prepared.generate()
            try:
                async for event in stream:
                    events.append(event)
                    if limit is not None and len(events) >= limit:
                        break
            finally:
                await stream.aclose()
            return events
        finally:
            await engine.close()

    return asyncio.run(run())


def test_the_engine_class_against_the_upstream(upstream: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_TEST_DIRECT_KEY", upstream.api_key)
    engine = AnthropicEngine(engine_config(upstream.base_url, api_key_env="MISSIVE_TEST_DIRECT_KEY"))
    assert engine.signs_thinking and [card.id for card in engine.models()] == ["remote-smollm2"]
    events = collect(engine, direct_generation(engine, {"max_tokens": 8, "messages": HI}))
    assert isinstance(events[0], Started) and events[0].usage.input_tokens > 0
    assert isinstance(events[1], BlockStart) and events[1].kind == "text"
    assert isinstance(events[-1], Finished) and events[-1].stop_reason in ("end_turn", "max_tokens")
    assert 0 < events[-1].usage.output_tokens <= 8
    assert "".join(e.text for e in events if isinstance(e, Delta))

    async def count() -> int:
        await engine.start()
        try:
            params = rq.CountTokensParams.model_validate({"model": "remote-smollm2", "messages": HI})
            return await engine.count_tokens(Generation(engine.models()[0], params, params.messages))
        finally:
            await engine.close()

    assert asyncio.run(count()) == events[0].usage.input_tokens


def test_a_missing_key_variable_stops_the_engine_from_starting(upstream: Server) -> None:
    engine = AnthropicEngine(engine_config(upstream.base_url, api_key_env="MISSIVE_TEST_UNSET_VARIABLE"))
    with pytest.raises(RuntimeError, match="MISSIVE_TEST_UNSET_VARIABLE is not set"):
        asyncio.run(engine.start())


def test_an_upstream_that_refuses_connections_is_unavailable() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = AnthropicEngine(engine_config(f"http://127.0.0.1:{port}"))
    with pytest.raises(EngineUnavailable) as refused:
        collect(engine, direct_generation(engine, {"max_tokens": 8, "messages": HI}))
    assert (refused.value.status, refused.value.error_type) == (529, "overloaded_error")


def test_an_upstream_that_never_answers_times_out_to_the_first_event() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = "http://127.0.0.1:{}".format(silent.getsockname()[1])
        engine = AnthropicEngine(engine_config(url, first_token_timeout=0.5))
        with pytest.raises(EngineUnavailable) as timed_out:
            collect(engine, direct_generation(engine, {"max_tokens": 8, "messages": HI}))
    assert (timed_out.value.status, timed_out.value.error_type) == (504, "timeout_error")


def test_max_concurrency_is_a_slot_held_for_the_generation(
    upstream: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISSIVE_TEST_DIRECT_KEY", upstream.api_key)
    config = engine_config(
        upstream.base_url, api_key_env="MISSIVE_TEST_DIRECT_KEY", max_concurrency=1, first_token_timeout=1
    )
    engine = AnthropicEngine(config)
    gen = direct_generation(engine, {"max_tokens": 300, "messages": COUNTING})

    async def run() -> tuple[EngineUnavailable | None, int]:
        await engine.start()
        try:
            holding = (await engine.prepare(gen)).generate()
            await anext(holding)  # started upstream: the one slot is taken
            refused: EngineUnavailable | None = None
            try:
                await anext((await engine.prepare(gen)).generate())
            except EngineUnavailable as error:
                refused = error
            await holding.aclose()  # the slot is free again
            served = [
                event
                async for event in (
                    await engine.prepare(direct_generation(engine, {"max_tokens": 4, "messages": HI}))
                ).generate()
            ]
            return refused, len(served)
        finally:
            await engine.close()

    refused, served = asyncio.run(run())
    assert refused is not None and refused.status == 529 and "max_concurrency" in refused.message
    assert served >= 3


# --- through the front Missive: the SDK against a server with no local model ----------------------


def test_the_front_runs_without_a_local_model(front: Server) -> None:
    listed = {model.id for model in sdk(front).models.list(limit=100)}
    assert {"remote-smollm2", "remote-think", "remote-missing", "remote-wrong-key"} <= listed
    assert "smollm2-135m-instruct" not in listed
    assert "llama" not in front.log().lower()


def test_text_is_forwarded_with_the_upstream_model_and_key(
    front: Server, upstream: Server, recorder: Recorder
) -> None:
    message = sdk(front).messages.create(model="remote-smollm2", max_tokens=8, messages=HI)
    assert message.model == "remote-smollm2" and message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8
    sent = last_forwarded(recorder)
    said = [
        {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}
    ]  # the string, as its one block
    assert sent.body == {"model": "smollm2-135m-instruct", "max_tokens": 8, "stream": True, "messages": said}
    assert sent.headers["x-api-key"] == upstream.api_key and sent.headers["anthropic-version"] == "2023-06-01"
    upstream_id = sent.response_headers["request-id"]
    assert upstream_id in front.log()  # logged with the front's own request id
    assert upstream.api_key not in front.log()


def test_a_stream_is_relayed_event_for_event(front: Server, upstream: Server) -> None:
    body = {"max_tokens": 12, "temperature": 0, "messages": HI}
    direct = sse_events(upstream, {**body, "model": "smollm2-135m-instruct"})
    relayed = sse_events(front, {**body, "model": "remote-smollm2"})

    def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [event for event in events if event["type"] != "ping"]
        for event in kept:
            if event["type"] == "message_start":
                event["message"] = {**event["message"], "id": "", "model": ""}
        return kept

    assert comparable(relayed) == comparable(direct)
    assert [e["type"] for e in comparable(relayed)][:2] == ["message_start", "content_block_start"]


def test_nothing_is_buffered_and_closing_the_stream_cancels_the_upstream(
    front: Server, upstream: Server
) -> None:
    mark = len(upstream.log())
    with sdk(front).messages.stream(model="remote-smollm2", max_tokens=400, messages=COUNTING) as stream:
        first = next(iter(stream.text_stream))  # the first delta, long before 400 tokens are written
    assert first
    settled = upstream.wait_for_log(r"settled cancelled .* out=(\d+) ", timeout=30, after=mark)
    assert int(settled.group(1)) < 400  # the upstream stopped generating when the front's client left


def test_tools_and_a_forced_call_come_through(front: Server, recorder: Recorder) -> None:
    choice = {"type": "tool", "name": "get_weather"}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = sdk(front).messages.create(
        model="remote-smollm2", max_tokens=60, tools=[WEATHER], tool_choice=choice, messages=ask
    )
    call = message.content[-1]
    assert message.stop_reason == "tool_use" and call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input.get("city"), str)
    assert last_forwarded(recorder).body["tools"] == [WEATHER]
    assert last_forwarded(recorder).body["tool_choice"] == choice

    with sdk(front).messages.stream(
        model="remote-smollm2", max_tokens=60, tools=[WEATHER], tool_choice=choice, messages=ask
    ) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert kinds and set(kinds) == {"input_json_delta"} and streamed.content[-1].type == "tool_use"

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C."}
    answer = sdk(front).messages.create(
        model="remote-smollm2",
        max_tokens=20,
        tools=[WEATHER],
        messages=[
            *ask,
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {"role": "user", "content": [result]},
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.fixture(scope="module")
def thought(front: Server) -> list[dict[str, Any]]:
    body = {"model": "remote-think", "max_tokens": 1100, "thinking": THINK, "messages": QUESTION}
    return sse_events(front, body)


def thinking_block(events: list[dict[str, Any]]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
    for event in events:
        if event["type"] == "content_block_delta" and event["index"] == 0:
            kind = event["delta"]["type"]
            if kind == "thinking_delta":
                block["thinking"] += event["delta"]["thinking"]
            elif kind == "signature_delta":
                block["signature"] += event["delta"]["signature"]
    return block


def test_thinking_streams_with_the_upstreams_signature(
    thought: list[dict[str, Any]], upstream: Server, front: Server
) -> None:
    start = next(e for e in thought if e["type"] == "content_block_start")
    assert start["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    first_block = [e for e in thought if e.get("index") == 0]
    kinds = [e["delta"]["type"] for e in first_block if e["type"] == "content_block_delta"]
    assert kinds[-1] == "signature_delta" and kinds.count("signature_delta") == 1
    assert set(kinds[:-1]) == {"thinking_delta"} and first_block[-1]["type"] == "content_block_stop"
    block = thinking_block(thought)
    assert block["signature"] == sign_thinking(
        thinking_key(upstream.data_dir), block["thinking"]
    )  # the upstream's
    assert block["signature"] != sign_thinking(
        thinking_key(front.data_dir), block["thinking"]
    )  # not re-signed


def test_a_thinking_block_goes_back_untouched_and_an_edited_one_is_refused_by_the_upstream(
    thought: list[dict[str, Any]], front: Server, recorder: Recorder
) -> None:
    block = thinking_block(thought)
    follow_up = [
        *QUESTION,
        {"role": "assistant", "content": [block, {"type": "text", "text": "144."}]},
        {"role": "user", "content": "Thanks!"},
    ]
    assert sdk(front).messages.count_tokens(model="remote-think", messages=follow_up).input_tokens > 0
    message = sdk(front).messages.create(model="remote-think", max_tokens=5, messages=follow_up)
    assert message.content is not None
    assert last_forwarded(recorder).body["messages"][1]["content"][0] == block

    edited = json.loads(json.dumps(follow_up))
    edited[1]["content"][0]["thinking"] += " (edited)"
    with raw(front) as http:
        response = http.post(
            "/v1/messages", json={"model": "remote-think", "max_tokens": 5, "messages": edited}
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
    }
    assert last_forwarded(recorder).status == 400  # refused by the upstream, not by the front


def test_cache_control_and_cache_usage_come_through(front: Server, recorder: Recorder) -> None:
    marked = {"type": "ephemeral", "ttl": "1h"}
    system = [{"type": "text", "text": "You are a careful assistant. " * 40, "cache_control": marked}]
    first = sdk(front).messages.create(model="remote-smollm2", max_tokens=4, system=system, messages=HI)
    assert last_forwarded(recorder).body["system"] == system
    second = sdk(front).messages.create(model="remote-smollm2", max_tokens=4, system=system, messages=HI)
    assert first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.input_tokens == first.usage.input_tokens


def test_betas_and_version_go_through_as_sent(front: Server, recorder: Recorder) -> None:
    betas = "made-up-beta-2099-01-01,prompt-caching-2024-07-31"
    client = sdk(front, **{"anthropic-beta": betas, "anthropic-version": "2026-10-21"})
    assert client.messages.create(model="remote-smollm2", max_tokens=4, messages=HI).content
    sent = last_forwarded(recorder)
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.betas == ["made-up-beta-2099-01-01", "prompt-caching-2024-07-31"]


def test_upstream_refusals_are_passed_on(front: Server, recorder: Recorder) -> None:
    client = sdk(front)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="remote-missing", max_tokens=4, messages=HI)
    assert missing.value.body["error"]["message"] == "model: no-such-model"
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(anthropic.BadRequestError) as too_long:
        client.messages.create(model="remote-smollm2", max_tokens=4, messages=long)
    assert too_long.value.body["error"]["message"] == last_forwarded(recorder).error["error"]["message"]
    assert too_long.value.body["error"]["message"].startswith("prompt is too long: ")
    assert too_long.value.body["error"]["message"].endswith(" tokens > 2048 maximum")


def test_a_wrong_upstream_key_is_the_servers_fault_not_the_clients(front: Server) -> None:
    with raw(front) as http:
        response = http.post(
            "/v1/messages", json={"model": "remote-wrong-key", "max_tokens": 4, "messages": HI}
        )
    assert response.status_code == 500 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "api_error"
    assert (
        "could not authenticate with its upstream (401 authentication_error)"
        in response.json()["error"]["message"]
    )
    assert "sk-missive-not-a-key" not in response.text and "sk-missive-not-a-key" not in front.log()


def test_count_tokens_is_the_upstreams_exact_count(
    front: Server, upstream: Server, recorder: Recorder
) -> None:
    ask = {"max_tokens": 4, "tools": [WEATHER], "system": "Be brief.", "messages": HI}
    counted = sdk(front).messages.count_tokens(
        model="remote-smollm2", tools=[WEATHER], system="Be brief.", messages=HI
    )
    forwarded = last_forwarded(recorder, "/v1/messages/count_tokens")
    assert forwarded.body["model"] == "smollm2-135m-instruct" and "stream" not in forwarded.body
    direct = sdk(upstream).messages.count_tokens(
        model="smollm2-135m-instruct", tools=[WEATHER], system="Be brief.", messages=HI
    )
    assert counted.input_tokens == direct.input_tokens
    assert (
        sdk(front).messages.create(model="remote-smollm2", **ask).usage.input_tokens == counted.input_tokens
    )


# --- another /v1/messages server: llama.cpp's llama-server ------------------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    if not llamacpp.BINARY.exists():
        pytest.skip(llamacpp.MISSING)
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    args = ("-t", "1", "--jinja", "--no-repack", "-c", "4096", "-np", "2")
    with llamacpp.start(port, *args, log_path=log_path) as process:
        yield f"http://127.0.0.1:{port}", process


def test_the_engine_against_llama_servers_messages_endpoint(
    llama_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Streams one after another, one closed early, then a count. This llama-server exits when a kept-alive
    connection carries a second streaming request, and now and then sends no message_start: the engine
    gives it a fresh connection per request, and starts such a stream at its first block."""
    url, process = llama_server
    config = EngineSettings(
        name="llama-server",
        kind="anthropic",
        url=url,
        models=[RemoteModelSettings(id="smollm2", context_window=2048)],
    )
    engine = AnthropicEngine(config)
    card = engine.models()[0]

    async def run() -> tuple[list[list[Any]], int]:
        await engine.start()
        try:
            runs = []
            for i in range(8):  # mostly one prompt, again and again
                params = rq.MessageCreateParams.model_validate(
                    {
                        "model": "smollm2",
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": f"Say hi to {min(i, 2)}."}],
                    }
                )
                stream = (await engine.prepare(Generation(card, params, params.messages))).generate()
                events = []
                async for event in stream:
                    events.append(event)
                    if i == 1 and len(events) == 3:  # a client that goes away mid-stream
                        await stream.aclose()
                        break
                runs.append(events)
            params = rq.CountTokensParams.model_validate(
                {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi to 2."}]}
            )
            return runs, await engine.count_tokens(Generation(card, params, params.messages))
        finally:
            await engine.close()

    runs, counted = asyncio.run(run())
    assert process.poll() is None, "llama-server exited"
    assert engine.keep_alive is False  # it said `Server: llama.cpp`
    assert len(runs[1]) == 3
    for events in (runs[0], *runs[2:]):
        assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
        assert (
            events[-1].stop_reason in ("end_turn", "max_tokens") and 0 < events[-1].usage.output_tokens <= 16
        )
        assert "".join(e.text for e in events if isinstance(e, Delta) and e.kind == "text")
    # The prompt's tokens, cached or not, as the runs of the same prompt report them (llama-server leaves out
    # message_start now and then, whatever was cached: those runs carry Missive's estimate instead).
    reported = {events[0].usage.input_tokens + events[0].usage.cache_read_input_tokens for events in runs[2:]}
    assert counted in reported
