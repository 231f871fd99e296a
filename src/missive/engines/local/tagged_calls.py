"""Splits streamed output into text and tool calls written in a `TaggedSyntax` (Qwen3-Coder, GLM-4.5).

These formats write each argument as a tag pair around a raw value: `<parameter=path>\nsrc/a.py\n
</parameter>` or `<arg_key>path</arg_key><arg_value>src/a.py</arg_value>`. The value has no type of its
own, so it is read by the tool's input schema (`coerce`): a string parameter is the text as written,
an integer parameter `5` is 5, an object parameter is JSON (or a Python literal, which models write too).

The parser gives the same pieces as `CallParser` (Text, CallStart, CallInput, CallEnd), so the
scheduler does not know which format runs. The input streams as JSON: `{` at the call's start, each
key as its tag closes, a string value escaped piece by piece as it comes (a file's contents stream
while the model writes them), any other value once its closing tag shows. Whatever the model writes,
the input joins into valid JSON: a call cut short (max_tokens) closes its string and its object, and
a call whose tags go wrong ends there, the rest being text. Text that only looked like the start of a
call (`<tool_call>` followed by something else) is given back as text.
"""

from __future__ import annotations

import ast
import json
import math
import re

from missive.engines.local.harmony import HarmonyParser
from missive.engines.local.mistral_calls import CallListParser
from missive.engines.local.toolcalls import (
    CallEnd,
    CallInput,
    CallParser,
    CallStart,
    Piece,
    Splitter,
    StepParser,
    held,
)
from missive.engines.prompt import CallSyntax, HarmonySyntax, TaggedSyntax, ToolFormat, ToolSpec

MAX_NAME = 256  # a tool name or key longer than this without its closing tag is not one
_NAME = re.compile(r"[^\s<>{}\[\]\"'=]+")


