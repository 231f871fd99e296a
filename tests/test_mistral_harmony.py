"""Mistral's `[TOOL_CALLS]` (the older JSON list and v11's `NAME[ARGS]{...}`) and gpt-oss's harmony channels:
the parsers on every chunk split, malformed output, nested quotes, long multi-line values and several calls;
the grammars, checked by llama.cpp's own grammar engine against what the parsers read; harmony's reasoning
on the real model.

The model-level checks shared by every family (forced calls validate, streamed inputs join, history round
trips, count_tokens equals input_tokens) are in test_tool_formats.py, whose FAMILIES include these. The
default model's vocabulary has none of these formats' control tokens, so here the tags are plain text; in
a real Mistral or gpt-oss GGUF they are control tokens, which the engine shows as text to the parsers
(`shown_tags`), so the parsers read the same text either way.
"""

from __future__ import annotations

import ctypes
import json
import math

import anthropic
import httpx
import pytest
from test_tool_formats import SOURCE, TOOLS, WRITE, split
from test_tools import ASK, SCHEMAS, tool

from missive.engines.local.grammar import tool_calls
from missive.engines.local.harmony import HarmonyParser
from missive.engines.local.thinking import HARMONY_ANALYSIS, THINK_TAGS, ThinkingSplitter, template_reasons
from missive.engines.local.toolcalls import CallInput, CallStart, Text
from missive.engines.prompt import HARMONY_CALLS, MISTRAL_V3_CALLS, MISTRAL_V11_CALLS, ToolSpec

MISTRAL = [MISTRAL_V3_CALLS, MISTRAL_V11_CALLS]
WRITE_INPUT = {
    "file_path": "src/a.py", "content": SOURCE + '\n[TOOL_CALLS] [{"name": "x"}] [ARGS] <|call|> <|end|> ]}',
    "line": 12, "replace_all": True, "options": {"mode": "fast"}, "paths": ["a", 'b "c"'], "maybe": None,
}  # fmt: skip
BASH_INPUT = {"city": 'He said "no", then \\ "yes" ]}', "days": 3}


def harmony_call(name: str, tool_input: dict, recipient_first: bool = False) -> str:
    body = json.dumps(tool_input, ensure_ascii=False)
    if recipient_first:  # as the template renders history
        return f"<|start|>assistant to=functions.{name}<|channel|>commentary json<|message|>{body}<|call|>"
    return f"<|start|>assistant{HARMONY_CALLS.text(name, tool_input)}<|call|>"


# --- Mistral ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", MISTRAL)
def test_mistral_calls_split_out_on_every_chunk_split(syntax) -> None:
    output = "Let me write it." + syntax.calls_text([("Write", WRITE_INPUT), ("Bash", BASH_INPUT)])
    for size in [*range(1, 30), 64, 333, len(output)]:
        assert split(syntax, output, size) == ("Let me write it.", ["Write", "Bash"], [WRITE_INPUT, BASH_INPUT]), size


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
@pytest.mark.parametrize(
    ("syntax", "output", "text", "names", "inputs"),
    [
        # tekken tokenizers write no space after [TOOL_CALLS]; keys in any order (a tojson that sorts them);
        # the template's ids; arguments as a JSON string; a bare number among the keys
        (MISTRAL_V3_CALLS, '[TOOL_CALLS][{"arguments": {"days": 2}, "name": "Bash", "id": "a1b2c3d4e"}]', "", ["Bash"],
         [{"days": 2}]),
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"name": "Bash", "n": 5, "arguments": "{\\"days\\": 1}"}]', "", ["Bash"],
         [{"days": 1}]),
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"name": "Bash"}]', "", ["Bash"], [{}]),
        # not a list after the marker: text
        (MISTRAL_V3_CALLS, "[TOOL_CALLS] is how Mistral calls tools.", None, [], []),
        # an object without a name: no call; the list going wrong: the rest is text
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"id": "x"}] done', " done", [], []),
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"name": "Bash", "arguments": {"days": 1}} oops', "oops", ["Bash"],
         [{"days": 1}]),
        # cut short (max_tokens): the call ends, its input valid JSON or left to the wire
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"name": "Bash", "argu', "", ["Bash"], [{}]),
        (MISTRAL_V3_CALLS, '[TOOL_CALLS] [', "", [], []),
        # v11: several calls in a row, an optional call id, a marker with no [ARGS] after it
        (MISTRAL_V11_CALLS, '[TOOL_CALLS]Bash[ARGS]{"days": 1}[TOOL_CALLS]Write[ARGS]{"file_path": "a"}', "",
         ["Bash", "Write"], [{"days": 1}, {"file_path": "a"}]),
        (MISTRAL_V11_CALLS, '[TOOL_CALLS]Bash[CALL_ID]a1b2c3d4e[ARGS]{"days": 4}', "", ["Bash"], [{"days": 4}]),
        (MISTRAL_V11_CALLS, "Mistral writes [TOOL_CALLS] before its calls.", None, [], []),
        (MISTRAL_V11_CALLS, "[TOOL_CALLS]" + "x" * 600, None, [], []),
    ],
)  # fmt: skip
def test_mistral_malformed_output_keeps_its_text(syntax, output, text, names, inputs, size) -> None:
    got_text, got_names, got_inputs = split(syntax, output, size)
    assert (got_text, got_names) == (output if text is None else text, names)
    assert got_inputs == inputs


