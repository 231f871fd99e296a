"""Grammars that make the model's output valid: tool calls that match their input schemas, and
structured output that matches `output_config.format`.

JSON schemas become GBNF through llama-cpp-python's converter (a port of llama.cpp's own). It
enforces `type`, `properties`, `required`, `additionalProperties`, `enum`, `const`, `anyOf`/`oneOf`,
`allOf`, local `$ref`/`$defs`, `items`/`prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`,
string `pattern`s and `format`s (date, time, date-time, uuid). Integer `minimum`/`maximum` (and the
exclusive forms) are enforced by us (`integer_range`: the decimal strings of the range, digit by
digit; a bound of more than 20 digits counts as none). Keywords it cannot express (`not`,
`if`/`then`/`else`, `multipleOf`, `uniqueItems`, bounds on floats, `patternProperties`, ...) are not
enforced: the output is still valid JSON of the right shape
otherwise. A schema the converter rejects outright falls back to "any JSON object": valid JSON, never
worse.

Bounds. The converter spells a repetition out (`maxLength: 5` is five nested optional characters),
and llama.cpp parses such nesting recursively: `maxLength: 20000` overflowed its stack and killed the
engine, and 2,000 failed to compile. So counts above `REPEAT_LIMIT` are relaxed before conversion:
`maxLength`, `maxItems` and a pattern's `{m,n}` lose their upper bound, and a lower bound above the
limit becomes the limit. The output keeps the schema's structure and stays valid JSON; only those
large counts go unenforced (the model rarely comes near them within max_tokens). A grammar still
larger than `MAX_GRAMMAR_CHARS` (huge enums, very wide schemas) falls back to any JSON object.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

from missive.engines.local.tagged_calls import is_text, resolve, types
from missive.engines.prompt import CallSyntax, TaggedSyntax, ToolFormat, ToolSpec

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
    guard: bool = True  # loop control over its JSON (repetition.py); off where values are raw text


class _Converter(SchemaConverter):
    """llama-cpp-python's converter, with integer bounds enforced."""

    def visit(self, schema: Any, name: str) -> str:
        if isinstance(schema, dict) and schema.get("type") == "integer" and not {"enum", "const"} & schema.keys():
            low, high = _integer_bounds(schema)
            if low is not None or high is not None:
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule_name, f"( {integer_range(low, high)} ) space")
        return super().visit(schema, name)


def _converter() -> SchemaConverter:
    return _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _format(converter: SchemaConverter) -> str:
    if "char" in converter._rules:
        converter._rules["char"] = JSON_CHAR
    return converter.format_grammar()


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal has JSON's escapes


MAX_BOUND_DIGITS = 20
REPEAT_LIMIT = 500
MAX_GRAMMAR_CHARS = 256 * 1024
_QUANTIFIER = re.compile(r"(?<!\\)\{(\d+)(,(\d*))?\}")


def _relaxed_quantifier(match: re.Match[str]) -> str:
    low = min(int(match.group(1)), REPEAT_LIMIT)
    if match.group(2) is None:
        return f"{{{low}}}" if int(match.group(1)) <= REPEAT_LIMIT else f"{{{low},}}"
    high = match.group(3)
    if high and int(high) <= REPEAT_LIMIT:
        return f"{{{low},{high}}}"
    return f"{{{low},}}"