class TaggedCallParser(StepParser):
    def __init__(self, syntax: TaggedSyntax, tools: list[ToolSpec]) -> None:
        self.syntax = syntax
        self.schemas = {tool.name: tool.schema for tool in tools}
        self.starts = [syntax.open.split(), *(start.split() for start in syntax.starts)]
        self.buffer = ""
        self.state = "text"  # text -> opening -> name -> params -> key -> key_end -> value ... -> closing -> text
        self.expected: list[str] = []  # tags still to read in `opening`, `key_end` and `closing`
        self.raw = ""  # what a call that is not confirmed yet has consumed: text again if it is no call
        self.calls = 0
        self.schema: dict = {}  # the current tool's input schema
        self.keys = 0  # arguments written in the current call
        self.text_value = False  # the current value streams as a JSON string
        self.key = ""  # the current argument's name
        self.value = ""  # the current value so far (not streamed ones)

    @property
    def in_call(self) -> bool:
        return self.state != "text"

    # --- helpers over the buffer ------------------------------------------------------------------

    def _expect(self, tag: str) -> bool | None:
        """Read optional whitespace then `tag`: True; None while unknown; False if something else follows."""
        rest = self.buffer.lstrip()
        if rest.startswith(tag):
            self.raw += self.buffer[: len(self.buffer) - len(rest) + len(tag)]
            self.buffer = rest[len(tag) :]
            return True
        return None if tag.startswith(rest) else False

    def _read_expected(self, pieces: list[Piece]) -> bool | None:
        """Read the tags still `expected`: None once all are read; else the step's result (False: more
        output is needed; or what a mismatch gives)."""
        while self.expected:
            matched = self._expect(self.expected[0])
            if matched is None:
                return False
            if not matched:
                return self._mismatch(pieces)
            self.expected.pop(0)
        return None

    # --- the parser -------------------------------------------------------------------------------

    def _step(self, pieces: list[Piece]) -> bool:
        """Advance by one state; False when more output is needed."""
        syntax = self.syntax
        if self.state == "text":
            found = [(at, tags) for tags in self.starts if (at := self.buffer.find(tags[0])) != -1]
            if not found:
                keep = max(held(self.buffer, tags[0]) for tags in self.starts)
                emit = self.buffer[: len(self.buffer) - keep]
                if self.calls and not emit.strip():  # blanks after a call: text only if more text follows
                    return False
                self.buffer = self.buffer[len(self.buffer) - keep :]
                pieces += self._text(emit)
                return False
            at, tags = min(found, key=lambda item: item[0])
            pieces += self._text(self.buffer[:at])
            self.raw, self.buffer = tags[0], self.buffer[at + len(tags[0]) :]
            self.state, self.expected = "opening", tags[1:]
        elif self.state in ("opening", "key_end", "closing"):
            if (waiting := self._read_expected(pieces)) is not None:
                return waiting
            self.state = {"opening": "name", "key_end": "value_start", "closing": "text"}[self.state]
        elif self.state == "name":
            return self._name(pieces)
        elif self.state == "params":
            if (matched := self._expect(syntax.key_open.split()[0])) is True:
                self.expected, self.state = syntax.key_open.split()[1:], "key"
                return True
            closing = syntax.close.split()
            if (ended := self._expect(closing[0])) is True:
                self._end_call(pieces)
                self.state, self.expected = "closing", closing[1:]
                return True
            if matched is None or ended is None:
                return False
            return self._mismatch(pieces)
        elif self.state == "key":
            return self._key(pieces)
        elif self.state == "value_start":
            if not self.buffer:
                return False
            if syntax.trim_newlines and self.buffer.startswith("\n"):
                self.buffer = self.buffer[1:]
            self.state = "value"
        else:  # value
            return self._value(pieces)
        return True

    def _name(self, pieces: list[Piece]) -> bool:
        ends = self.syntax.name_end.split()
        rest = self.buffer.lstrip()
        if ends:
            at = rest.find(ends[0])
        else:  # the name ends at whitespace (GLM)
            at = next((i for i, char in enumerate(rest) if char.isspace()), -1)
        tag = rest.find("<")  # a tag that follows a name without its end (`<tool_call>NAME</tool_call>`)
        if tag != -1 and (at == -1 or tag < at):
            at, ends = tag, []
        if at == -1:
            return False if len(rest) <= MAX_NAME else self._mismatch(pieces)
        name = rest[:at].strip()
        if not _NAME.fullmatch(name) or (self.schemas and name not in self.schemas):  # prose about tags
            return self._mismatch(pieces)
        self.buffer = rest[at + (len(ends[0]) if ends else 0) :]
        self.schema, self.keys, self.raw = self.schemas.get(name) or {}, 0, ""
        pieces += [CallStart(name), CallInput("{")]
        self.state = "params"
        return True

    def _key(self, pieces: list[Piece]) -> bool:
        if (waiting := self._read_expected(pieces)) is not None:  # the rest of the opening tag
            return waiting
        ends = self.syntax.key_end.split()
        at = self.buffer.find(ends[0])
        if at == -1:
            return False if len(self.buffer) <= MAX_NAME else self._mismatch(pieces)
        key, self.buffer = self.buffer[:at].strip(), self.buffer[at + len(ends[0]) :]
        self.text_value = is_text(_property(self.schema, key), self.schema)
        self.value, self.key = "", key
        pieces.append(CallInput(("" if self.keys == 0 else ", ") + json.dumps(key, ensure_ascii=False) + ": "))
        if self.text_value:
            pieces.append(CallInput('"'))
        self.keys += 1
        self.state, self.expected = "key_end", ends[1:]
        return True

    def _value(self, pieces: list[Piece]) -> bool:
        end = self.syntax.value_end.split()[0]
        trim = self.syntax.trim_newlines
        at = self.buffer.find(end)
        if at == -1:
            keep = max(held(self.buffer, end), held(self.buffer, "\n" + end) if trim else 0)
            chunk, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
            self._add_value(chunk, pieces)
            return False
        chunk, self.buffer = self.buffer[:at], self.buffer[at + len(end) :]
        if trim and chunk.endswith("\n"):
            chunk = chunk[:-1]
        self._add_value(chunk, pieces)
        self._close_value(pieces)
        self.state = "params"
        return True

    def _add_value(self, chunk: str, pieces: list[Piece]) -> None:
        if not chunk:
            return
        if self.text_value:
            pieces.append(CallInput(json.dumps(chunk, ensure_ascii=False)[1:-1]))
        else:
            self.value += chunk

    def _close_value(self, pieces: list[Piece]) -> None:
        if self.text_value:
            pieces.append(CallInput('"'))
        else:
            value = coerce(self.value, _property(self.schema, self.key), self.schema)
            pieces.append(CallInput(json.dumps(value, ensure_ascii=False)))

    def _end_call(self, pieces: list[Piece]) -> None:
        pieces += [CallInput("}"), CallEnd()]
        self.calls += 1
        self.raw = ""

    def _mismatch(self, pieces: list[Piece]) -> bool:
        """The tags went wrong: before the name, it was text after all; inside a call, the call ends here."""
        if self.state in ("opening", "name"):
            pieces += self._text(self.raw)
        elif self.state in ("key", "key_end"):
            if self.state == "key_end":  # a key without its value: give it an empty one
                pieces.append(CallInput('"' if self.text_value else '""'))
            self._end_call(pieces)
        elif self.state == "params":
            self._end_call(pieces)
        self.raw, self.expected, self.state = "", [], "text"
        return True

    def flush(self) -> list[Piece]:
        """The end of the output: held-back text is text, and a call cut short is closed (valid JSON)."""
        pieces: list[Piece] = []
        rest, self.buffer = self.buffer, ""
        if self.state == "text":
            pieces += self._text(rest)
        elif self.state in ("opening", "name"):
            pieces += self._text(self.raw + rest)
        elif self.state in ("value", "value_start"):
            if self.syntax.trim_newlines and self.state == "value_start" and rest.startswith("\n"):
                rest = rest[1:]
            self._add_value(rest, pieces)
            self._close_value(pieces)
            self._end_call(pieces)
        elif self.state == "key_end":
            pieces.append(CallInput('"' if self.text_value else '""'))
            self._end_call(pieces)
        elif self.state in ("params", "key"):
            self._end_call(pieces)
        self.state = "text"
        return pieces