def test_mistral_cut_short_in_the_arguments_is_an_unfinished_input() -> None:
    """As with JSON calls of other formats, the input so far is not valid JSON: the wire makes it `{}`."""
    from missive.engines.local.tagged_calls import parser_for

    for syntax, output in [(MISTRAL_V3_CALLS, '[TOOL_CALLS] [{"name": "Bash", "arguments": {"days": 1'),
                           (MISTRAL_V11_CALLS, '[TOOL_CALLS]Bash[ARGS]{"days": 1')]:
        parser = parser_for(syntax, TOOLS)
        pieces = parser.feed(output) + parser.flush()
        assert [p.name for p in pieces if isinstance(p, CallStart)] == ["Bash"]
        assert "".join(p.json for p in pieces if isinstance(p, CallInput)) == '{"days": 1'


# --- harmony ----------------------------------------------------------------------------------------


def test_harmony_calls_split_out_on_every_chunk_split() -> None:
    output = ("<|channel|>commentary<|message|>Let me write it.<|end|>" + harmony_call("Write", WRITE_INPUT)
              + harmony_call("Bash", BASH_INPUT, recipient_first=True))
    for size in [*range(1, 30), 64, 333, len(output)]:
        assert split(HARMONY_CALLS, output, size) == ("Let me write it.", ["Write", "Bash"], [WRITE_INPUT, BASH_INPUT])


@pytest.mark.parametrize("size", [1, 2, 5, 100])
@pytest.mark.parametrize(
    ("output", "text", "names", "inputs"),
    [
        ("<|channel|>final<|message|>The answer.<|return|>", "The answer.", [], []),
        # reasoning after the thinking block is not text; the answer after it is
        ("<|channel|>analysis<|message|>hidden<|end|><|start|>assistant<|channel|>final<|message|>shown", "shown",
         [], []),
        # a model that leaves harmony's shape: its text is text
        ("Just plain text, <|channel|> and all.", "Just plain text, <|channel|> and all.", [], []),
        # an unknown tool, or a body that is no JSON: the body is text
        ("<|channel|>commentary to=functions.Nope <|constrain|>json<|message|>{\"a\": 1}<|call|>", '{"a": 1}', [],
         []),
        ("<|channel|>commentary to=functions.Bash <|constrain|>json<|message|>no json<|call|>", "no json", [], []),
        # the end left out before the next message
        ("<|channel|>final<|message|>one<|start|>assistant<|channel|>final<|message|> two", "one two", [], []),
        # cut short (max_tokens): in a header (nothing), in a call (its input so far)
        ("<|channel|>final<|message|>Hi<|start|>assistant<|channel|>comm", "Hi", [], []),
        ('<|channel|>commentary to=functions.Bash <|constrain|>json<|message|>{"days": 2}', "", ["Bash"],
         [{"days": 2}]),
    ],
)  # fmt: skip
def test_harmony_malformed_output_keeps_its_text(output: str, text: str, names: list, inputs: list, size: int) -> None:
    assert split(HARMONY_CALLS, output, size) == (text, names, inputs)