def bounded(schema: Any) -> Any:
    """`schema` with every repetition count above `REPEAT_LIMIT` relaxed (see the module's docstring)."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    relaxed = {}
    for key, value in schema.items():
        is_count = isinstance(value, int) and not isinstance(value, bool)
        if key in ("maxLength", "maxItems") and is_count and value > REPEAT_LIMIT:
            continue
        if key in ("minLength", "minItems") and is_count and value > REPEAT_LIMIT:
            value = REPEAT_LIMIT
        elif key == "pattern" and isinstance(value, str):
            value = _QUANTIFIER.sub(_relaxed_quantifier, value)
        elif key not in ("const", "enum", "default", "examples"):
            value = bounded(value)
        relaxed[key] = value
    return relaxed


def _bound(value: object, exclusive: bool, lower: bool) -> int | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    if lower:
        bound = math.floor(value) + 1 if exclusive else math.ceil(value)
    else:
        bound = math.ceil(value) - 1 if exclusive else math.floor(value)
    return bound if len(str(abs(bound))) <= MAX_BOUND_DIGITS else None


def _integer_bounds(schema: dict) -> tuple[int | None, int | None]:
    """The tightest of `minimum`/`exclusiveMinimum` and of `maximum`/`exclusiveMaximum`, as integers."""
    lows = [_bound(schema.get("minimum"), False, True), _bound(schema.get("exclusiveMinimum"), True, True)]
    highs = [_bound(schema.get("maximum"), False, False), _bound(schema.get("exclusiveMaximum"), True, False)]
    low = max((b for b in lows if b is not None), default=None)
    high = min((b for b in highs if b is not None), default=None)
    return low, high


def _digits(low: str, high: str) -> str:
    """GBNF for the decimal strings from `low` to `high`, which have the same length."""
    if low == high:
        return _literal(low)
    if len(low) == 1:
        return f"[{low}-{high}]"
    rest = len(low) - 1
    if low[0] == high[0]:
        return f"{_literal(low[0])} ( {_digits(low[1:], high[1:])} )"
    first, last = int(low[0]), int(high[0])
    parts = []
    if low[1:] != "0" * rest:
        parts.append(f"{_literal(low[0])} ( {_digits(low[1:], '9' * rest)} )")
        first += 1
    tail = None
    if high[1:] != "9" * rest:
        tail = f"{_literal(high[0])} ( {_digits('0' * rest, high[1:])} )"
        last -= 1
    if first <= last:
        parts.append(f"[{first}-{last}] [0-9]{{{rest}}}")
    return " | ".join([*parts, *([tail] if tail else [])])


def _naturals(low: int, high: int | None) -> list[str]:
    """Alternatives for the integers from `low` (>= 0) to `high` (None: no end), without leading zeros."""
    width = len(str(low))
    alternatives = []
    for digits in range(width, len(str(high)) + 1 if high is not None else width + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = 10**digits - 1 if high is None else min(high, 10**digits - 1)
        if start <= end:
            alternatives.append(_digits(str(start), str(end)))
    if high is None:
        alternatives.append(f"[1-9] [0-9]{{{width},}}")
    return alternatives


def integer_range(low: int | None, high: int | None) -> str:
    """GBNF for the JSON integers from `low` to `high` (None: unbounded on that side)."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"empty integer range {low}..{high}")
    alternatives = []
    if high is None or high >= 0:
        alternatives += _naturals(max(low or 0, 0), high)
    if low is None or low < 0:
        negatives = _naturals(max(-(high if high is not None and high < 0 else -1), 1), None if low is None else -low)
        alternatives += [f'"-" ( {alternative} )' for alternative in negatives]
    return " | ".join(f"( {alternative} )" for alternative in alternatives)


def _schema_rule(converter: SchemaConverter, schema: dict, name: str) -> str:
    """Add the rules for `schema` under `name`; fall back to any object if it cannot be converted."""
    try:
        resolved = converter.resolve_refs(bounded(json.loads(json.dumps(schema))), name)
        return converter.visit(resolved, name)
    except Exception as exc:  # the converter raises on what it cannot express at all
        log.warning("schema for %s not enforceable (%s); constraining to any JSON object", name, exc)
        return converter.visit(ANY_OBJECT, f"{name}-any")


def tool_calls(tools: list[ToolSpec], forced: bool, single: bool, syntax: ToolFormat) -> Grammar:
    """Calls written in `syntax` (e.g. `<tool_call name="X">{...}</tool_call>`), each input matching X's schema.

    `forced` constrains from the first token (tool_choice any/tool); otherwise the grammar wakes up
    when the model starts a call. `single` allows one call (tool_choice tool, disable_parallel_tool_use).
    """
    converter = _converter()
    calls = []
    for index, tool in enumerate(tools):
        if isinstance(syntax, TaggedSyntax):
            body = _tagged_arguments(converter, tool.schema, f"tool-{index}", syntax)
        else:
            body = _schema_rule(converter, tool.schema, f"tool-{index}")
        close = f" {_literal(syntax.close)}" if syntax.close else ""
        calls.append(f"{_literal(syntax.open + tool.name + syntax.name_end)} {body}{close}")
    converter._add_rule("call", " | ".join(f"( {call} )" for call in calls))
    separator = "\n" if isinstance(syntax, TaggedSyntax) else syntax.separator
    more = f" ( {_separator(separator)}call ){{0,{MAX_PARALLEL_CALLS - 1}}}"
    root = "call" if single else "call" + more
    if isinstance(syntax, CallSyntax) and syntax.before:  # a list of calls: `[TOOL_CALLS] [` ... `]`
        root = f"{_before(syntax)} {root} {_literal(syntax.after)}"
    converter._add_rule("root", root)
    gbnf = _format(converter)
    if len(gbnf) > MAX_GRAMMAR_CHARS:
        log.warning("tool grammar of %d chars is too large; constraining inputs to any JSON object", len(gbnf))
        return tool_calls([ToolSpec(tool.name, tool.description, ANY_OBJECT) for tool in tools], forced, single, syntax)
    if isinstance(syntax, TaggedSyntax):
        return Grammar(gbnf, None if forced else syntax.trigger, guard=False)
    return Grammar(gbnf, None if forced else syntax.trigger, (syntax.open, syntax.name_end))


