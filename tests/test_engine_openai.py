"""The OpenAI-compatible engine against a real llama-server: llama.cpp's own server (scripts/llama_server
builds it), run with `--jinja` on the default model, behind a Missive whose `[[engines]]` entry of kind
openai points at it. The official SDK drives Missive.

llama-server runs with tests/templates/upstream.jinja as its chat template (the default model's own
template shows no tools, and llama-server then drops them silently): Hermes-style tool calls, and
thinking in <think> when `enable_thinking` is on (`--reasoning off` makes off the default). It and the
front's embedded model (the route's fallback) keep to one core each. The cut-stream test kills
llama-server: the tests after it need none. What no llama-server sends (vLLM's and SGLang's
stop-sequence fields, parallel calls, reasoning under the name `reasoning`, errors inside a stream,
other servers' error bodies) is checked on the relay and the error mapping alone, with chunks and
bodies of the shapes those servers document; vLLM's refusal of a max_tokens its window cannot hold,
on a stand-in transport.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import llamacpp
import pytest
from conftest import COUNTING, Server, free_port, launch, stop
from media_files import image_bytes, minimal_pdf

from missive.engines.base import EngineUnavailable, Generation
from missive.engines.openai.engine import OpenAIEngine
from missive.engines.openai.errors import from_chunk, from_response
from missive.engines.openai.relay import Relay
from missive.settings import EngineSettings, RemoteModelSettings
from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.events import BlockStart, BlockStop, Delta, Finished, Started

TEMPLATE = Path(__file__).parent / "templates" / "upstream.jinja"
UPSTREAM_CONTEXT = 2048  # per slot: -c 4096 over -np 2
UPSTREAM_KEY, WRONG_KEY = "sk-upstream-test-4f9a", "sk-upstream-wrong-77c1"

FRONT = """
default_model = "smollm2-135m-instruct"
ping_interval = 0.5

[local]
threads = 1
parallel = 1

[[models]]
id = "smollm2-135m-instruct"
context_window = 2048

[[engines]]
name = "llama-server"
kind = "openai"
url = "http://127.0.0.1:{port}/v1"
api_key_env = "MISSIVE_TEST_UPSTREAM_KEY"
first_token_timeout = 30
max_concurrency = 2

[[engines.models]]
id = "remote-smollm2"
context_window = 100000  # more than the upstream's: its refusal is the answer
max_output_tokens = 4096

[[engines.models]]
id = "remote-think"
context_window = 2048
thinking = true

[[engines.models]]
id = "remote-eyes"  # said to take images, but llama-server runs without a projector: its 400 is the answer
context_window = 2048
image_input = true

[[engines]]
name = "wrong-key"
kind = "openai"
url = "http://127.0.0.1:{port}"
api_key_env = "MISSIVE_TEST_WRONG_KEY"

[[engines.models]]
id = "remote-wrong-key"

[[routes]]
model = "claude-sonnet-4-6"
to = ["remote-smollm2", "smollm2-135m-instruct"]

[circuit_breaker]
failures = 2
cool_down = 60