@pytest.mark.parametrize("size", [1, 3, 50])
def test_harmony_thinking_then_answer(size: int) -> None:
    """The scheduler's path: the thinking splitter takes the analysis message, the parser the rest."""
    output = "Let me think: 12 * 12 = 144.<|end|><|start|>assistant<|channel|>final<|message|>It is 144.<|return|>"
    thinking, parser = ThinkingSplitter(HARMONY_ANALYSIS.close), HarmonyParser([])
    thought, pieces = "", []
    for at in range(0, len(output), size):
        chunk = output[at : at + size]
        if not thinking.done:
            part, after = thinking.feed(chunk)
            thought += part
            if after is None:
                continue
            chunk = after
        pieces += parser.feed(chunk)
    pieces += parser.flush()
    assert thought == "Let me think: 12 * 12 = 144."
    assert "".join(p.text for p in pieces if isinstance(p, Text)) == "It is 144."


def test_harmony_reasoning_is_read_from_the_template() -> None:
    from test_tool_formats import TEMPLATES

    template = (TEMPLATES / "harmony.jinja").read_text()
    assert template_reasons(template)
    assert HARMONY_ANALYSIS.prefill(True, "") == "<|channel|>analysis<|message|>"
    assert HARMONY_ANALYSIS.prefill(False, "") == "<|channel|>analysis<|message|><|end|><|start|>assistant"
    assert HARMONY_ANALYSIS.prefill(False, "So").endswith("<|start|>assistant<|channel|>final<|message|>So")
    assert THINK_TAGS.prefill(False, "So") == "<think>\n\n</think>\n\nSo"


# --- grammars, run by llama.cpp -------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab():
    import llama_cpp
    from llama_cpp import _internals

    from missive.engines.local.default_model import default_model_path

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(default_model_path()), params=params, verbose=False)
    yield model
    model.close()