def _separator(separator: str) -> str:
    """GBNF for what stands between two calls (followed by a space); its whitespace is optional."""
    return "".join(f"{_literal(char)}? " if char.isspace() else f"{_literal(char)} " for char in separator)


def _before(syntax: CallSyntax) -> str:
    """The opening of a list of calls: its trigger, an optional space (Mistral's v3 tokenizer writes one,
    the tekken ones do not), then the rest."""
    trigger, rest = syntax.trigger, syntax.before
    if not rest.startswith(trigger):
        return _literal(rest)
    return f'{_literal(trigger)} " "? {_literal(rest[len(trigger):].strip())}'


def _tagged_arguments(converter: SchemaConverter, schema: dict, name: str, syntax: TaggedSyntax) -> str:
    """A tagged call's arguments: each property of the schema in its order (the required ones always), its
    value raw text for string parameters and JSON of its schema for the others (numbers, booleans,
    objects, arrays), which is how these models' templates write them. A schema without properties
    takes any arguments, as raw text."""
    raw = _excluding(converter, syntax.value_end.split()[0], "raw-value")
    try:
        root = converter.resolve_refs(bounded(json.loads(json.dumps(schema))), name)
    except Exception:  # the converter raises on what it cannot express at all
        root = {}
    properties = resolve(root, root).get("properties")
    if not isinstance(properties, dict) or not properties:
        key = converter._add_rule("raw-key", r"[^<>\n]+")
        return f"( {_literal(syntax.key_open)} {key} {_literal(syntax.key_end)} {raw} {_literal(syntax.value_end)} )*"
    required = set(resolve(root, root).get("required") or [])
    parts = []
    for index, (key, prop) in enumerate(properties.items()):
        value = _tagged_value(converter, resolve(prop, root), root, f"{name}-{index}", raw)
        part = f"{_literal(syntax.key_open + str(key) + syntax.key_end)} {value} {_literal(syntax.value_end)}"
        parts.append(part if key in required else f"( {part} )?")
    return " ".join(parts)


def _tagged_value(converter: SchemaConverter, schema: dict, root: dict, name: str, raw: str) -> str:
    if is_text(schema, root):
        choices = [*schema.get("enum", []), *([schema["const"]] if "const" in schema else [])]
        if choices and all(isinstance(choice, str) for choice in choices):
            return "( " + " | ".join(_literal(choice) for choice in choices) + " )"
        return raw  # pattern, format and length bounds of raw strings are not enforced
    if types(schema, root) == {"boolean"}:  # Qwen3-Coder's template writes Python's True and False
        return '( "true" | "false" | "True" | "False" )'
    try:
        return converter.visit(schema, name)
    except Exception:
        log.warning("schema of %s not enforceable; its value is constrained to raw text", name)
        return raw


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def _excluding(converter: SchemaConverter, tag: str, name: str) -> str:
    """Rules for any text that does not contain `tag` (a raw value, before its closing tag); the first rule's name.

    A matcher of `tag` as rules: rule i reads on from a text that ends with `tag[:i]`, and the text may
    end in any of them.
    """

    def step(state: int, char: str) -> int:  # the longest end of tag[:state] + char that begins tag
        text = tag[:state] + char
        while text and not tag.startswith(text):
            text = text[1:]
        return len(text)

    for state in range(len(tag)):
        moves = {char: step(state, char) for char in sorted(set(tag))}
        onward = {char: nxt for char, nxt in moves.items() if 0 < nxt < len(tag)}
        barred = "".join(_class_char(char) for char, nxt in moves.items() if nxt > 0)  # these, or the tag's end
        alternatives = [f"[^{barred}] {name}-0", *(f"{_literal(char)} {name}-{nxt}" for char, nxt in onward.items())]
        converter._add_rule(f"{name}-{state}", "( " + " | ".join(alternatives) + " )?")
    return f"{name}-0"


def json_output(schema: dict) -> Grammar:
    converter = _converter()
    rule = _schema_rule(converter, schema, "output")
    converter._add_rule("root", rule)
    gbnf = _format(converter)
    if len(gbnf) > MAX_GRAMMAR_CHARS:
        log.warning("output grammar of %d chars is too large; constraining to any JSON object", len(gbnf))
        return json_output(ANY_OBJECT)
    return Grammar(gbnf)