[batches]
concurrency = 3  # one more than llama-server's max_concurrency: batch work waits for the cap
poll_interval = 0.2
"""

HI = [{"role": "user", "content": "Say hi."}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


class LlamaServer:
    """The upstream, which a test may stop."""

    def __init__(self, root: Path) -> None:
        self.port, self.log_path = free_port(), root / "llama-server.log"
        self._block = llamacpp.start(
            self.port,
            *("-t", "1", "--jinja", "--chat-template-file", str(TEMPLATE), "--reasoning", "off"),
            *("--no-repack", "-c", str(2 * UPSTREAM_CONTEXT), "-np", "2", "--api-key", UPSTREAM_KEY),
            log_path=self.log_path,
        )
        self.process: subprocess.Popen[bytes] = self._block.__enter__()

    def stop(self) -> None:
        self._block.__exit__(None, None, None)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if not llamacpp.BINARY.exists():
        pytest.skip(llamacpp.MISSING)
    server = LlamaServer(tmp_path_factory.mktemp("llama-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, upstream: LlamaServer) -> Iterator[Server]:
    os.environ["MISSIVE_TEST_UPSTREAM_KEY"], os.environ["MISSIVE_TEST_WRONG_KEY"] = UPSTREAM_KEY, WRONG_KEY
    try:
        process, server = launch(tmp_path_factory.mktemp("front"), FRONT.format(port=upstream.port), "front.log")
    finally:
        del os.environ["MISSIVE_TEST_UPSTREAM_KEY"], os.environ["MISSIVE_TEST_WRONG_KEY"]
    try:
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="module")
def client(front: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=front.base_url, api_key=front.api_key, max_retries=0, timeout=120)


def sse_events(front: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    headers = {"x-api-key": front.api_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=front.base_url, headers=headers, timeout=120) as http:
        with http.stream("POST", "/v1/messages", json={**body, "stream": True}) as response:
            assert response.status_code == 200, response.read()
            return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def ledger(front: Server, request_id: str) -> dict[str, Any]:
    """The usage record of one request, once settled (bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(front.data_dir / "missive.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("select * from usage_records where id = ?", (request_id,)).fetchone()
        if row is not None and row["settled_at"] is not None or time.monotonic() > deadline:
            assert row is not None, f"no usage record for {request_id}"
            return dict(row)
        time.sleep(0.1)


# --- through Missive, against llama-server ------------------------------------------------------------


def test_text_comes_back_whole_and_streamed(client: anthropic.Anthropic, front: Server) -> None:
    message = client.messages.create(model="remote-smollm2", max_tokens=12, messages=HI)
    assert message.model == "remote-smollm2" and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and 0 < message.usage.output_tokens <= 12
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 5
    with client.messages.stream(model="remote-smollm2", max_tokens=12, messages=HI) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces and "".join(pieces) == final.content[0].text
    assert front.wait_for_log(r"engine llama-server: upstream server 'llama.cpp', keep-alive False")


def test_the_stream_is_in_the_messages_apis_order(front: Server) -> None:
    events = sse_events(front, {"model": "remote-smollm2", "max_tokens": 8, "messages": HI})
    kinds = [event["type"] for event in events if event["type"] != "ping"]
    assert kinds[:2] == ["message_start", "content_block_start"] and kinds[-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    final = events[-2]
    assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens") and final["usage"]["output_tokens"] > 0
    # message_start carries the admission estimate; message_delta the upstream's own count
    assert final["usage"]["input_tokens"] + final["usage"]["cache_read_input_tokens"] > 0


def test_streams_in_a_row_survive_llama_servers_keep_alive_quirk(
    client: anthropic.Anthropic, upstream: LlamaServer
) -> None:
    """This llama-server exits when a kept-alive connection carries a second streaming request: each
    request gets a fresh connection, one closed early among them."""
    for i in range(6):
        with client.messages.stream(model="remote-smollm2", max_tokens=8, messages=HI) as stream:
            if i == 2:  # a client that goes away mid-stream
                next(iter(stream.text_stream))
                continue
            assert stream.get_final_message().usage.output_tokens > 0
    assert upstream.process.poll() is None, "llama-server exited"


def test_a_forced_tool_call_streams_its_input_valid_per_schema(client: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    with client.messages.stream(
        model="remote-smollm2",
        max_tokens=100,
        extra_body={"temperature": 0},  # at 1.0 the city could run on past max_tokens (seen once in CI)
        messages=[ask],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        partial = [event.partial_json for event in stream if event.type == "input_json"]
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use" and [block.type for block in message.content] == ["tool_use"]
    call = message.content[0]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert len(partial) > 1 and json.loads("".join(partial)) == call.input
    jsonschema.validate(call.input, WEATHER["input_schema"])


def test_a_batch_runs_through_the_upstream_within_its_concurrency_cap(client: anthropic.Anthropic, front: Server) -> None:
    requests = [{"custom_id": f"r{i}", "params": {"model": "remote-smollm2", "max_tokens": 6, "messages": HI}}
                for i in range(5)]  # fmt: skip
    batch = client.messages.batches.create(requests=requests)
    deadline = time.monotonic() + 120
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in results) == [f"r{i}" for i in range(5)]
    assert all(line.result.type == "succeeded" for line in results), results
    assert {line.result.message.usage.service_tier for line in results} == {"batch"}
    records = [ledger(front, request_id) for request_id in _batch_request_ids(front, batch.id)]
    assert {(row["engine"], row["service_tier"], row["status"]) for row in records} == {("llama-server", "batch", "succeeded")}


def _batch_request_ids(front: Server, batch_id: str) -> list[str]:
    with sqlite3.connect(front.data_dir / "missive.db") as conn:
        return [row[0] for row in conn.execute("SELECT id FROM batch_requests WHERE batch_id = ?", (batch_id,))]


def test_the_upstreams_tool_calls_become_tool_use_blocks_and_go_back_as_history(
    client: anthropic.Anthropic,
) -> None:
    """tool_choice any over two tools is llama-server's "required": text may come first, which this small
    model never ends, so a prefill opens the call; llama-server then constrains its arguments and streams
    `tool_calls` deltas, which come back as a tool_use block under the upstream's call id."""
    opened = '<tool_call>\n{"name": "get_weather", "arguments":'
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    clock = {**WEATHER, "name": "get_time", "description": "The time in a city."}
    with client.messages.stream(
        model="remote-smollm2",
        max_tokens=40,
        extra_body={"temperature": 0},
        messages=[ask, {"role": "assistant", "content": opened}],
        tools=[WEATHER, clock],
        tool_choice={"type": "any"},
    ) as stream:
        partial = [event.partial_json for event in stream if event.type == "input_json"]
        message = stream.get_final_message()
    calls = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use" and len(calls) == 1 and calls[0].name == "get_weather"
    assert not calls[0].id.startswith("toolu_")  # the upstream's id
    assert len(partial) > 1 and json.loads("".join(partial)) == calls[0].input
    jsonschema.validate(calls[0].input, WEATHER["input_schema"])
    # The call and its result, as history: the upstream takes them (tool_calls, a tool message).
    call = {"type": "tool_use", "id": calls[0].id, "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21 C."}
    answer = client.messages.create(
        model="remote-smollm2",
        max_tokens=8,
        tools=[WEATHER],
        messages=[ask, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}],
    )
    assert answer.usage.output_tokens > 0


def test_structured_output_is_json_valid_per_schema(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="remote-smollm2",
        max_tokens=60,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": PERSON}}},
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), PERSON)


def test_a_stop_sequence_is_named(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="remote-smollm2",
        max_tokens=40,
        extra_body={"temperature": 0},
        stop_sequences=["5", "never-written"],
        messages=[
            {"role": "user", "content": "Count from 1 to 10, separated by commas."},
            {"role": "assistant", "content": "1, 2, 3,"},
        ],
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "5")
    assert "5" not in message.content[0].text and "4" in message.content[0].text


def test_max_tokens_stops_at_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="remote-smollm2", max_tokens=3, messages=COUNTING)
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"system": "You are terse.", "tools": [WEATHER]},
        {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
    ],
    ids=["plain", "system-and-tools", "forced-tool"],
)
def test_count_tokens_is_what_create_reports(client: anthropic.Anthropic, extra: dict[str, Any]) -> None:
    """The upstream's template and tokenizer count (/apply-template, /tokenize); create reports the same
    prompt, the part llama-server had cached as cache reads."""
    ask = {"model": "remote-smollm2", "messages": HI, **extra}
    counted = client.messages.count_tokens(**ask).input_tokens
    usage = client.messages.create(max_tokens=4, **ask).usage
    assert counted == usage.input_tokens + usage.cache_read_input_tokens


