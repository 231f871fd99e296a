"""Continuous batching through the real server: concurrent streams equal the same requests alone."""

from __future__ import annotations

import asyncio
import re

import anthropic
import httpx
from conftest import COUNTING, Server

MODEL = "claude-sonnet-4-6"
PROMPTS = [
    "Tell me a story about a cat who sails.",
    "Explain how rain forms, step by step.",
    "Write a short poem about mountains.",
    "List some good habits for programmers.",
    "Describe the city of Lisbon.",
    "What makes bread rise?",
]


def ask(prompt: str, max_tokens: int = 48) -> dict:
    """SDK arguments; anthropic 1.x takes sampling parameters only in `extra_body`."""
    messages = [{"role": "user", "content": prompt}]
    return {"model": MODEL, "max_tokens": max_tokens, "extra_body": {"temperature": 0}, "messages": messages}


async def stream_text(client: anthropic.AsyncAnthropic, prompt: str, max_tokens: int = 48) -> str:
    async with client.messages.stream(**ask(prompt, max_tokens)) as stream:
        return "".join([piece async for piece in stream.text_stream])


def test_concurrent_streams_equal_each_request_alone(server: Server, client: anthropic.Anthropic) -> None:
    alone = [client.messages.create(**ask(prompt)).content[0].text for prompt in PROMPTS]

    async def together() -> list[str]:
        async with anthropic.AsyncAnthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0) as aclient:
            return await asyncio.gather(*(stream_text(aclient, prompt) for prompt in PROMPTS))

    # 6 streams on 4 sequences: they batch, queue, join and leave between steps
    assert asyncio.run(together()) == alone


def test_a_long_prompt_joining_does_not_change_running_streams(server: Server, client: anthropic.Anthropic) -> None:
    long_prompt = "Summarise this: " + "The committee met on Tuesday and discussed the budget at length. " * 60
    short = PROMPTS[0]
    alone_short = client.messages.create(**ask(short, 64)).content[0].text
    alone_long = client.messages.create(**ask(long_prompt, 16)).content[0].text

    async def together() -> list[str]:
        async with anthropic.AsyncAnthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0) as aclient:
            first = asyncio.create_task(stream_text(aclient, short, 64))
            await asyncio.sleep(0.2)  # the short one is decoding when the long prompt arrives (chunked prefill)
            second = aclient.messages.create(**ask(long_prompt, 16))
            return [await first, (await second).content[0].text]

    assert asyncio.run(together()) == [alone_short, alone_long]


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    values = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return sum(float(v) for v in values)


def test_metrics_endpoint(server: Server, client: anthropic.Anthropic) -> None:
    client.messages.create(**ask("Hi", 4))
    response = httpx.get(f"{server.base_url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for name in (
        "missive_queue_depth",
        "missive_active_sequences",
        "missive_kv_cache_tokens",
        "missive_prefix_tokens_reused_total",
        "missive_prompt_cache_read_tokens_total",
        "missive_prompt_cache_write_tokens_total",
        "missive_time_to_first_token_seconds_bucket",
        "missive_decode_tokens_per_second_bucket",
    ):
        assert name in response.text, name
    assert metric(server, "missive_output_tokens_total") >= 4


def test_disconnected_streams_free_their_sequences(server: Server, http: httpx.Client) -> None:
    before = len(server.log())
    payload = {"model": MODEL, "max_tokens": 3000, "stream": True, "temperature": 0, "messages": COUNTING}
    clients = [httpx.Client(base_url=server.base_url, headers=http.headers, timeout=30) for _ in range(4)]
    try:
        streams = [c.stream("POST", "/v1/messages", json=payload) for c in clients]
        lines = [s.__enter__().iter_lines() for s in streams]  # kept referenced: dropping one closes it
        for stream_lines in lines:
            next(line for line in stream_lines if "text_delta" in line)
        assert metric(server, "missive_active_sequences") == 4
    finally:
        for c in clients:
            c.close()  # drop the connections mid-stream
    for _ in range(4):
        server.wait_for_log(r"generation cancelled after \d+ tokens", after=before)
        before = server.log().index("generation cancelled after", before) + 1
    assert metric(server, "missive_active_sequences") == 0
    assert http.post("/v1/messages", json={**payload, "stream": False, "max_tokens": 2}).status_code == 200


def test_overload_is_a_529_the_sdk_understands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import run_server

    config = '[local]\nparallel = 1\nmax_queue = 0\n\n[[models]]\nid = "m"\ncontext_window = 1024\n'
    with run_server(tmp_path, config.replace('id = "m"', 'id = "smollm2-135m-instruct"')) as small:
        headers = {"x-api-key": small.api_key, "anthropic-version": "2023-06-01"}
        busy = {"model": MODEL, "max_tokens": 400, "stream": True, "temperature": 0, "messages": COUNTING}
        with httpx.Client(base_url=small.base_url, headers=headers, timeout=30) as first:
            with first.stream("POST", "/v1/messages", json=busy) as response:
                lines = response.iter_lines()
                next(line for line in lines if "text_delta" in line)
                refused = httpx.post(f"{small.base_url}/v1/messages", json={**busy, "stream": False}, headers=headers)
                assert refused.status_code == 529
                assert refused.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
                assert refused.headers["retry-after"] and refused.headers["x-should-retry"] == "true"
                sdk = anthropic.Anthropic(base_url=small.base_url, api_key=small.api_key, max_retries=0)
                try:
                    sdk.messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
                    raise AssertionError("expected a 529")
                except anthropic.APIStatusError as error:
                    assert error.status_code == 529 and error.type == "overloaded_error"