def accepts(model, grammar, text: str) -> bool:
    """Whether llama.cpp's grammar engine takes `text` (as the default model's tokens) whole, then the end."""
    import llama_cpp

    from missive.engines.local.sampling import _grammar_sampler

    vocab = llama_cpp.llama_model_get_vocab(model.model)
    sampler = _grammar_sampler(vocab, grammar)
    try:
        for token in [*model.tokenize(text.encode(), add_bos=False, special=False), model.token_eos()]:
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            array = llama_cpp.llama_token_data_array(data, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if math.isinf(data[0].logit):
                return False
            if token != model.token_eos():
                llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


GRAMMAR_TOOLS = [ToolSpec("Write", "", WRITE), ToolSpec("flat", "", SCHEMAS["flat"])]


@pytest.mark.parametrize("syntax", MISTRAL)
def test_mistral_grammar_takes_what_the_parser_reads(vocab, syntax) -> None:
    write = {"file_path": "a.py", "content": 'print("hi")\n', "line": 3}
    several = tool_calls(GRAMMAR_TOOLS, forced=True, single=False, syntax=syntax)
    calls = [("Write", write), ("flat", {"city": "Paris", "days": 2})]
    assert accepts(vocab, several, syntax.calls_text(calls))
    assert split(syntax, syntax.calls_text(calls), 5)[2] == [write, calls[1][1]]
    single = tool_calls(GRAMMAR_TOOLS, forced=True, single=True, syntax=syntax)
    assert accepts(vocab, single, syntax.calls_text(calls[:1]))
    assert not accepts(vocab, single, syntax.calls_text(calls))  # one call only
    assert not accepts(vocab, single, syntax.calls_text([("Write", {"file_path": 1})]))  # the schema holds
    assert tool_calls(GRAMMAR_TOOLS, forced=False, single=False, syntax=syntax).lazy_trigger == "[TOOL_CALLS]"
    if syntax is MISTRAL_V3_CALLS:  # the v3 tokenizer writes a space after [TOOL_CALLS], tekken ones do not
        assert accepts(vocab, single, '[TOOL_CALLS][{"name": "Write", "arguments": {"file_path": "a", "content": ""}}]')


def test_harmony_grammar_writes_one_call_that_ends_at_its_json(vocab) -> None:
    grammar = tool_calls(GRAMMAR_TOOLS, forced=True, single=True, syntax=HARMONY_CALLS)
    call = HARMONY_CALLS.text("flat", {"city": "Paris", "days": 2})
    assert call == '<|channel|>commentary to=functions.flat <|constrain|>json<|message|>{"city": "Paris", "days": 2}'
    assert accepts(vocab, grammar, call)  # then the end of generation: <|call|> in gpt-oss
    assert not accepts(vocab, grammar, call + "<|call|>")
    lazy = tool_calls(GRAMMAR_TOOLS, forced=False, single=True, syntax=HARMONY_CALLS)
    assert lazy.lazy_trigger == "<|channel|>commentary to=" and lazy.json_after == (HARMONY_CALLS.open,
                                                                                    HARMONY_CALLS.name_end)


def test_control_tokens_of_these_formats_are_their_tags() -> None:
    from missive.engines.local.model import syntax_tags

    assert {"[TOOL_CALLS]", "[ARGS]"} <= set(syntax_tags(MISTRAL_V11_CALLS))
    assert "[TOOL_CALLS]" in syntax_tags(MISTRAL_V3_CALLS)
    assert {"<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>", "<|call|>", "<|return|>"} <= set(
        syntax_tags(HARMONY_CALLS)
    )


# --- on the real model --------------------------------------------------------------------------------


THINK = {"type": "enabled", "budget_tokens": 1024}


def test_harmony_thinks_in_the_analysis_channel(client: anthropic.Anthropic, server) -> None:
    """The analysis channel streams as a thinking block. Only the stream's first events are read: a budget of
    1,024 tokens takes minutes on a busy machine; the budget's forced close is the scheduler's, as for
    <think> (test_thinking.py), with harmony's tags (test_harmony_thinking_then_answer)."""
    server.wait_for_log(r"model smollm2-harmony: reasons in harmony analysis channel \(read from the chat template\)")
    seen: list[str] = []
    tools = [tool("flat", SCHEMAS["flat"])]
    with client.messages.stream(model="smollm2-harmony", max_tokens=1100, thinking=THINK, tools=tools,
                                messages=ASK) as stream:
        for event in stream:
            if event.type == "message_start":
                input_tokens = event.message.usage.input_tokens
            elif event.type == "content_block_start":
                seen.append(event.content_block.type)
            elif event.type == "content_block_delta":
                seen.append(event.delta.type)
                assert not event.delta.thinking.startswith("<|channel|>")  # the prompt opened the analysis
                break  # closing the stream cancels the rest
    assert seen == ["thinking", "thinking_delta"], seen
    counted = client.messages.count_tokens(model="smollm2-harmony", thinking=THINK, tools=tools, messages=ASK)
    assert counted.input_tokens == input_tokens


def test_harmony_without_thinking_or_tools_answers_in_text(http: httpx.Client) -> None:
    body = {"model": "smollm2-harmony", "max_tokens": 30, "temperature": 0, "messages": ASK}
    message = http.post("/v1/messages", json=body).json()
    assert message["stop_reason"] in ("end_turn", "max_tokens")
    assert message["usage"]["output_tokens"] > 0
    assert all(block["type"] == "text" and not block["text"].startswith("<|") for block in message["content"])



def test_text_after_tool_results_goes_into_the_last_result_for_templates_that_refuse_it() -> None:
    """Mistral's templates refuse a user turn right after tool results (Claude Code sends text there); the
    engine then renders that text in the last result, marks and all."""
    from test_tool_formats import TEMPLATES, _history, _render

    from missive.engines.local.model import chat_environment
    from missive.engines.prompt import MARK, text_into_results, to_chat

    generation = _history("m", {"file_path": "a"}, {"file_path": "b"})
    generation.messages[-1].content.append(generation.messages[0].content[0].model_copy(update={"text": "Thanks."}))
    template = (TEMPLATES / "mistral_v3.jinja").read_text()
    with pytest.raises(Exception, match="alternate"):
        _render(template, generation, MISTRAL_V3_CALLS)
    chat = to_chat(generation, MISTRAL_V3_CALLS)
    folded = text_into_results(chat.turns)
    assert folded is not None and [t.role for t in folded] == ["system", "user", "assistant", "tool", "tool"]
    assert folded[-1].content.replace(MARK, "") == "Written.\n\nThanks."
    assert sum(t.content.count(MARK) for t in folded) == sum(t.content.count(MARK) for t in chat.turns)
    rendered = chat_environment().from_string(template).render(
        messages=[t.message() for t in folded], tools=chat.tools, add_generation_prompt=True, bos_token="", eos_token=""
    )
    assert rendered.endswith('Thanks.' + MARK + '", "call_id": "' + folded[-1].tool_call_id + '"}[/TOOL_RESULTS]')
    assert text_into_results(to_chat(_history("m", {"file_path": "a"}), MISTRAL_V3_CALLS).turns) is None