def test_a_prompt_over_the_upstreams_window_is_the_claude_apis_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="remote-smollm2", max_tokens=4, messages=[{"role": "user", "content": "word " * 3000}]
        )
    body = refused.value.body["error"]
    assert body["type"] == "invalid_request_error"
    assert body["message"].startswith("prompt is too long: ") and body["message"].endswith(
        f" tokens > {UPSTREAM_CONTEXT} maximum"
    )


def test_an_upstream_400_keeps_the_upstreams_message(client: anthropic.Anthropic) -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="remote-smollm2",
            max_tokens=4,
            messages=HI,
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": broken}}},
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "cannot resolve $ref #/$defs/missing" in refused.value.body["error"]["message"]


def test_server_tools_and_unreadable_input_are_refused_before_the_upstream(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="server tool web_search_20250305 is not available"):
        client.messages.create(
            model="remote-smollm2",
            max_tokens=4,
            messages=HI,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    png = base64.b64encode(image_bytes("PNG")).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    with pytest.raises(anthropic.BadRequestError, match="does not support image input"):
        client.messages.create(model="remote-smollm2", max_tokens=4, messages=[{"role": "user", "content": [image]}])


def test_images_go_upstream_as_data_urls_and_its_refusal_is_passed_on(client: anthropic.Anthropic) -> None:
    """llama-server without a projector refuses an image_url part with a 500 of its own: the image reached it,
    and its status and words come back as they are (its 400s come back as 400s: the $ref test above)."""
    png = base64.b64encode(image_bytes("PNG")).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(model="remote-eyes", max_tokens=4, messages=[{"role": "user", "content": [image]}])
    assert refused.value.status_code == 500
    assert refused.value.body["error"]["message"].startswith("image input is not supported")
    # the engine still serves (greedy: at 1.0 two sampled tokens can be half a character each, and show no text)
    greedy = {"temperature": 0}
    assert client.messages.create(model="remote-smollm2", max_tokens=2, messages=HI, extra_body=greedy).content
    mislabelled = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": png}}
    with pytest.raises(anthropic.BadRequestError, match="specified using the image/gif media type"):
        client.messages.create(model="remote-eyes", max_tokens=4, messages=[{"role": "user", "content": [mislabelled]}])


def test_a_pdf_reaches_a_text_upstream_as_its_pages_text(client: anthropic.Anthropic) -> None:
    data = base64.b64encode(minimal_pdf(["The secret word is tangerine."])).decode()
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}
    ask = [{"role": "user", "content": [document, {"type": "text", "text": "Repeat the secret word."}]}]
    message = client.messages.create(model="remote-smollm2", max_tokens=4, messages=ask)
    as_text = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    plain = client.messages.create(model="remote-smollm2", max_tokens=4, messages=as_text)
    assert message.usage.input_tokens > plain.usage.input_tokens + 10  # the page's text went up, with its markers


