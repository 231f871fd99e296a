"""No schema can crash or break the engine (issue 11): every case here once killed it, gave a 500, or
would have built a grammar without bound. Each is sent as structured output and as a forced tool's
input schema (where it fits in the model's window), streamed and not, and must answer 200 without the
engine process restarting."""

from __future__ import annotations

import json

import anthropic
import pytest
from conftest import Server

from missive.engines.local import grammar

DEEP = json.loads('{"type":"object","properties":{"a":' * 40 + '{"type":"string"}' + "}}" * 40)
HOSTILE = {
    "maxLength 20000": {"type": "object", "properties": {"content": {"type": "string", "maxLength": 20000}}},
    "maxLength 100000 minLength 50000": {"type": "string", "maxLength": 100000, "minLength": 50000},
    "pattern a{20000}": {"type": "string", "pattern": "^a{20000}$"},
    "pattern (ab){5000,}": {"type": "string", "pattern": "^(ab){5000,}c{3,90000}$"},
    "minItems 30000": {"type": "array", "items": {"type": "integer"}, "minItems": 30000, "maxItems": 60000},
    "deep nesting": DEEP,
    "recursive $ref": {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
                       "$ref": "#/$defs/n"},
    "huge enum": {"enum": [f"value-{i}" for i in range(20000)]},
    "const control character": {"const": "\u001d"},
    "nested bounds": {"type": "array", "maxItems": 400,
                      "items": {"type": "array", "maxItems": 400, "items": {"type": "string", "maxLength": 400}}},
}
ASK = [{"role": "user", "content": "Fill in the data."}]


def _object(schema: dict) -> dict:
    return schema if schema.get("type") == "object" else {"type": "object", "properties": {"value": schema}}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_schema_is_answered_and_the_engine_survives(
    server: Server, client: anthropic.Anthropic, case: str, stream: bool
) -> None:
    schema = HOSTILE[case]
    mark = len(server.log())
    structured = {"model": "smollm2-135m-instruct", "max_tokens": 12, "messages": ASK,
                  "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    forced = {"model": "smollm2-135m-instruct", "max_tokens": 12, "messages": ASK,
              "tools": [{"name": "fill", "description": "Fill in.", "input_schema": _object(schema)}],
              "tool_choice": {"type": "any"}}
    in_prompt = len(json.dumps(schema)) < 8000  # a tool's schema is shown to the model: it must fit its window
    for body in (structured, forced) if in_prompt else (structured,):
        if stream:
            with client.messages.stream(**body) as events:  # type: ignore[arg-type]
                message = events.get_final_message()
        else:
            message = client.messages.create(**body)  # type: ignore[arg-type]
        assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    log = server.log()[mark:]
    assert "engine process exited" not in log and "Traceback" not in log


def test_large_counts_are_relaxed_and_small_ones_kept() -> None:
    schema = {"type": "object", "properties": {
        "big": {"type": "string", "maxLength": 20000, "minLength": 10000},
        "small": {"type": "string", "maxLength": 40},
        "items": {"type": "array", "maxItems": 1000000, "minItems": 2},
        "pattern": {"type": "string", "pattern": "^a{3}b{20000}c{2,900000}d{7,}$"},
        "const": {"const": {"maxLength": 99999}},  # data, not a schema: left alone
    }}
    relaxed = grammar.bounded(schema)["properties"]
    assert relaxed["big"] == {"type": "string", "minLength": grammar.REPEAT_LIMIT}
    assert relaxed["small"] == {"type": "string", "maxLength": 40}
    assert relaxed["items"] == {"type": "array", "minItems": 2}
    assert relaxed["pattern"]["pattern"] == f"^a{{3}}b{{{grammar.REPEAT_LIMIT},}}c{{2,}}d{{7,}}$"
    assert relaxed["const"] == {"const": {"maxLength": 99999}}


def test_grammar_size_is_bounded() -> None:
    for case, schema in HOSTILE.items():
        assert len(grammar.json_output(schema).gbnf) <= grammar.MAX_GRAMMAR_CHARS, case


LAZY_TRIGGER_SCRIPT = """
import llama_cpp
from missive.engines.local.default_model import default_model_path
from missive.engines.local.grammar import tool_calls
from missive.engines.local.sampling import Sampling, TokenSampler
from missive.engines.prompt import MISSIVE_CALLS, ToolSpec

params = llama_cpp.llama_model_default_params()
params.vocab_only = True
model = llama_cpp.llama_model_load_from_file(str(default_model_path()).encode(), params)
vocab = llama_cpp.llama_model_get_vocab(model)
schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
lazy = tool_calls([ToolSpec("get_weather", "", schema)], forced=False, single=False, syntax=MISSIVE_CALLS)
sampler = TokenSampler(vocab, Sampling(), lazy)
tokens = (llama_cpp.llama_token * 32)()
count = llama_cpp.llama_tokenize(vocab, b"<tool_called", 12, tokens, 32, False, True)
*before, last = tokens[:count]
for token in before:
    sampler.accept(token)
assert sampler._crosses_trigger(last), "the token completes the trigger and runs past it"
sampler.accept(last)  # before the fix, llama.cpp aborted the process here
print("survived")
"""


def test_a_token_that_runs_past_a_lazy_trigger_cannot_abort_the_engine() -> None:
    """Found by bench/soak.py: under tool_choice auto the model wrote `<tool_` then the token `called`;
    llama.cpp woke the grammar on `<tool_call` and replayed `called` whole into it, then aborted
    ("Unexpected empty grammar stack after accepting piece: called (6900)")."""
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-c", LAZY_TRIGGER_SCRIPT], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "survived" in ran.stdout, ran.stderr[-2000:]
