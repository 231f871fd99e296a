"""Grammars that make the model's output valid: tool calls that match their input schemas, and
structured output that matches `output_config.format`.

JSON schemas become GBNF through llama-cpp-python's converter (a port of llama.cpp's own). It
enforces `type`, `properties`, `required`, `additionalProperties`, `enum`, `const`, `anyOf`/`oneOf`,
`allOf`, local `$ref`/`$defs`, `items`/`prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`,
string `pattern`s and `format`s (date, time, date-time, uuid); integer `minimum`/`maximum` (and the
exclusive forms) are enforced by us when the range holds at most 256 values. Keywords it cannot
express (`not`, `if`/`then`/`else`, `multipleOf`, `uniqueItems`, wider integer ranges, bounds on
floats, `patternProperties`, ...) are not enforced: the output is still valid JSON of the right shape
otherwise. A schema the converter rejects outright falls back to "any JSON object": valid JSON, never
worse.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from llama_cpp.llama_grammar import SchemaConverter

from missive.engines.prompt import CallSyntax, ToolSpec

log = logging.getLogger("missive.engine")

ANY_OBJECT = {"type": "object"}
# A JSON string's character: no raw control characters (RFC 8259 §7). The converter's own `char` rule
# lets them through, and a string with a raw newline is not JSON: the call's input would not parse.
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# Small models, once calling, tend to call again and again; parallel calls stop at this many.
MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class Grammar:
    gbnf: str
    lazy_trigger: str | None = None  # None: constrain from the first token
    # Each constrained JSON value follows these markers, in order (a call's header); none: the output is one
    json_after: tuple[str, ...] = ()


def _converter() -> SchemaConverter:
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _format(converter: SchemaConverter) -> str:
    if "char" in converter._rules:
        converter._rules["char"] = JSON_CHAR
    return converter.format_grammar()


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal has JSON's escapes


SMALL_RANGE = 256


def _bounded_integers(schema: object) -> object:
    """Integer ranges the converter ignores become enums, when they are small enough to list."""
    if isinstance(schema, list):
        return [_bounded_integers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _bounded_integers(value) for key, value in schema.items()}
    if schema.get("type") == "integer" and "enum" not in schema:
        low = schema.get("minimum", schema.get("exclusiveMinimum", None))
        high = schema.get("maximum", schema.get("exclusiveMaximum", None))
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            low = math.ceil(low) + (1 if "exclusiveMinimum" in schema and "minimum" not in schema and low == int(low) else 0)
            high = math.floor(high) - (1 if "exclusiveMaximum" in schema and "maximum" not in schema and high == int(high) else 0)
            if 0 <= high - low < SMALL_RANGE:
                return {"enum": list(range(low, high + 1))}
    return schema


def _schema_rule(converter: SchemaConverter, schema: dict, name: str) -> str:
    """Add the rules for `schema` under `name`; fall back to any object if it cannot be converted."""
    try:
        resolved = converter.resolve_refs(_bounded_integers(json.loads(json.dumps(schema))), name)
        return converter.visit(resolved, name)
    except Exception as exc:  # the converter raises on what it cannot express at all
        log.warning("schema for %s not enforceable (%s); constraining to any JSON object", name, exc)
        return converter.visit(ANY_OBJECT, f"{name}-any")


def tool_calls(tools: list[ToolSpec], forced: bool, single: bool, syntax: CallSyntax) -> Grammar:
    """Calls written in `syntax` (e.g. `<tool_call name="X">{...}</tool_call>`), each input matching X's schema.

    `forced` constrains from the first token (tool_choice any/tool); otherwise the grammar wakes up
    when the model starts a call. `single` allows one call (tool_choice tool, disable_parallel_tool_use).
    """
    converter = _converter()
    calls = []
    for index, tool in enumerate(tools):
        body = _schema_rule(converter, tool.schema, f"tool-{index}")
        calls.append(f"{_literal(syntax.open + tool.name + syntax.name_end)} {body} {_literal(syntax.close)}")
    converter._add_rule("call", " | ".join(f"( {call} )" for call in calls))
    more = f' ( "\\n"? call ){{0,{MAX_PARALLEL_CALLS - 1}}}'
    converter._add_rule("root", "call" if single else "call" + more)
    return Grammar(_format(converter), None if forced else syntax.trigger, (syntax.open, syntax.name_end))


def json_output(schema: dict) -> Grammar:
    converter = _converter()
    rule = _schema_rule(converter, schema, "output")
    converter._add_rule("root", rule)
    return Grammar(_format(converter))
