"""Mistral's older tool calls (tokenizers v3 and v7: Mistral 7B v0.3, Nemo, Small 3/3.1, Large 2): one JSON list
of every call of the turn, `[TOOL_CALLS] [{"name": N, "arguments": {...}}, {...}]`.

The list's objects are read key by key. A call starts when its name is known; its arguments stream as they
come when the name comes first (as the model and the grammar write it); when they come first (the history,
rendered with a `tojson` that sorts keys, shows `arguments` before `name`) they are held until the name
shows. Other keys (the `id` the templates add) are skipped, and arguments written as a JSON string of an
object are read as that object. The pieces are those of `CallParser`; whatever the model writes, each
call's input is valid JSON or (cut short) left for the wire to read as `{}`.
"""

from __future__ import annotations

import json

from missive.engines.local.toolcalls import (
    CallEnd,
    CallInput,
    CallStart,
    JsonEnd,
    Piece,
    StepParser,
    held,
)
from missive.engines.prompt import CallSyntax

MAX_KEY = 256  # a key longer than this is no key of a call


def _arguments(raw: str) -> str:
    """Held arguments as the call's input: an object as written, or the object inside a JSON string."""
    try:
        value = json.loads(raw)
        if isinstance(value, str):
            value = json.loads(value)
    except (ValueError, RecursionError):
        return "{}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else "{}"


class CallListParser(StepParser):
    def __init__(self, syntax: CallSyntax) -> None:
        self.marker = syntax.trigger  # [TOOL_CALLS]
        self.buffer = ""
        self.state = "text"  # text -> list_open -> list -> key -> colon -> value_start -> value -> key ... -> list
        self.calls = 0
        self.raw = ""  # consumed after the marker before the list opened: text again if no list follows
        self._new_object()

    def _new_object(self) -> None:
        self.name: str | None = None
        self.held: str | None = None  # arguments that came before the name
        self.started = False  # CallStart sent
        self.has_input = False  # the call's input sent (streamed or held)
        self.key = ""
        self.value = JsonEnd(scalars=True)
        self.value_text = ""
        self.streaming = False

    @property
    def in_call(self) -> bool:
        return self.state != "text"

    def _step(self, pieces: list[Piece]) -> bool:
        if self.state == "text":
            at = self.buffer.find(self.marker)
            if at == -1:
                keep = held(self.buffer, self.marker)
                emit = self.buffer[: len(self.buffer) - keep]
                if self.calls and not emit.strip():
                    return False
                pieces += self._text(emit)
                self.buffer = self.buffer[len(emit) :]
                return False
            pieces += self._text(self.buffer[:at])
            self.buffer, self.raw, self.state = self.buffer[at + len(self.marker) :], self.marker, "list_open"
            return True
        rest = self.buffer.lstrip()
        if self.state != "value" and not rest:
            return False
        if self.state == "list_open":
            if rest[0] != "[":  # no list after the marker: text after all
                pieces += self._text(self.raw + self.buffer)
                self.buffer, self.state = "", "text"
                return False
            self.buffer, self.state = rest[1:], "list"
        elif self.state == "list":
            if rest[0] == ",":
                self.buffer = rest[1:]
            elif rest[0] == "{":
                self.buffer, self.state = rest[1:], "key"
                self._new_object()
            else:  # `]`, or anything else: the list ends here
                self.buffer, self.state = rest[1:] if rest[0] == "]" else rest, "text"
        elif self.state == "key":
            if rest[0] == ",":
                self.buffer = rest[1:]
            elif rest[0] == "}":
                self.buffer = rest[1:]
                self._end_object(pieces)
            elif rest[0] == '"':
                scan = JsonEnd(scalars=True)
                end = scan.end(rest)
                if end is None:
                    if len(rest) > MAX_KEY:
                        return self._give_up(pieces)
                    return False
                self.key, self.buffer, self.state = json.loads(rest[:end]), rest[end:], "colon"
            else:
                return self._give_up(pieces)
        elif self.state == "colon":
            if rest[0] != ":":
                return self._give_up(pieces)
            self.buffer, self.state = rest[1:], "value_start"
        elif self.state == "value_start":
            self.value, self.value_text = JsonEnd(scalars=True), ""
            self.streaming = self.key == "arguments" and self.started and not self.has_input and rest[0] == "{"
            self.buffer, self.state = rest, "value"
        else:  # value
            return self._value(pieces)
        return True

    def _value(self, pieces: list[Piece]) -> bool:
        end = self.value.end(self.buffer)
        chunk = self.buffer if end is None else self.buffer[:end]
        self.buffer = "" if end is None else self.buffer[end:]
        if self.streaming:
            if chunk:
                pieces.append(CallInput(chunk))
        else:
            self.value_text += chunk
        if end is None:
            return False
        self.state = "key"
        if self.streaming:
            self.has_input = True
        elif self.key == "name":
            try:
                name = json.loads(self.value_text)
            except ValueError:
                name = None
            if isinstance(name, str) and not self.started:
                self.name, self.started = name, True
                pieces.append(CallStart(name))
                if self.held is not None:
                    pieces.append(CallInput(_arguments(self.held)))
                    self.has_input = True
        elif self.key == "arguments" and not self.has_input:
            if self.started:
                pieces.append(CallInput(_arguments(self.value_text)))
                self.has_input = True
            else:
                self.held = self.value_text
        return True

    def _end_object(self, pieces: list[Piece], then: str = "list") -> None:
        """The object ends: so does its call, if one started (an input not yet seen is `{}`)."""
        if self.started:
            if not self.has_input:
                pieces.append(CallInput("{}"))
            pieces.append(CallEnd())
            self.calls += 1
        self._new_object()
        self.state = then

    def _give_up(self, pieces: list[Piece]) -> bool:
        """The list went wrong: a call under way ends here, and the rest is text."""
        self._end_object(pieces, then="text")
        return True

    def flush(self) -> list[Piece]:
        """The end of the output: held-back text is text; a call cut short ends (its input maybe incomplete)."""
        pieces: list[Piece] = []
        rest, self.buffer = self.buffer, ""
        if self.state == "text":
            pieces += self._text(rest)
        elif self.state == "list_open":
            pieces += self._text(self.raw + rest)
        elif self.started:
            if self.streaming and self.state == "value":
                pieces += [CallInput(rest)] if rest else []
            elif not self.has_input:
                pieces.append(CallInput("{}"))
            pieces.append(CallEnd())
            self.calls += 1
        self.state = "text"
        self._new_object()
        return pieces
