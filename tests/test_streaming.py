"""Streaming (spec §6): framing and event order on the wire, the SDK's accumulator, disconnects."""

from __future__ import annotations

import json

import anthropic
import httpx
from conftest import COUNTING, Server

MODEL = "claude-haiku-4-5"
STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """Parse SSE strictly: every event has an `event:` line and a `data:` line whose type matches."""
    events: list[tuple[str, dict]] = []
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
            assert name is not None, "data without an event: line"
            assert data["type"] == name
            events.append((name, data))
            name = None
        else:
            assert line == "", f"unexpected line {line!r}"
    return events


def test_event_order_framing_and_cumulative_usage(http: httpx.Client) -> None:
    payload = {"model": MODEL, "max_tokens": 12, "stream": True, "temperature": 0, "messages": STORY}
    with http.stream("POST", "/v1/messages", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["request-id"].startswith("req_")
        events = read_events(response)
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert any(name == "ping" for name, _ in events)

    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == MODEL
    assert start["id"].startswith("msg_")
    assert start["usage"]["input_tokens"] > 0
    block_start = next(data for name, data in events if name == "content_block_start")
    assert block_start == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 12  # cumulative: the whole generation
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]

    text = "".join(d["delta"]["text"] for d in deltas)
    collected = http.post("/v1/messages", json={**payload, "stream": False}).json()
    assert collected["content"][0]["text"] == text  # one generation path


def test_sdk_stream_helpers(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=20, extra_body={"temperature": 0}, messages=STORY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text
    assert final.usage.output_tokens == 20 and final.stop_reason == "max_tokens"
    assert final.model == MODEL


def test_sdk_raw_stream_events(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=5, messages=STORY, stream=True)
    types = [event.type for event in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "message_delta" in types


def test_stop_sequence_in_a_stream_is_never_sent(http: httpx.Client) -> None:
    payload = {"model": MODEL, "max_tokens": 60, "temperature": 0, "messages": [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]}
    free = http.post("/v1/messages", json=payload).json()["content"][0]["text"]
    stop = "7" if "7" in free else free.split()[2]
    with http.stream("POST", "/v1/messages", json={**payload, "stream": True, "stop_sequences": [stop]}) as response:
        events = read_events(response)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert stop not in text
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}


def test_validation_errors_come_before_the_stream(http: httpx.Client) -> None:
    payload = {"model": MODEL, "max_tokens": 8, "stream": True, "messages": []}
    response = http.post("/v1/messages", json=payload)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"


def test_disconnect_cancels_the_generation_at_once(http: httpx.Client, server: Server) -> None:
    before = len(server.log())
    payload = {"model": MODEL, "max_tokens": 3000, "stream": True, "messages": COUNTING}
    with http.stream("POST", "/v1/messages", json=payload) as response:
        for line in response.iter_lines():
            if "text_delta" in line:
                break
    # leaving the block closed the connection mid-stream
    match = server.wait_for_log(r"generation cancelled after (\d+) tokens", after=before)
    assert int(match.group(1)) < 3000
    # the engine is free again: a new request is served
    assert http.post("/v1/messages", json={"model": MODEL, "max_tokens": 2, "messages": STORY}).status_code == 200


def test_disconnect_cancels_a_non_streaming_generation_too(server: Server) -> None:
    before = len(server.log())
    headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
    payload = {"model": MODEL, "max_tokens": 3000, "messages": COUNTING, "temperature": 0}
    try:
        httpx.post(f"{server.base_url}/v1/messages", json=payload, headers=headers, timeout=1.0)
    except httpx.ReadTimeout:
        pass
    match = server.wait_for_log(r"generation cancelled (after (\d+) tokens|during prefill)", after=before)
    assert match


def test_pings_keep_a_quiet_stream_alive(http: httpx.Client) -> None:
    """While a long prompt is prefilled, the stream has already started and sends pings."""
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 100  # about 1,000 tokens
    payload = {"model": MODEL, "max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": long_prompt}]}
    with http.stream("POST", "/v1/messages", json=payload) as response:
        events = [name for name, _ in read_events(response)]
    first_block = events.index("content_block_start")
    assert events[0] == "message_start"
    assert "ping" in events[1:first_block]  # ping_interval is 0.5 s in the tests