def test_reasoning_is_thinking_signed_by_missive_and_goes_back(client: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is 12 times 12?"}
    adaptive = {"type": "adaptive"}
    message = client.messages.create(model="remote-think", max_tokens=16, thinking=adaptive, messages=[ask])
    block = message.content[0]
    assert block.type == "thinking" and block.thinking and block.signature  # llama-server's reasoning_content
    plain = client.messages.create(model="remote-think", max_tokens=8, messages=[ask])
    assert [b.type for b in plain.content] == ["text"]  # thinking off: enable_thinking false, no reasoning
    # The signed block goes back (as reasoning_content); an edited one is Missive's 400.
    sent = {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    later = [ask, {"role": "assistant", "content": [sent, {"type": "text", "text": "144."}]}, {"role": "user", "content": "Sure?"}]
    assert client.messages.create(model="remote-think", max_tokens=8, thinking=adaptive, messages=later).content
    sent["thinking"] += " (edited)"
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        client.messages.create(model="remote-think", max_tokens=8, thinking=adaptive, messages=later)


def test_a_refused_upstream_key_is_the_servers_fault_and_never_shown(client: anthropic.Anthropic, front: Server) -> None:
    with pytest.raises(anthropic.InternalServerError) as refused:
        client.messages.create(model="remote-wrong-key", max_tokens=4, messages=HI)
    assert refused.value.body["error"] == {
        "type": "api_error",
        "message": "Engine wrong-key could not authenticate with its upstream (401 authentication_error).",
    }
    assert refused.value.response.headers.get("x-should-retry") == "false"
    assert client.messages.create(model="remote-smollm2", max_tokens=2, messages=HI).content  # the right key
    assert UPSTREAM_KEY not in front.log() and WRONG_KEY not in front.log()


def test_the_ledger_names_the_engine_and_its_usage(client: anthropic.Anthropic, front: Server) -> None:
    response = client.messages.with_raw_response.create(model="remote-smollm2", max_tokens=5, messages=HI)
    message = response.parse()
    row = ledger(front, response.headers["request-id"])
    assert (row["engine"], row["model"], row["status"]) == ("llama-server", "remote-smollm2", "succeeded")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    )


# It kills llama-server: the tests below need none.
def test_a_cut_stream_is_an_error_and_then_the_route_falls_back_to_the_local_model(
    client: anthropic.Anthropic, front: Server, upstream: LlamaServer
) -> None:
    ask = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": HI}
    response = client.messages.with_raw_response.create(**ask)
    assert ledger(front, response.headers["request-id"])["engine"] == "llama-server"

    seen: list[str] = []
    errors: list[Exception] = []

    def stop_after_a_few_deltas() -> None:
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        upstream.process.kill()

    killer = threading.Thread(target=stop_after_a_few_deltas)
    killer.start()
    try:
        with client.messages.stream(**{**ask, "max_tokens": 400, "messages": COUNTING}) as stream:
            for text in stream.text_stream:
                seen.append(text)
    except anthropic.APIError as error:  # an `event: error` inside the stream: no fallback after a byte
        errors.append(error)
    killer.join(60)
    upstream.stop()
    assert len(seen) >= 3 and errors and "the upstream connection was lost mid-stream" in str(errors[0])

    for _ in range(3):  # llama-server is gone: each request falls back to the embedded model
        response = client.messages.with_raw_response.create(**ask)
        message = response.parse()
        assert message.content and message.model == "claude-sonnet-4-6"
        assert ledger(front, response.headers["request-id"])["engine"] == "local"
    # count_tokens falls back the same way
    assert client.messages.count_tokens(model="claude-sonnet-4-6", messages=HI).input_tokens > 0


# --- the relay and the errors alone: what llama-server does not send -------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}]}


USAGE = {"usage": {"prompt_tokens": 30, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 20}}}


