"""LangChain and pydantic-ai, as installed from PyPI, against a real Missive (tests/clients/frameworks.py).

Both sit on the Python SDK 2.x. The script runs once through a recording proxy; the tests read what
each framework returned and what it really sent. Forced tools are where Missive constrains the
tiny model's output, so every tool input and every structured output must validate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from clients import harness
from clients.checks import STOP_REASONS, Observed, credentials, observe
from clients.recorder import Exchange
from conftest import Server

# The script's own limit bounds the wait; the first test also waits for the session's server to start.
pytestmark = pytest.mark.timeout(480)


@pytest.fixture(scope="module")
def seen(clients_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("frameworks")
    args = [str(harness.PYTHON), str(harness.SCRIPTS / "frameworks.py")]
    yield observe(clients_server.base_url, clients_server.api_key, workdir, args, timeout=300)


def check(seen: Observed, name: str) -> Any:
    result = seen.out[name]
    assert "exception" not in result, result
    return result


def sent_by(seen: Observed, framework: str) -> list[Exchange]:
    return [e for e in seen.requests("/v1/messages") if e.headers["user-agent"].startswith(f"{framework}/")]


def forcing(seen: Observed, framework: str, tool: str) -> Exchange:
    """The one request of `framework` that offered `tool` alone and forced a tool call."""
    (exchange,) = [
        e
        for e in sent_by(seen, framework)
        if [t["name"] for t in e.body.get("tools", [])] == [tool]
        and e.body.get("tool_choice", {}).get("type") in ("any", "tool")
    ]
    return exchange


def schema(exchange: Exchange) -> dict[str, Any]:
    return exchange.body["tools"][0]["input_schema"]


def test_every_request_succeeded_as_sent(seen: Observed, clients_server: Server) -> None:
    assert seen.foreign == []
    assert [(e.method, e.path, e.status) for e in seen.refused()] == []
    assert {(e.method, e.path) for e in seen.exchanges} == {("POST", "/v1/messages")}
    assert credentials(seen.exchanges) == {("2026-10-21", f"Bearer {clients_server.api_key}", None)}
    versions = {
        "langchain-anthropic": seen.out["langchain-anthropic"],
        "pydantic-ai": seen.out["pydantic-ai-slim"],
    }
    assert {e.headers["user-agent"] for e in seen.exchanges} == {
        f"{name}/{version}" for name, version in versions.items()
    }
    assert {e.headers["x-stainless-package-version"] for e in seen.exchanges} == {seen.out["anthropic"]}
    assert all(e.betas == [] for e in seen.exchanges)
    assert {e.headers.get("x-stainless-retry-count") for e in seen.exchanges} == {"0"}
    assert all(not {"temperature", "top_p", "top_k"} & set(e.body) for e in seen.exchanges)
    assert len(sent_by(seen, "langchain-anthropic")) == 4  # invoke, stream, tools, structured output


def test_langchain_invoke_and_stream(seen: Observed) -> None:
    invoked, streamed = check(seen, "lc_invoke"), check(seen, "lc_stream")
    assert invoked["text"].strip() and invoked["stop_reason"] in STOP_REASONS - {"tool_use"}
    assert len([chunk for chunk in streamed["chunks"] if chunk]) > 1
    assert "".join(streamed["chunks"]) == invoked["text"]  # temperature 0: repeatable
    streams = [e.body.get("stream") for e in sent_by(seen, "langchain-anthropic")[:2]]
    assert streams == [None, True]


def test_langchain_bind_tools_forces_one_valid_call(seen: Observed) -> None:
    reply = check(seen, "lc_tools")
    request = forcing(seen, "langchain-anthropic", "GetWeather")
    assert request.body["tool_choice"] == {"type": "tool", "name": "GetWeather"}
    (call,) = reply["tool_calls"]  # tool_choice `tool`: exactly one call, and it ends the turn
    assert call["name"] == "GetWeather"
    jsonschema.validate(call["args"], schema(request))
    assert reply["content_types"] == ["tool_use"] and reply["stop_reason"] == "tool_use"


def test_langchain_structured_output_validates(seen: Observed) -> None:
    result = check(seen, "lc_structured")
    request = forcing(seen, "langchain-anthropic", "City")
    assert request.body["tool_choice"] == {"type": "tool", "name": "City"}
    assert result["class"] == "City" and result["parsing_error"] is None
    assert [call["name"] for call in result["raw"]["tool_calls"]] == ["City"]
    assert result["raw"]["content_types"] == ["tool_use"] and result["raw"]["stop_reason"] == "tool_use"
    jsonschema.validate(result["value"], schema(request))
    assert all(value.strip() for value in result["value"].values())


def test_pydantic_ai_run_and_stream(seen: Observed) -> None:
    ran, streamed = check(seen, "pai_run"), check(seen, "pai_stream")
    assert isinstance(ran["output"], str) and ran["output"].strip()
    assert len(streamed["deltas"]) > 1 and "".join(streamed["deltas"]) == ran["output"]
    streams = [e.body.get("stream") for e in sent_by(seen, "pydantic-ai")[:2]]
    assert streams == [False, True]


def test_pydantic_ai_calls_the_forced_tool_and_sends_back_its_result(seen: Observed) -> None:
    result = check(seen, "pai_tool")
    request = forcing(seen, "pydantic-ai", "get_weather")
    calls = [part for part in result["responses"][0]["parts"] if part["kind"] == "tool-call"]
    assert calls and all(call["tool_name"] == "get_weather" for call in calls)
    jsonschema.validate(calls[0]["args"], schema(request))
    assert result["called"] and all(isinstance(city, str) and city for city in result["called"])
    # The next request carries a result for every call of the forced response, and forbids tools.
    after = sent_by(seen, "pydantic-ai")[sent_by(seen, "pydantic-ai").index(request) + 1]
    uses = [b["id"] for b in after.body["messages"][1]["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for b in after.body["messages"][2]["content"] if b["type"] == "tool_result"]
    assert len(uses) == len(calls) and results == uses
    assert after.body["tool_choice"] == {"type": "none"}
    assert isinstance(result["output"], str) and result["output"].strip()


def test_pydantic_ai_structured_output_validates(seen: Observed) -> None:
    result = check(seen, "pai_structured")
    request = forcing(seen, "pydantic-ai", "final_result")
    assert request.body["tool_choice"] == {"type": "any"}  # pydantic-ai's output tool
    assert result["class"] == "City"
    jsonschema.validate(result["value"], schema(request))
    assert all(value.strip() for value in result["value"].values())
    (response,) = result["responses"]  # valid at the first try, and the call ended the turn
    assert [part["kind"] for part in response["parts"]] == ["tool-call"]
    assert response["finish_reason"] == "tool_call"


@pytest.mark.xfail(
    reason="Under tool_choice any, parallel calls stay allowed (as on the Claude API), and the small model "
    "goes on from its get_weather call into further calls until max_tokens 40 cuts it (finish_reason "
    "length). The calls are valid; ending the turn sooner under `any` is a model-quality question.",
)
def test_pydantic_ai_forced_tool_ends_the_turn_with_valid_calls(seen: Observed) -> None:
    first = check(seen, "pai_tool")["responses"][0]
    request = forcing(seen, "pydantic-ai", "get_weather")
    assert {part["kind"] for part in first["parts"]} == {"tool-call"}
    for part in first["parts"]:
        jsonschema.validate(part["args"], schema(request))
    assert first["finish_reason"] == "tool_call"
