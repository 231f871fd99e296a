"""LangChain (`langchain-anthropic`) and pydantic-ai (in the clients venv) against Missive.

Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY; prints one JSON object of observations and exits 0.
Each check reports its own exception, so one failure does not hide the others.
tests/test_clients_frameworks.py makes the assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from langchain_anthropic import ChatAnthropic
from pydantic import BaseModel, Field
from pydantic_ai import Agent, RunContext
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider

MODEL = "claude-sonnet-4-6"
BASE_URL = os.environ["ANTHROPIC_BASE_URL"]
API_KEY = os.environ["ANTHROPIC_API_KEY"]
HELLO = "Say hello in one short sentence."
ASK = "What is the weather in Paris?"
NAME_IT = "Paris is the capital of France. Name the city."


class GetWeather(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(description="The city, e.g. Paris")


class City(BaseModel):
    """A city and the country it is in."""

    name: str
    country: str


out: dict[str, Any] = {
    name: version(name) for name in ("anthropic", "langchain-anthropic", "pydantic-ai-slim")
}


def check(name: str, body: Callable[[], Any]) -> None:
    try:
        out[name] = body()
    except Exception as error:  # noqa: BLE001 - reported, the test decides
        out[name] = {"exception": f"{type(error).__name__}: {error}"}


# --- LangChain ------------------------------------------------------------------------------------

chat = ChatAnthropic(model=MODEL, base_url=BASE_URL, api_key=API_KEY, max_tokens=40, timeout=60)


def lc_invoke() -> dict[str, Any]:
    message = chat.invoke(HELLO)
    return {"text": message.text, "stop_reason": message.response_metadata.get("stop_reason")}


def lc_stream() -> dict[str, Any]:
    chunks = [chunk.text for chunk in chat.stream(HELLO)]
    return {"chunks": chunks}


def lc_reply(message: Any) -> dict[str, Any]:
    blocks = message.content if isinstance(message.content, list) else [message.content]  # a str is text
    return {
        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in message.tool_calls],
        "content_types": [block["type"] if isinstance(block, dict) else "text" for block in blocks],
        "stop_reason": message.response_metadata.get("stop_reason"),
    }


def lc_tools() -> dict[str, Any]:
    return lc_reply(chat.bind_tools([GetWeather], tool_choice="GetWeather").invoke(ASK))


def lc_structured() -> dict[str, Any]:
    result = chat.with_structured_output(City, include_raw=True).invoke(NAME_IT)
    city = result["parsed"]
    return {
        "class": type(city).__name__,
        "value": city.model_dump() if isinstance(city, BaseModel) else city,
        "parsing_error": repr(result["parsing_error"]) if result["parsing_error"] else None,
        "raw": lc_reply(result["raw"]),
    }


# --- pydantic-ai ----------------------------------------------------------------------------------

model = AnthropicModel(MODEL, provider=AnthropicProvider(base_url=BASE_URL, api_key=API_KEY))
SETTINGS: Any = {"max_tokens": 40, "timeout": 60}  # room for one whole tool call


def pai_run() -> dict[str, Any]:
    result = Agent(model, model_settings=SETTINGS).run_sync(HELLO)
    return {"output": result.output}


def pai_stream() -> dict[str, Any]:
    async def collect() -> list[str]:
        async with Agent(model, model_settings=SETTINGS).run_stream(HELLO) as result:
            return [delta async for delta in result.stream_text(delta=True, debounce_by=None)]

    return {"deltas": asyncio.run(collect())}


def pai_tool() -> dict[str, Any]:
    # Force the tool on the first request, forbid it afterwards so the run ends with text.
    def settings(ctx: RunContext[None]) -> Any:
        return {**SETTINGS, "tool_choice": ["get_weather"] if ctx.run_step <= 1 else "none"}

    agent = Agent(model, model_settings=settings)
    called: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        called.append(city)
        return f"It is sunny in {city}."

    result = agent.run_sync(ASK)
    return {"called": called, "responses": responses(result), "output": result.output}


def pai_structured() -> dict[str, Any]:
    result = Agent(model, output_type=City, model_settings=SETTINGS).run_sync(NAME_IT)
    return {
        "class": type(result.output).__name__,
        "value": result.output.model_dump(),
        "responses": responses(result),
    }


def responses(result: Any) -> list[dict[str, Any]]:
    """The model's responses in a run: why each ended, and its parts."""
    return [
        {
            "finish_reason": message.finish_reason,
            "parts": [
                {
                    "kind": part.part_kind,
                    "tool_name": getattr(part, "tool_name", None),
                    "args": getattr(part, "args", None),
                }
                for part in message.parts
            ],
        }
        for message in result.all_messages()
        if message.kind == "response"
    ]


check("lc_invoke", lc_invoke)
check("lc_stream", lc_stream)
check("lc_tools", lc_tools)
check("lc_structured", lc_structured)
check("pai_run", pai_run)
check("pai_stream", pai_stream)
check("pai_tool", pai_tool)
check("pai_structured", pai_structured)
print(json.dumps(out))