def relayed(relay: Relay, chunks: list[dict[str, Any]]) -> list[Any]:
    events = [event for data in chunks for event in relay.feed(data)]
    return events + relay.finish()


def test_parallel_tool_calls_by_index_with_the_upstreams_ids_or_missives() -> None:
    relay = Relay("vllm", estimated_input=7, max_tokens=100)
    events = relayed(
        relay,
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Checking."}),
            chunk({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1a", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call 2!", "function": {"name": "get_weather",
                                                                             "arguments": '{"city": "Rome"}'}}]}),
            chunk(finish="tool_calls"),
            USAGE,
        ],
    )
    assert isinstance(events[0], Started) and events[0].usage.input_tokens == 7
    starts = [event for event in events if isinstance(event, BlockStart)]
    assert [(s.kind, s.tool_id) for s in starts][:2] == [("text", None), ("tool_use", "chatcmpl-tool-1a")]
    assert starts[2].tool_id.startswith("toolu_")  # "call 2!" is no valid tool_use id
    inputs = [e.text for e in events if isinstance(e, Delta) and e.kind == "input_json"]
    assert inputs == ['{"city": ', '"Paris"}', '{"city": "Rome"}']
    assert sum(isinstance(event, BlockStop) for event in events) == 3
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stop_reason == "tool_use"
    assert (finished.usage.input_tokens, finished.usage.cache_read_input_tokens, finished.usage.output_tokens) == (
        10,
        20,
        9,
    )


def test_stop_sequences_named_by_vllm_and_sglang_and_reasoning_by_either_name() -> None:
    for field in ("stop_reason", "matched_stop"):
        relay = Relay("x", max_tokens=50, stop_sequences=("END",))
        events = relayed(relay, [chunk({"content": "a"}), chunk(finish="stop", **{field: "END"}), USAGE])
        assert (events[-1].stop_reason, events[-1].stop_sequence) == ("stop_sequence", "END")
    relay = Relay("x", max_tokens=50, thinking=True)
    events = relayed(relay, [chunk({"reasoning": "hm"}), chunk({"reasoning_content": "m"}), chunk({"content": "ok"}),
                             chunk(finish="stop")])
    kinds = [(e.kind, e.text) for e in events if isinstance(e, Delta)]
    assert kinds == [("thinking", "hm"), ("thinking", "m"), ("text", "ok")] and events[-1].stop_reason == "end_turn"
    # thinking off: reasoning is not shown; no usage reported: the deltas stand in for output tokens
    events = relayed(Relay("x", max_tokens=50), [chunk({"reasoning": "hm"}), chunk({"content": "ok"}), chunk(finish="stop")])
    assert [e.kind for e in events if isinstance(e, BlockStart)] == ["text"] and events[-1].usage.output_tokens == 2


