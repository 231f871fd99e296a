"""Tools through a model's own chat template (Hermes-style calls), on the real model.

The test model `smollm2-hermes` is the default GGUF with tests/templates/hermes.jinja, a ChatML
template that takes `tools` and shows `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, so
Missive detects the Hermes format: tools go to the template, past calls become `tool_calls`, results
become `tool` messages, and the model's calls are constrained and parsed in that syntax.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest
from test_constrained_output import split_calls
from test_tools import ASK, SCHEMAS, answered, tool, tool_uses

from missive.engines.local.grammar import tool_calls
from missive.engines.prompt import HERMES_CALLS, MISSIVE_CALLS, ToolSpec, template_call_syntax

MODEL = "smollm2-hermes"


def test_the_template_decides_the_call_syntax() -> None:
    assert template_call_syntax("{% for t in tools %}{{ t | tojson }}{% endfor %} <tool_call>") is HERMES_CALLS
    assert template_call_syntax("{{ messages }} <tool_call>") is MISSIVE_CALLS  # shows calls, takes no tools
    assert template_call_syntax("{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}") is MISSIVE_CALLS


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_hermes_calls_split_out_of_streamed_text(size: int) -> None:
    output = 'Let me check.<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    output += '\n<tool_call>\n{"name": "time", "arguments": {}}\n</tool_call>'
    text, names, inputs = split_calls(HERMES_CALLS, output, size)
    assert text == "Let me check."
    assert names == ["weather", "time"] and inputs == [{"city": "Paris"}, {}]


def test_the_hermes_grammar_spells_the_template_syntax() -> None:
    grammar = tool_calls([ToolSpec("weather", "", SCHEMAS["flat"])], forced=False, single=True, syntax=HERMES_CALLS)
    assert grammar.lazy_trigger == "<tool_call>"
    assert json.dumps('<tool_call>\n{"name": "weather", "arguments": ') in grammar.gbnf


@pytest.mark.parametrize("name", ["flat", "enums_and_numbers", "nested"])
def test_forced_calls_validate(client: anthropic.Anthropic, name: str) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=600,
        extra_body={"temperature": 0},
        tools=[tool(name, SCHEMAS[name])],
        tool_choice={"type": "tool", "name": name, "disable_parallel_tool_use": True},
        messages=ASK,
    )
    calls = tool_uses(message)
    assert message.stop_reason == "tool_use" and len(calls) == 1 and calls[0].name == name
    assert calls[0].id.startswith("toolu_")
    jsonschema.validate(calls[0].input, SCHEMAS[name])


def test_streamed_input_concatenates_to_the_final_input(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 600,
        "temperature": 0,
        "stream": True,
        "tools": [tool("nested", SCHEMAS["nested"])],
        "tool_choice": {"type": "any"},
        "messages": ASK,
    }
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    partial: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            partial[event["index"]] = partial.get(event["index"], "") + event["delta"]["partial_json"]
    starts = [e for e in events if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]
    assert starts and all(s["content_block"]["name"] == "nested" for s in starts)
    for start in starts:
        jsonschema.validate(json.loads(partial[start["index"]]), SCHEMAS["nested"])
    assert next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"


def test_a_tool_loop_through_the_template(client: anthropic.Anthropic) -> None:
    tools = [tool("flat", SCHEMAS["flat"])]
    messages: list[dict] = list(ASK)
    first = client.messages.create(
        model=MODEL, max_tokens=600, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any"},
        messages=messages,
    )
    assert first.stop_reason == "tool_use"
    messages += answered(first, "Sunny, 21 degrees.", {"type": "text", "text": "Thanks. Summarise it in one sentence."})
    final = client.messages.create(model=MODEL, max_tokens=40, tools=tools, messages=messages)
    assert final.content and final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    for call in tool_uses(final):
        jsonschema.validate(call.input, SCHEMAS["flat"])
    counted = client.messages.count_tokens(model=MODEL, tools=tools, messages=messages)
    assert counted.input_tokens == final.usage.input_tokens
    # the results reach the model: a different result is a different prompt
    messages[-1]["content"][0]["content"] = "Rain, 9 degrees, and wind from the north."
    assert client.messages.count_tokens(model=MODEL, tools=tools, messages=messages).input_tokens > counted.input_tokens


def test_tools_reach_the_template(client: anthropic.Anthropic) -> None:
    plain = client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens
    with_tool = client.messages.count_tokens(model=MODEL, tools=[tool("flat", SCHEMAS["flat"])], messages=ASK)
    assert with_tool.input_tokens > plain + 30  # the template lists the tool's JSON signature


def test_breakpoints_on_tools_and_results_still_cache(client: anthropic.Anthropic) -> None:
    """Blocks the template renders as JSON carry no mark; their breakpoint moves to the next block boundary."""
    long_system = "You answer questions about the weather, carefully and briefly. " * 12
    tools = [tool("flat", SCHEMAS["flat"], cache_control={"type": "ephemeral"})]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "flat",
                                           "input": {"city": "Paris", "days": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny.",
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    first = client.messages.create(model=MODEL, max_tokens=5, system=long_system, tools=tools, messages=messages)
    assert first.usage.cache_creation_input_tokens > 0
    again = client.messages.create(model=MODEL, max_tokens=5, system=long_system, tools=tools, messages=messages)
    assert again.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert again.usage.input_tokens == first.usage.input_tokens
