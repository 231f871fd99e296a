"""Tool use and structured output through the official SDK, on the real model (spec §3.3-§3.6, §4, §6).

The default model is tiny, so these tests check protocol and validity, not judgement: every tool
input the server returns must validate against its tool's JSON schema (grammar-constrained
decoding), and structured output must parse and validate against its schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

MODEL = "claude-sonnet-4-6"
ASK = [{"role": "user", "content": "Please use the tool for this task: Paris, France."}]

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
        "required": ["city", "days"],
    },
    "enums_and_numbers": {
        "type": "object",
        "properties": {
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "threshold": {"type": "number"},
            "count": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["unit", "threshold", "count"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "trip": {
                "type": "object",
                "properties": {
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "stops": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                },
                "required": ["from", "to", "stops"],
            },
            "travellers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"],
                },
                "minItems": 1,
                "maxItems": 2,
            },
        },
        "required": ["trip", "travellers"],
    },
    "any_of": {
        "type": "object",
        "properties": {"where": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}, "required": ["lat", "lon"]}]}},
        "required": ["where"],
    },
}


def tool(name: str, schema: dict, **extra: Any) -> dict:
    return {"name": name, "description": f"The {name.replace('_', ' ')} tool.", "input_schema": schema, **extra}


def tool_uses(message: anthropic.types.Message) -> list:
    return [block for block in message.content if block.type == "tool_use"]


def answered(message: anthropic.types.Message, result: str, *after: dict) -> list[dict]:
    """The assistant turn that called tools, then a user turn with a result for each call (and `after`)."""
    results = [{"type": "tool_result", "tool_use_id": call.id, "content": result} for call in tool_uses(message)]
    return [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [*results, *after]},
    ]


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_forced_calls_always_validate(client: anthropic.Anthropic, name: str) -> None:
    for question in ASK[0]["content"], "Please call the tool with sensible values.":
        message = client.messages.create(
            model=MODEL,
            max_tokens=600,
            extra_body={"temperature": 0},
            tools=[tool(name, SCHEMAS[name], strict=True)],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            messages=[{"role": "user", "content": question}],
        )
        assert message.stop_reason == "tool_use", message
        calls = tool_uses(message)
        assert len(calls) == 1 and calls[0].name == name and calls[0].id.startswith("toolu_")
        jsonschema.validate(calls[0].input, SCHEMAS[name])


def test_parallel_calls_each_validate(client: anthropic.Anthropic) -> None:
    tools = [tool("flat", SCHEMAS["flat"]), tool("enums_and_numbers", SCHEMAS["enums_and_numbers"])]
    message = client.messages.create(
        model=MODEL, max_tokens=800, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any"},
        messages=ASK,
    )
    calls = tool_uses(message)
    assert 1 <= len(calls) <= 4 and message.stop_reason == "tool_use"
    for call in calls:
        jsonschema.validate(call.input, SCHEMAS[call.name])


def test_named_tool_choice_and_single_call(client: anthropic.Anthropic) -> None:
    tools = [tool("flat", SCHEMAS["flat"]), tool("nested", SCHEMAS["nested"])]
    for question in ASK[0]["content"], "Plan a trip from Oslo to Rome for two.":
        message = client.messages.create(
            model=MODEL,
            max_tokens=800,
            extra_body={"temperature": 0},
            tools=tools,
            tool_choice={"type": "tool", "name": "nested", "disable_parallel_tool_use": True},
            messages=[{"role": "user", "content": question}],
        )
        assert message.stop_reason == "tool_use", message
        calls = tool_uses(message)
        assert len(calls) == 1 and calls[0].name == "nested"
        jsonschema.validate(calls[0].input, SCHEMAS["nested"])


# Claude Code 2.1.332's Read input schema, descriptions stripped: the tool a coding agent forces most.
READ: dict[str, Any] = json.loads((Path(__file__).parent / "clients" / "claude_code_tools.json").read_text())["Read"]
READ_ASKS = [
    "Look at the file src/server/app.py and tell me what it does.",
    "The build is failing; find out why and fix it.",
    "Read the file notes.txt.",
]


def read_call(client: anthropic.Anthropic, question: str, temperature: float, choice: dict, **extra: Any) -> list:
    """The calls of a forced Read, which must finish: stop_reason tool_use, each input valid (draft 2020-12)."""
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        extra_body={"temperature": temperature},
        tools=[tool("Read", READ), *extra.get("more_tools", [])],
        tool_choice=choice,
        messages=[{"role": "user", "content": question}],
    )
    assert message.stop_reason == "tool_use", message
    calls = tool_uses(message)
    for call in calls:
        jsonschema.Draft202012Validator(READ if call.name == "Read" else SCHEMAS[call.name]).validate(call.input)
    return calls


def test_tool_choice_tool_gives_exactly_one_call(client: anthropic.Anthropic) -> None:
    """Forcing a tool yields one call of it and the turn ends, as on the Claude API: clients answer that
    call (an unanswered second one is a 400 on the next turn), and structured output reads only the first."""
    for question in READ_ASKS:
        calls = read_call(client, question, 0, {"type": "tool", "name": "Read"}, more_tools=[tool("flat", SCHEMAS["flat"])])
        assert [call.name for call in calls] == ["Read"]
    message = client.messages.create(
        model=MODEL, max_tokens=400, extra_body={"temperature": 0}, tools=[tool("flat", SCHEMAS["flat"])],
        tool_choice={"type": "tool", "name": "flat"}, messages=ASK,
    )  # fmt: skip
    assert message.stop_reason == "tool_use" and len(tool_uses(message)) == 1


def test_a_forced_call_with_claude_codes_read_schema_finishes(client: anthropic.Anthropic) -> None:
    """The default model used to loop inside a string (`"pages": "...127.0.0.1:127.0.0.1:...`) until
    max_tokens, or end its call at a `</tool_call>` written inside a string, leaving an input that does
    not parse. Forced calls must now end, valid, well within a modest max_tokens. Greedy output depends
    on the CPU's vector units: on one without AVX512, one of the three writes a long string that never
    repeats (no loop to cut, as at temperature 1 below) and runs out, so one of three may."""
    finished = 0
    for question in READ_ASKS:
        message = client.messages.create(
            model=MODEL, max_tokens=256, extra_body={"temperature": 0}, tools=[tool("Read", READ)],
            tool_choice={"type": "tool", "name": "Read"}, messages=[{"role": "user", "content": question}],
        )  # fmt: skip
        calls = tool_uses(message)
        assert len(calls) == 1 and message.stop_reason in ("tool_use", "max_tokens"), message
        if message.stop_reason == "tool_use":
            jsonschema.Draft202012Validator(READ).validate(calls[0].input)
            finished += 1
    assert finished >= len(READ_ASKS) - 1


def test_forced_read_calls_finish_at_temperature_1(client: anthropic.Anthropic) -> None:
    """At temperature 1 the model now and then writes a long string that never repeats (about one call
    in 15 here: no loop to cut), so this allows three of twelve to run out; before loop control and the
    one-call rule, none of them finished."""
    finished = 0
    for question in READ_ASKS * 4:
        message = client.messages.create(
            model=MODEL, max_tokens=256, extra_body={"temperature": 1}, tools=[tool("Read", READ)],
            tool_choice={"type": "tool", "name": "Read"}, messages=[{"role": "user", "content": question}],
        )  # fmt: skip
        calls = tool_uses(message)
        if message.stop_reason == "tool_use":
            assert len(calls) == 1
            jsonschema.Draft202012Validator(READ).validate(calls[0].input)
            finished += 1
    assert finished >= 9


def test_tool_choice_any_calls_read_and_finishes(client: anthropic.Anthropic) -> None:
    for question in READ_ASKS:
        assert len(read_call(client, question, 0, {"type": "any", "disable_parallel_tool_use": True})) == 1
        assert 1 <= len(read_call(client, question, 0, {"type": "any"})) <= 4


def test_parallel_calls_stay_possible_under_any_and_auto(client: anthropic.Anthropic) -> None:
    """Only `tool` and disable_parallel_tool_use limit the calls to one; the default model, asked for
    several things, makes several calls under any (and under auto, at most one when disabled)."""
    question = "Read the files a.txt, b.txt and c.txt."
    assert len(read_call(client, question, 0, {"type": "any"})) > 1
    for temperature in (0, 1, 1):
        message = client.messages.create(
            model=MODEL, max_tokens=256, extra_body={"temperature": temperature}, tools=[tool("Read", READ)],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            messages=[{"role": "user", "content": question}],
        )  # fmt: skip
        assert len(tool_uses(message)) <= 1


def test_tool_choice_none_never_calls(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=60, tools=[tool("flat", SCHEMAS["flat"])], tool_choice={"type": "none"}, messages=ASK
    )
    assert not tool_uses(message) and message.stop_reason in ("end_turn", "max_tokens")


def test_auto_answers_in_text_or_calls_validly(client: anthropic.Anthropic) -> None:
    for temperature in (0, 1, 1):
        message = client.messages.create(
            model=MODEL, max_tokens=200, extra_body={"temperature": temperature},
            tools=[tool("flat", SCHEMAS["flat"])], messages=ASK,
        )
        if message.stop_reason == "max_tokens":
            continue  # a call cut short is not complete, here as on the Claude API
        assert (message.stop_reason == "tool_use") == bool(tool_uses(message))
        for call in tool_uses(message):
            jsonschema.validate(call.input, SCHEMAS["flat"])


def test_streamed_tool_input_concatenates_to_the_final_input(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 600,
        "stream": True,
        "temperature": 0,
        "tools": [tool("nested", SCHEMAS["nested"])],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [{"role": "user", "content": "Hi! Let me tell you about my trip."}, *ASK],
    }
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    open_index = None
    partial: dict[int, list[str]] = {}
    starts = []
    for event in events:
        if event["type"] == "content_block_start":
            assert open_index is None, "blocks must not interleave"
            open_index = event["index"]
            starts.append(event)
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
            if event["delta"]["type"] == "input_json_delta":
                partial.setdefault(event["index"], []).append(event["delta"]["partial_json"])
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
    tool_starts = [s for s in starts if s["content_block"]["type"] == "tool_use"]
    assert tool_starts
    for start in tool_starts:
        shell = start["content_block"]
        assert shell["input"] == {} and shell["id"].startswith("toolu_") and shell["name"] == "nested"
        jsonschema.validate(json.loads("".join(partial[start["index"]])), SCHEMAS["nested"])
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    body["stream"] = False
    assert [b for b in http.post("/v1/messages", json=body).json()["content"] if b["type"] == "tool_use"]


def test_sdk_stream_accumulates_tool_input(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=600,
        extra_body={"temperature": 0},
        tools=[tool("flat", SCHEMAS["flat"])],
        tool_choice={"type": "any"},
        messages=ASK,
    ) as stream:
        final = stream.get_final_message()
    for call in tool_uses(final):
        jsonschema.validate(call.input, SCHEMAS["flat"])


def test_a_tool_loop_ends_in_text(client: anthropic.Anthropic) -> None:
    tools = [tool("flat", SCHEMAS["flat"])]
    messages: list[dict] = list(ASK)
    first = client.messages.create(
        model=MODEL, max_tokens=600, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any"},
        messages=messages,
    )
    assert first.stop_reason == "tool_use"
    messages += answered(first, "Sunny, 21 degrees.")
    final = client.messages.create(model=MODEL, max_tokens=60, tools=tools, tool_choice={"type": "none"}, messages=messages)
    assert final.content and final.content[0].type == "text" and final.stop_reason in ("end_turn", "max_tokens")
    # the history (tool use and result) is part of the prompt, and counting agrees with creating
    counted = client.messages.count_tokens(model=MODEL, tools=tools, tool_choice={"type": "none"}, messages=messages)
    assert counted.input_tokens == final.usage.input_tokens


def test_count_tokens_includes_the_tools(client: anthropic.Anthropic) -> None:
    bare = client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens
    tools = [tool("nested", SCHEMAS["nested"])]
    with_tools = client.messages.count_tokens(model=MODEL, tools=tools, messages=ASK).input_tokens
    assert with_tools > bare + 50
    created = client.messages.create(model=MODEL, max_tokens=1, tools=tools, tool_choice={"type": "none"}, messages=ASK)
    assert created.usage.input_tokens == client.messages.count_tokens(
        model=MODEL, tools=tools, tool_choice={"type": "none"}, messages=ASK
    ).input_tokens


@pytest.mark.parametrize(
    "schema",
    [
        SCHEMAS["nested"],
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 4}},
            "required": ["name", "tags"],
        },
    ],
)
def test_structured_output_validates(client: anthropic.Anthropic, schema: dict) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=600,
        messages=[{"role": "user", "content": "Describe a trip as JSON."}],
        extra_body={"temperature": 0, "output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), schema)


def test_anthropic_defined_client_tools(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=600,
        extra_body={"temperature": 0},
        tools=[{"type": "bash_20250124", "name": "bash"}, {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}],
        tool_choice={"type": "tool", "name": "str_replace_based_edit_tool"},
        messages=[{"role": "user", "content": "Show me the file notes.txt"}],
    )
    call = tool_uses(message)[0]
    assert call.name == "str_replace_based_edit_tool"
    assert call.input["command"] in ("view", "create", "str_replace", "insert", "undo_edit") and "path" in call.input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tools": [tool("a", SCHEMAS["flat"]), tool("a", SCHEMAS["flat"])]}, "tools: Tool names must be unique."),
        ({"tool_choice": {"type": "any"}}, "tool_choice: tool_choice.type `any` requires `tools`"),
        (
            {"tools": [tool("a", SCHEMAS["flat"])], "tool_choice": {"type": "tool", "name": "b"}},
            "tool_choice.name: tool `b` is not one of the tools in `tools`",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0: server tool web_search_20250305 is not available on this server"),
        ({"tools": [{"name": "x", "input_schema": {"type": "array"}}]}, "tools.0.custom.input_schema.type: Input should be 'object'"),
    ],
)
def test_tool_definition_errors(http: httpx.Client, extra: dict, message: str) -> None:
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": ASK, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == message