def test_length_short_of_max_tokens_is_the_end_of_the_context_window() -> None:
    usage = {"usage": {"prompt_tokens": 2040, "completion_tokens": 8}}
    events = relayed(Relay("x", max_tokens=32000), [chunk({"content": "a"}), chunk(finish="length"), usage])
    assert events[-1].stop_reason == "model_context_window_exceeded"
    events = relayed(Relay("x", max_tokens=8), [chunk({"content": "a"}), chunk(finish="length"), usage])
    assert events[-1].stop_reason == "max_tokens"


def test_errors_in_a_stream_and_in_bodies_of_other_shapes() -> None:
    overloaded = {"error": {"message": "busy", "type": "server_error", "code": 503}}
    with pytest.raises(EngineUnavailable):  # before the first chunk: the route may fall back
        Relay("x").feed(overloaded)
    relay = Relay("x")
    relay.feed(chunk({"content": "a"}))
    with pytest.raises(ApiError) as mid:
        relay.feed(overloaded)
    assert not isinstance(mid.value, EngineUnavailable) and mid.value.status == 503
    assert from_chunk({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}, True).status == 400
    vllm = b'{"object": "error", "message": "This model\'s maximum context length is 4096 tokens. However, you ' \
        b'requested 5000 tokens (4990 in the messages, 10 in the completion).", "type": "BadRequestError", "code": 400}'
    refused = from_response("vllm", "req", 400, vllm, httpx.Headers())
    assert (refused.status, refused.message) == (400, "prompt is too long: 4990 tokens > 4096 maximum")
    detail = from_response("sglang", "req", 422, b'{"detail": "messages: field required"}', httpx.Headers())
    assert (detail.status, detail.error_type) == (400, "invalid_request_error") and "field required" in detail.message
    wrong_key = from_response("x", "req", 401, b'{"error": {"message": "Invalid API key"}}', httpx.Headers())
    assert isinstance(wrong_key, EngineUnavailable) and wrong_key.status == 500 and "Invalid" not in wrong_key.message
    limited = from_response("x", "req", 429, b"{}", httpx.Headers({"retry-after": "3"}))
    assert isinstance(limited, EngineUnavailable) and limited.headers == {"retry-after": "3"}


def test_a_window_too_small_for_max_tokens_is_asked_again_for_what_it_leaves() -> None:
    """vLLM refuses a prompt that fits when prompt + max_tokens exceeds its window, and says how much room
    there is: the engine asks once more for no more than that (its one slot freed in between)."""
    too_large = (
        "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's maximum context length is "
        "4096 tokens and your request has 1000 input tokens (32000 > 4096 - 1000)."
    )
    stream = "".join(
        f"data: {json.dumps(data)}\n\n"
        for data in (chunk({"role": "assistant", "content": "hi"}), chunk(finish="length"),
                     {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 3096}})
    ) + "data: [DONE]\n\n"
    asked: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A vLLM that refuses the first max_tokens and streams for the second (one request per connection)."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lengths = [line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")]
        sent = await reader.readexactly(int(lengths[0]) if lengths else 0)
        if head.startswith("GET /v1/models"):
            status, content, kind = 200, json.dumps({"data": []}), "application/json"
        else:
            asked.append(json.loads(sent)["max_tokens"])
            if len(asked) == 1:
                refusal = {"error": {"message": too_large, "type": "BadRequestError", "code": 400}}
                status, content, kind = 400, json.dumps(refusal), "application/json"
            else:
                status, content, kind = 200, stream, "text/event-stream"
        writer.write(
            f"HTTP/1.1 {status} X\r\nServer: uvicorn\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n{content}".encode()
        )
        await writer.drain()
        writer.close()

    async def run() -> list[Any]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = EngineSettings(
            name="vllm", kind="openai", url=f"http://127.0.0.1:{port}", max_concurrency=1,
            models=[RemoteModelSettings(id="m", context_window=100_000)],
        )
        engine = OpenAIEngine(config)
        params = rq.MessageCreateParams.model_validate({"model": "m", "max_tokens": 32000, "messages": HI})
        await engine.start()
        try:
            prepared = await engine.prepare(Generation(engine.models()[0], params, params.messages))
            return [event async for event in prepared.generate()]
        finally:
            await engine.close()
            server.close()

    events = asyncio.run(run())
    assert asked == [32000, 3096] and events[-1].stop_reason == "model_context_window_exceeded"