# --- values, read by the schema -------------------------------------------------------------------


def resolve(schema: object, root: dict) -> dict:
    """`schema` with a local `$ref` (`#/$defs/x`) followed, a few levels at most; {} where it leads nowhere."""
    for _ in range(8):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            break
        target: object = root
        for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
            target = target.get(part) if isinstance(target, dict) and part else target if not part else None
        schema = target
    return schema if isinstance(schema, dict) else {}


def _property(schema: dict, key: str) -> dict | None:
    properties = resolve(schema, schema).get("properties")
    found = properties.get(key) if isinstance(properties, dict) else None
    return resolve(found, schema) if isinstance(found, dict) else None


def types(schema: dict | None, root: dict, depth: int = 0) -> set[str]:
    """The JSON types a schema allows, as far as it says (empty: it does not say)."""
    if not schema or depth > 8:
        return set()
    schema = resolve(schema, root)
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    found = {k for k in kinds if isinstance(k, str)}
    for value in [*schema.get("enum", []), *([schema["const"]] if "const" in schema else [])]:
        found.add(_json_type(value))
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key) or []:
            if isinstance(member, dict):
                found |= types(member, root, depth + 1)
    return found


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "string")


def is_text(schema: dict | None, root: dict) -> bool:
    """Whether a value is taken as written: string parameters, and those whose type the schema does not say."""
    return types(schema, root) <= {"string"}


def coerce(raw: str, schema: dict | None, root: dict) -> object:
    """A raw value as its schema reads it; the text itself when it is none of the schema's types."""
    allowed = types(schema, root)
    if allowed <= {"string"}:
        return raw
    text = raw.strip()
    lowered = text.lower()
    if "null" in allowed and lowered in ("null", "none"):
        return None
    if "boolean" in allowed and lowered in ("true", "false"):
        return lowered == "true"
    if allowed & {"integer", "number"}:
        if re.fullmatch(r"-?\d{1,4000}", text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return int(number) if number.is_integer() and "integer" in allowed else number
    if allowed & {"object", "array"}:
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if _json_type(value) in allowed and _is_json(value):
                return value
    return raw


def _is_json(value: object, depth: int = 0) -> bool:
    """A literal_eval result that JSON can write (no tuples, sets, bytes, non-string keys)."""
    if depth > 64:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def parser_for(syntax: ToolFormat, tools: list[ToolSpec]) -> Splitter:
    """The parser of a model's call syntax; tagged formats read their untyped values by the tools' schemas.

    Every parser gives the same pieces, so the scheduler needs no other interface.
    """
    if isinstance(syntax, HarmonySyntax):
        return HarmonyParser(tools)
    if isinstance(syntax, CallSyntax):
        return CallListParser(syntax) if syntax.before else CallParser(syntax)
    return TaggedCallParser(syntax, tools)
