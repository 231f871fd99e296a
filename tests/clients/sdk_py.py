"""The Python SDK (anthropic 2.x, in the clients venv) against Missive.

Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY; prints one JSON object of observations and exits 0.
tests/test_clients_sdks.py makes the assertions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import anthropic

MODEL = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]

client = anthropic.Anthropic(timeout=60)
out: dict[str, Any] = {"sdk_version": anthropic.__version__}


def check(name: str, body: Callable[[], Any]) -> None:
    """Runs one check; an exception is reported under its name instead of ending the script."""
    try:
        out[name] = body()
    except Exception as error:  # noqa: BLE001 - reported, the test decides
        out[name] = {"exception": f"{type(error).__name__}: {error}"}


def summary(message: anthropic.types.Message) -> dict[str, Any]:
    return message.model_dump(
        mode="json", include={"id", "type", "role", "model", "stop_reason", "usage", "content"}
    )


def failure(request: Callable[[], object]) -> dict[str, Any]:
    try:
        request()
    except anthropic.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        return {
            "raised": type(error).__name__,
            "not_found": isinstance(error, anthropic.NotFoundError),
            "bad_request": isinstance(error, anthropic.BadRequestError),
            "status": error.status_code,
            "type": error.type,
            "error_type": body.get("error", {}).get("type"),
            "body_type": body.get("type"),
            "api_message": error.api_message,
            "request_id": error.request_id,
        }
    return {"raised": None}


def create() -> dict[str, Any]:
    return summary(client.messages.create(model=MODEL, max_tokens=20, messages=HELLO))


def stream() -> dict[str, Any]:
    deltas: list[str] = []
    events: list[str] = []
    with client.messages.stream(model=MODEL, max_tokens=20, messages=HELLO) as events_stream:
        for event in events_stream:
            events.append(event.type)
            if event.type == "text":
                deltas.append(event.text)
        final = events_stream.get_final_message()
    return {"deltas": deltas, "events": events, "final": summary(final)}


def forced_tool() -> dict[str, Any]:
    partials: list[str] = []
    snapshot: object = None
    delta_types: list[str] = []
    json_by_block: dict[int, str] = {}  # content block index -> its input_json_delta parts, joined
    with client.messages.stream(
        model=MODEL,
        max_tokens=40,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": WEATHER["name"]},
    ) as events_stream:
        for event in events_stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
                snapshot = event.snapshot
            elif event.type == "content_block_delta":
                delta_types.append(event.delta.type)
                if event.delta.type == "input_json_delta":
                    json_by_block[event.index] = json_by_block.get(event.index, "") + event.delta.partial_json
        final = events_stream.get_final_message()
    return {
        "partials": partials,
        "snapshot": snapshot,
        "delta_types": delta_types,
        "json_by_block": json_by_block,
        "final": summary(final),
    }


def count_tokens() -> dict[str, Any]:
    counted = client.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER])
    created = client.messages.create(model=MODEL, max_tokens=4, messages=ASK, tools=[WEATHER])
    return {"counted": counted.input_tokens, "created": created.usage.input_tokens}


def models() -> dict[str, Any]:
    ids = [model.id for model in client.models.list(limit=1)]  # auto-pagination, one per page
    page = client.models.list()
    return {
        "ids": ids,
        "all": [model.id for model in page.data],
        "first": page.data[0].model_dump(mode="json"),
    }


async def use_async() -> dict[str, Any]:
    async with anthropic.AsyncAnthropic(timeout=60) as async_client:
        message = await async_client.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
        async with async_client.messages.stream(model=MODEL, max_tokens=16, messages=HELLO) as events_stream:
            text = "".join([delta async for delta in events_stream.text_stream])
            final = await events_stream.get_final_message()
    return {"create": summary(message), "stream_text": text, "stream_final": summary(final)}


def batches() -> dict[str, Any]:
    """A batch through `client.messages.batches`: create, poll, results, list, the beta namespace, cancel
    and delete (the SDK follows `results_url` itself)."""
    import time

    requests: Any = [
        {"custom_id": "ok", "params": {"model": MODEL, "max_tokens": 4, "messages": HELLO}},
        {"custom_id": "too-long", "params": {"model": MODEL, "max_tokens": 10**6, "messages": HELLO}},
    ]
    batch = client.messages.batches.create(requests=requests)
    deadline = time.monotonic() + 120
    while (polled := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch.id} did not end")
        time.sleep(0.3)
    results = {line.custom_id: line.result.model_dump(mode="json") for line in client.messages.batches.results(batch.id)}
    listed = client.messages.batches.list(limit=1)
    beta = client.beta.messages.batches.retrieve(batch.id)
    # enough work that it cannot end before the cancel arrives (one short request sometimes did)
    longer: Any = [
        {"custom_id": f"long-{i}", "params": {"model": MODEL, "max_tokens": 64, "messages": HELLO}} for i in range(8)
    ]
    other = client.messages.batches.create(requests=longer)
    canceled = client.messages.batches.cancel(other.id)
    deleted = client.messages.batches.delete(batch.id)
    return {
        "created": batch.model_dump(mode="json"),
        "ended": polled.model_dump(mode="json"),
        "results": results,
        "listed_first": listed.data[0].id,
        "beta": beta.processing_status,
        "canceled": canceled.model_dump(mode="json"),
        "deleted": deleted.model_dump(mode="json"),
        "gone": failure(lambda: client.messages.batches.retrieve(batch.id)),
    }


check("create", create)
check("stream", stream)
check("forced_tool", forced_tool)
check("count_tokens", count_tokens)
check("models", models)
check(
    "not_found",
    lambda: failure(lambda: client.messages.create(model="no-such-model", max_tokens=4, messages=HELLO)),
)
# `temperature` is not part of API version 2026-10-21, which this SDK speaks, so it goes in extra_body.
check(
    "bad_request",
    lambda: failure(
        lambda: client.messages.create(
            model=MODEL, max_tokens=4, messages=HELLO, extra_body={"temperature": 0.5}
        )
    ),
)
check("async", lambda: asyncio.run(use_async()))
check("batches", batches)
print(json.dumps(out))