def test_an_upstream_that_closes_without_saying_so_gets_a_fresh_connection_each_time() -> None:
    """Asked `Connection: close`, some servers close after the response without naming it in their answer.
    A request must never go on such a dead connection: each of a llama-server's requests gets its own,
    and all of them, also at once, are served."""
    stream = "".join(
        f"data: {json.dumps(data)}\n\n"
        for data in (chunk({"role": "assistant", "content": "hi"}), chunk(finish="stop"),
                     {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    ) + "data: [DONE]\n\n"
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lengths = [line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")]
        await reader.readexactly(int(lengths[0]) if lengths else 0)
        assert "connection: close" in head.lower()
        listing = head.startswith("GET")
        content, kind = (json.dumps({"data": []}), "application/json") if listing else (stream, "text/event-stream")
        writer.write(f"HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nContent-Type: {kind}\r\n"
                     f"Content-Length: {len(content)}\r\n\r\n{content}".encode())  # no Connection header
        await writer.drain()
        writer.close()

    async def run() -> list[list[Any]]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = EngineSettings(name="llama", kind="openai", url=f"http://127.0.0.1:{port}",
                                models=[RemoteModelSettings(id="m", context_window=8192)])
        engine = OpenAIEngine(config)
        params = rq.MessageCreateParams.model_validate({"model": "m", "max_tokens": 16, "messages": HI})

        async def one() -> list[Any]:
            prepared = await engine.prepare(Generation(engine.models()[0], params, params.messages))
            return [event async for event in prepared.generate()]

        await engine.start()
        try:
            return [*[await one() for _ in range(3)], *await asyncio.gather(*(one() for _ in range(8)))]
        finally:
            await engine.close()
            server.close()

    answers = asyncio.run(run())
    assert [events[-1].stop_reason for events in answers] == ["end_turn"] * 11
    assert connections == 12  # the identifying GET, then one per request


def line_reader(lines: list[str]) -> list[tuple[str | None, str]]:
    """Server-sent events read line by line, as the format's definition reads them: the reference."""
    events, name, data = [], None, []
    for line in [*lines, ""]:
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
    return events


def test_the_byte_level_sse_reader_reads_what_the_line_reader_reads() -> None:
    """The stream is read from its bytes (upstream.sse), not line by line: however the body is cut into
    reads, and whatever its line ends, the events are what a line-by-line reader reads."""
    import random

    from missive.engines import upstream

    async def parts(items: list[Any]) -> Any:
        for item in items:
            yield item

    pieces = ['data: {"a":1}\n\n', "data: [DONE]\n\n", ": ping\n\n", "event: x\ndata: y\n\n", "data:z\r\n\r\n",
              "data: a\ndata: b\n\n", "\n", "data: é€\r\r", "id: 3\n\n", "data\n\n", "data: tail"]
    chooser = random.Random(7)

    async def check() -> None:
        for _ in range(500):
            text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(0, 8)))
            raw = text.encode()
            cuts = sorted(chooser.sample(range(len(raw) + 1), min(len(raw) + 1, chooser.randint(0, 6))))
            reads = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
            read = [(name, data.decode()) async for name, data in upstream.sse(parts(reads))]
            assert read == line_reader(text.splitlines()), text

    asyncio.run(check())
