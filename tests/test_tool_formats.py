"""Tool-call formats of model families: Qwen3-Coder / Qwen3.5 and GLM-4.5 (tagged, untyped values), Llama 3.x
(bare JSON), Mistral (`[TOOL_CALLS]`, both generations) and gpt-oss (harmony channels): detection, rendering,
parsing, grammars, coercion.

No such model can be downloaded here, so each family has a small template in tests/templates/ shaped as
its own template renders, and the default GGUF runs under it (`smollm2-qwen3-coder`, `smollm2-glm45`,
`smollm2-llama3`, `smollm2-mistral-v3`, `smollm2-mistral-v11`, `smollm2-harmony` in conftest.py). The default
model's vocabulary has none of Mistral's or harmony's control tokens, so under those templates the tags are
plain text, as the parsers also read them. The parsers are tested on every chunk split, on malformed output, and on the failure cases
reported upstream: nested quotes, long multi-line values, several calls in one turn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest
from test_tools import ASK, SCHEMAS, answered, tool, tool_uses

from missive.engines.base import Generation
from missive.engines.local.grammar import tool_calls
from missive.engines.local.model import chat_environment
from missive.engines.local.tagged_calls import TaggedCallParser, coerce, parser_for
from missive.engines.local.toolcalls import CallEnd, CallInput, CallStart, Text
from missive.engines.prompt import (
    CALL_SYNTAXES,
    GLM45_CALLS,
    HARMONY_CALLS,
    HERMES_CALLS,
    LLAMA3_CALLS,
    MISSIVE_CALLS,
    MISTRAL_V3_CALLS,
    MISTRAL_V11_CALLS,
    QWEN3_CODER_CALLS,
    TaggedSyntax,
    ToolFormat,
    ToolSpec,
    template_call_syntax,
    to_chat,
)
from missive.settings import ModelSettings
from missive.wire import requests as rq
from missive.wire.models import ModelCard

TEMPLATES = Path(__file__).parent / "templates"
FAMILIES: dict[str, ToolFormat] = {
    "smollm2-qwen3-coder": QWEN3_CODER_CALLS, "smollm2-glm45": GLM45_CALLS, "smollm2-llama3": LLAMA3_CALLS,
    "smollm2-mistral-v3": MISTRAL_V3_CALLS, "smollm2-mistral-v11": MISTRAL_V11_CALLS, "smollm2-harmony": HARMONY_CALLS,
}
# How each family's template shows a tool result.
RESULTS = {"qwen3_coder": "<tool_response>", "glm45": "<tool_response>", "llama3_json": "ipython",
           "mistral_v3": "[TOOL_RESULTS]", "mistral_v11": "[TOOL_RESULTS]", "harmony": "to=assistant<|channel|>"}
TAGGED = [QWEN3_CODER_CALLS, GLM45_CALLS]
WRITE = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string"},
        "content": {"type": "string"},
        "line": {"type": "integer"},
        "replace_all": {"type": "boolean"},
        "ratio": {"type": "number"},
        "options": {"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]}}},
        "paths": {"type": "array", "items": {"type": "string"}},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    },
    "required": ["file_path", "content"],
}
TOOLS = [ToolSpec("Write", "Write a file.", WRITE), ToolSpec("Bash", "Run a command.", SCHEMAS["flat"])]
# A long multi-line file with nested quotes, escapes and tags that look like the format's own.
SOURCE = "\n".join(
    [
        'def main() -> None:',
        '    print("say \\"hi\\"", \'it\\\'s\')',
        '    s = "<tool_call>{\\"name\\": 1}</tool_call> <arg_key>x</arg_key> <parameter=y> </function>"',
        '    path = "C:\\\\temp\\\\new"  # tabs\tand unicode: é ✓',
        *(f"    line_{i} = {i!r}  # {'x' * (i % 40)}" for i in range(120)),
        "",
    ]
)


def split(syntax: ToolFormat, output: str, size: int) -> tuple[str, list[str], list[dict]]:
    """Feed `output` `size` characters at a time: (the text, the call names, the inputs as their deltas join)."""
    parser = parser_for(syntax, TOOLS)
    pieces = [p for at in range(0, len(output), size) for p in parser.feed(output[at : at + size])] + parser.flush()
    inputs, current = [], ""
    for piece in pieces:
        if isinstance(piece, CallInput):
            current += piece.json
        elif isinstance(piece, CallEnd):
            inputs.append(json.loads(current))
            current = ""
    assert current == ""
    text = "".join(p.text for p in pieces if isinstance(p, Text))
    return text, [p.name for p in pieces if isinstance(p, CallStart)], inputs


# --- detection --------------------------------------------------------------------------------------


def test_the_template_decides_the_format() -> None:
    assert template_call_syntax((TEMPLATES / "qwen3_coder.jinja").read_text()) is QWEN3_CODER_CALLS
    assert template_call_syntax((TEMPLATES / "glm45.jinja").read_text()) is GLM45_CALLS
    assert template_call_syntax((TEMPLATES / "hermes.jinja").read_text()) is HERMES_CALLS
    assert template_call_syntax((TEMPLATES / "llama3.jinja").read_text()) is LLAMA3_CALLS
    assert template_call_syntax((TEMPLATES / "mistral_v3.jinja").read_text()) is MISTRAL_V3_CALLS
    assert template_call_syntax((TEMPLATES / "mistral_v11.jinja").read_text()) is MISTRAL_V11_CALLS
    assert template_call_syntax((TEMPLATES / "harmony.jinja").read_text()) is HARMONY_CALLS
    assert template_call_syntax("{{ messages }} <function=x> <parameter=y>") is MISSIVE_CALLS  # takes no tools


def test_every_tool_format_setting_names_a_syntax() -> None:
    choices = ModelSettings.model_fields["tool_format"].annotation.__args__
    assert set(choices) == {"auto", *CALL_SYNTAXES}
    assert ModelSettings(id="x", tool_format="glm45").tool_format == "glm45"


@pytest.mark.parametrize(("model", "syntax"), list(FAMILIES.items()))
def test_the_format_is_logged_at_load(server, model: str, syntax: ToolFormat) -> None:
    server.wait_for_log(f"model {model}: tools reach it in the {syntax.name} format")


# --- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [*TAGGED, LLAMA3_CALLS])
def test_calls_split_out_on_every_chunk_split(syntax: ToolFormat) -> None:
    write = {
        "file_path": "src/a.py", "content": SOURCE, "line": 12, "replace_all": True, "ratio": 0.5,
        "options": {"mode": "fast"}, "paths": ["a", "b \"c\""], "maybe": None,
    }  # fmt: skip
    bash = {"city": 'He said "no", then \\ "yes"', "days": 3}
    output = "Let me write it." + syntax.text("Write", write) + "\n" + syntax.text("Bash", bash) + "\n"
    for size in [*range(1, 24), 50, 333, len(output)]:
        assert split(syntax, output, size) == ("Let me write it.", ["Write", "Bash"], [write, bash]), size


@pytest.mark.parametrize("syntax", TAGGED)
def test_string_values_stream_as_they_come(syntax: TaggedSyntax) -> None:
    parser = TaggedCallParser(syntax, TOOLS)
    output = syntax.text("Write", {"file_path": "a", "content": "first line\nsecond line\n" * 20})
    cut = output.index("second line") + 20  # in the middle of the long value
    streamed = "".join(p.json for p in parser.feed(output[:cut]) if isinstance(p, CallInput))
    assert streamed.startswith('{"file_path": "a", "content": "first line\\nsecond line')
    rest = "".join(p.json for p in parser.feed(output[cut:]) + parser.flush() if isinstance(p, CallInput))
    assert json.loads(streamed + rest)["content"] == "first line\nsecond line\n" * 20


def test_qwen_writes_values_between_newlines_which_are_not_part_of_them() -> None:
    output = "<tool_call>\n<function=Write>\n<parameter=file_path>\n/tmp/x\n</parameter>\n<parameter=content>\n\n" \
             "two blank lines around\n\n\n</parameter>\n</function>\n</tool_call>"
    assert split(QWEN3_CODER_CALLS, output, 1)[2] == [{"file_path": "/tmp/x", "content": "\ntwo blank lines around\n\n"}]


@pytest.mark.parametrize(
    ("raw", "schema", "value"),
    [
        ("5", {"type": "integer"}, 5), (" -12 ", {"type": "integer"}, -12), ("5.0", {"type": "integer"}, 5),
        ("2.5", {"type": "number"}, 2.5), ("True", {"type": "boolean"}, True), ("false", {"type": "boolean"}, False),
        ("null", {"type": ["integer", "null"]}, None), ("None", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
        ('{"a": [1, "x"]}', {"type": "object"}, {"a": [1, "x"]}), ("{'a': True}", {"type": "object"}, {"a": True}),
        ('["x", 2]', {"type": "array"}, ["x", 2]), ("007", {"type": "string"}, "007"), ("true", {}, "true"),
        ("not a number", {"type": "integer"}, "not a number"), ("{'a': (1,)}", {"type": "object"}, "{'a': (1,)}"),
        ('"quoted"', {"anyOf": [{"type": "string"}, {"type": "object"}]}, "quoted"),  # JSON, as the grammar writes
        ("3", {"$ref": "#/$defs/n"}, 3), ("nan", {"type": "number"}, "nan"),
    ],
)  # fmt: skip
def test_untyped_values_are_read_by_the_schema(raw: str, schema: dict, value: object) -> None:
    root = {"$defs": {"n": {"type": "integer"}}}
    assert coerce(raw, {**schema}, root) == value and type(coerce(raw, schema, root)) is type(value)


def test_coerced_values_go_into_the_streamed_input() -> None:
    output = "<tool_call>\n<function=Write>\n<parameter=line>\n7\n</parameter>\n<parameter=replace_all>\nTrue\n" \
             "</parameter>\n<parameter=options>\n{'mode': 'slow'}\n</parameter>\n<parameter=extra>\n42\n</parameter>\n" \
             "</function>\n</tool_call>"
    assert split(QWEN3_CODER_CALLS, output, 2)[2] == [{"line": 7, "replace_all": True, "options": {"mode": "slow"},
                                                       "extra": "42"}]  # not in the schema: a string


@pytest.mark.parametrize("size", [1, 2, 5, 100])
@pytest.mark.parametrize(
    ("syntax", "output", "text", "inputs"),
    [
        # not a call after all: the text is kept
        (QWEN3_CODER_CALLS, "Use <tool_call> tags, like <function=this one> says.", None, []),
        (GLM45_CALLS, 'Hermes would write <tool_call>{"name": "x"}</tool_call>.', None, []),
        (GLM45_CALLS, "A <tool_call> with nothing after", None, []),
        (QWEN3_CODER_CALLS, "<tool_call>\n<function=Wri", None, []),
        # cut short (max_tokens): the input is closed, valid JSON
        (QWEN3_CODER_CALLS, "<tool_call>\n<function=Write>\n<parameter=content>\nhalf a fi", "",
         [{"content": "half a fi"}]),
        (QWEN3_CODER_CALLS, "<tool_call>\n<function=Write>\n<parameter=line>\n1", "", [{"line": 1}]),
        (GLM45_CALLS, "<tool_call>Write\n<arg_key>content</arg_key>\n<arg_value>x</arg_v", "", [{"content": "x</arg_v"}]),
        (GLM45_CALLS, "<tool_call>Write\n<arg_key>conte", "", [{}]),
        (GLM45_CALLS, "<tool_call>Write\n<arg_key>content</arg_key>", "", [{"content": ""}]),
        # tags that go wrong inside a call: the call ends there, the rest is text
        (QWEN3_CODER_CALLS, "<tool_call>\n<function=Write>\n<parameter=file_path>\na\n</parameter>\noops</tool_call>",
         "\noops</tool_call>", [{"file_path": "a"}]),
        (GLM45_CALLS, "<tool_call>Write\n<arg_key>file_path</arg_key>\nno value tag", "\nno value tag",
         [{"file_path": ""}]),
        # Qwen3-Coder sometimes leaves out <tool_call>, or the closing tags
        (QWEN3_CODER_CALLS, "<function=Bash>\n<parameter=days>\n2\n</parameter>\n</function>", "", [{"days": 2}]),
        (QWEN3_CODER_CALLS, "<tool_call><function=Bash><parameter=days>2</parameter></function></tool_call>", "",
         [{"days": 2}]),
        (GLM45_CALLS, "<tool_call>Bash</tool_call>", "", [{}]),
    ],
)  # fmt: skip
def test_malformed_output_keeps_its_text_and_valid_json(
    syntax: TaggedSyntax, output: str, text: str | None, inputs: list[dict], size: int
) -> None:
    got_text, _, got_inputs = split(syntax, output, size)
    assert got_text == (output if text is None else text) and got_inputs == inputs


# --- rendering --------------------------------------------------------------------------------------


def _render(template: str, generation: Generation, syntax: ToolFormat) -> str:
    chat = to_chat(generation, syntax)
    messages = [turn.message() for turn in chat.turns]
    return chat_environment().from_string(template).render(
        messages=messages, tools=chat.tools, add_generation_prompt=True, bos_token="", eos_token=""
    )


def _history(model: str, *calls: dict) -> Generation:
    uses = [{"type": "tool_use", "id": f"toolu_{i}", "name": "Write", "input": call} for i, call in enumerate(calls)]
    results = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "Written."} for i in range(len(calls))]
    body = {
        "model": model, "max_tokens": 10, "tools": [tool("Write", WRITE)],
        "messages": [
            {"role": "user", "content": "Write it."},
            {"role": "assistant", "content": [{"type": "text", "text": "Writing."}, *uses]},
            {"role": "user", "content": results},
        ],
    }  # fmt: skip
    params = rq.MessageCreateParams.model_validate_json(json.dumps(body))
    return Generation(ModelCard(model, model, 2048, 100), params, params.messages)


@pytest.mark.parametrize(("model", "syntax"), list(FAMILIES.items()))
def test_history_round_trips_through_the_template(model: str, syntax: ToolFormat) -> None:
    """Calls in history are rendered by the template as the model writes them: parsing the prompt gives them back
    (and nothing else of it, such as the format's own examples, reads as a call)."""
    write = {"file_path": "a.py", "content": SOURCE, "line": 3, "options": {"mode": "fast"}}
    other = {"file_path": "b.py", "content": 'print("b")'}
    template = (TEMPLATES / f"{syntax.name.removesuffix('_json')}.jinja").read_text()
    rendered = _render(template, _history(model, write, other), syntax)
    assert rendered.count("Written.") == 2 and RESULTS[syntax.name] in rendered
    _, names, inputs = split(syntax, rendered, 7)
    assert names == ["Write", "Write"] and inputs == [write, other]
    if syntax is LLAMA3_CALLS:  # one call per assistant turn, as Llama 3's template demands
        assert rendered.count("<|start_header_id|>assistant") == 3
    if syntax is HARMONY_CALLS:  # one call per message, each result right after its call
        assert rendered.count("<|call|><|start|>functions.Write to=assistant") == 2
    if syntax in (MISTRAL_V3_CALLS, MISTRAL_V11_CALLS) and "call_id" in rendered:  # ids of 9 letters and digits
        ids = re.findall(r'"(?:call_)?id": "(\w+)"', rendered)
        assert len(ids) == 4 and all(len(i) == 9 for i in ids) and ids[:2] == ids[2:]


# --- grammars ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", TAGGED)
def test_the_grammar_spells_the_format(syntax: TaggedSyntax) -> None:
    grammar = tool_calls(TOOLS, forced=False, single=True, syntax=syntax)
    assert grammar.lazy_trigger == "<tool_call>" and not grammar.guard
    assert json.dumps(syntax.open + "Write" + syntax.name_end) in grammar.gbnf
    assert json.dumps(syntax.key_open + "file_path" + syntax.key_end) in grammar.gbnf
    assert '"True" | "False"' in grammar.gbnf  # booleans as the templates write them, too
    forced = tool_calls([ToolSpec("Any", "", {"type": "object"})], forced=True, single=False, syntax=syntax)
    assert forced.lazy_trigger is None and "raw-key" in forced.gbnf


def test_llama3_writes_one_call_a_turn() -> None:
    grammar = tool_calls(TOOLS, forced=False, single=True, syntax=LLAMA3_CALLS)
    assert grammar.lazy_trigger == '{"name": "' and grammar.guard
    assert "root ::= call\n" in grammar.gbnf and json.dumps('{"name": "Write", "parameters": ') in grammar.gbnf
    text, names, inputs = split(LLAMA3_CALLS, 'No call: {"name": "x" is not one', 3)  # text kept to the end
    assert text == 'No call: {"name": "x" is not one' and names == [] and inputs == []


# --- on the real model ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.parametrize("name", ["flat", "enums_and_numbers", "nested"])
def test_forced_calls_validate(client: anthropic.Anthropic, model: str, name: str) -> None:
    message = client.messages.create(
        model=model,
        max_tokens=600,
        extra_body={"temperature": 0},
        tools=[tool(name, SCHEMAS[name])],
        tool_choice={"type": "tool", "name": name},
        messages=ASK,
    )
    calls = tool_uses(message)
    assert message.stop_reason == "tool_use" and len(calls) == 1 and calls[0].name == name, message
    assert calls[0].id.startswith("toolu_")
    jsonschema.validate(calls[0].input, SCHEMAS[name])


@pytest.mark.parametrize("model", list(FAMILIES))
def test_streamed_input_joins_into_the_final_input(http: httpx.Client, model: str) -> None:
    body = {
        "model": model, "max_tokens": 600, "temperature": 0, "stream": True,
        "tools": [tool("flat", SCHEMAS["flat"]), tool("enums_and_numbers", SCHEMAS["enums_and_numbers"])],
        "tool_choice": {"type": "any"}, "messages": ASK,
    }  # fmt: skip
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    partial: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            partial[event["index"]] = partial.get(event["index"], "") + event["delta"]["partial_json"]
    starts = [e for e in events if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]
    assert starts
    for start in starts:
        jsonschema.validate(json.loads(partial[start["index"]]), SCHEMAS[start["content_block"]["name"]])
    assert next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"
    # the same request, not streamed: the same inputs
    body["stream"] = False
    message = http.post("/v1/messages", json=body).json()
    assert [b["input"] for b in message["content"] if b["type"] == "tool_use"] == [
        json.loads(partial[s["index"]]) for s in starts
    ]


@pytest.mark.parametrize("model", list(FAMILIES))
def test_a_tool_loop_through_the_template(client: anthropic.Anthropic, model: str) -> None:
    tools = [tool("flat", SCHEMAS["flat"])]
    messages: list[dict] = list(ASK)
    first = client.messages.create(
        model=model, max_tokens=600, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any"},
        messages=messages,
    )
    assert first.stop_reason == "tool_use"
    messages += answered(first, "Sunny, 21 degrees.", {"type": "text", "text": "Thanks. Summarise it in one sentence."})
    final = client.messages.create(
        model=model, max_tokens=40, extra_body={"temperature": 0}, tools=tools, messages=messages
    )
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    # A model may end its turn at once (Mistral's have no generation prompt: under them the default model sometimes
    # does), which the Claude API gives as no content; and harmony's analysis channel is reasoning, not shown
    # without thinking, so 40 tokens of it are no content either.
    assert final.content or final.stop_reason == "end_turn" or FAMILIES[model] is HARMONY_CALLS
    for call in tool_uses(final):
        jsonschema.validate(call.input, SCHEMAS["flat"])
    counted = client.messages.count_tokens(model=model, tools=tools, messages=messages)
    assert counted.input_tokens == final.usage.input_tokens
    # the call and its result reach the model: a different input or result is a different prompt
    changed = json.loads(json.dumps(messages))
    changed[1]["content"][-1]["input"] = {"city": "Somewhere far away. " * 60, "days": 12}
    assert client.messages.count_tokens(model=model, tools=tools, messages=changed).input_tokens > counted.input_tokens
    messages[-1]["content"][0]["content"] = "Rain, 9 degrees, and wind from the north."
    assert client.messages.count_tokens(model=model, tools=tools, messages=messages).input_tokens > counted.input_tokens


@pytest.mark.parametrize("model", list(FAMILIES))
def test_auto_calls_parse_or_stay_text(client: anthropic.Anthropic, model: str) -> None:
    """Under `auto` the model may answer in text; whatever it writes ends cleanly, and any call validates."""
    message = client.messages.create(
        model=model, max_tokens=120, extra_body={"temperature": 0}, tools=[tool("flat", SCHEMAS["flat"])],
        messages=ASK,
    )
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use") and message.content
    calls = tool_uses(message)
    if message.stop_reason == "max_tokens" and message.content[-1].type == "tool_use":
        calls = calls[:-1]  # cut short: its input holds what was written, valid JSON but maybe not yet valid
    for call in calls:
        jsonschema.validate(call.input, SCHEMAS["flat"])


def test_tags_that_are_control_tokens_are_shown_to_the_parsers() -> None:
    """In some GGUFs a format's tags are control tokens, which output text leaves out: those are shown."""
    import ctypes

    import llama_cpp
    from llama_cpp import _internals

    from missive.engines.local.default_model import default_model_path
    from missive.engines.local.model import shown_tags, syntax_tags

    assert {"<tool_call>", "</parameter>", "</function>", "<think>"} <= set(syntax_tags(QWEN3_CODER_CALLS))
    assert {"<arg_key>", "</arg_value>"} <= set(syntax_tags(GLM45_CALLS))
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(default_model_path()), params=params, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(model.model)

    def piece(token: int, special: bool) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, 64, 0, special)
        return buffer.raw[:size]

    try:
        tokenize = lambda text: model.tokenize(text.encode(), add_bos=False, special=True)  # noqa: E731
        start = tokenize("<|im_start|>")  # a control token of the default model, standing in for a tag
        assert shown_tags(["<|im_start|>", "<tool_call>", "<think>"], tokenize, piece) == frozenset(start)
    finally:
        model.close()
