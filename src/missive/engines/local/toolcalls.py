"""Splits streamed model output into text and tool calls written in the model's `CallSyntax`.

Text that could still turn out to be the start of a call is held back until it is known, so a client
never sees a piece of the call syntax; the call's JSON streams as it comes. A call's input ends where
its JSON value ends (the grammar writes the closing syntax right after it), not at the first closing
marker: a string value may well contain `</tool_call>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from missive.engines.prompt import CallSyntax


@dataclass
class Text:
    text: str


@dataclass
class CallStart:
    name: str


@dataclass
class CallInput:
    json: str


@dataclass
class CallEnd:
    pass


Piece = Text | CallStart | CallInput | CallEnd


class Splitter(Protocol):
    """What the scheduler uses of a call parser, whatever the format."""

    calls: int  # calls ended so far

    def feed(self, text: str) -> list[Piece]: ...

    def flush(self) -> list[Piece]: ...


MAX_HEADER = 512  # a call's header (its name) longer than this is no call


def held(buffer: str, marker: str) -> int:
    """Length of the longest end of `buffer` that begins `marker`."""
    for size in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:size]):
            return size
    return 0


class JsonEnd:
    """Finds where one JSON value ends in text that arrives piece by piece. With `scalars`, a value that is
    not an object, array or string (a number, true, false, null) ends before the `,` `}` `]` or blank
    after it."""

    def __init__(self, scalars: bool = False) -> None:
        self.open: list[str] = []  # '{', '[' or '"'
        self.escape = False
        self.started = False
        self.scalars = scalars
        self.scalar = False

    def end(self, text: str) -> int | None:
        """The index in `text` just after the value's last character, once it is complete."""
        for index, char in enumerate(text):
            if not self.started:
                if char.isspace():
                    continue
                self.started, self.scalar = True, self.scalars and char not in '{["'
            if self.scalar:
                if char in ",}]" or char.isspace():
                    return index
                continue
            if self.open and self.open[-1] == '"':
                if self.escape:
                    self.escape = False
                elif char == "\\":
                    self.escape = True
                elif char == '"':
                    self.open.pop()
            elif char in '{["':
                self.open.append(char)
            elif char in "}]" and self.open:
                self.open.pop()
            if not self.open and char in '}]"':
                return index + 1
        return None


def stream_input(value: JsonEnd, buffer: str, pieces: list[Piece]) -> str | None:
    """Stream the JSON value at the start of `buffer` as `CallInput` pieces, and a `CallEnd` once it is
    complete; returns what follows the value, or None while it goes on (all of `buffer` was used)."""
    end = value.end(buffer)
    emit = buffer if end is None else buffer[:end]
    if emit:
        pieces.append(CallInput(emit))
    if end is None:
        return None
    pieces.append(CallEnd())
    return buffer[end:]


class StepParser:
    """A parser that advances one state at a time (`_step`) over its `buffer`; `calls` counts the calls
    it ended. Blanks between calls are no text."""

    buffer: str
    calls: int

    def _step(self, pieces: list[Piece]) -> bool:
        """Advance by one state; False when more output is needed."""
        raise NotImplementedError

    def _text(self, text: str) -> list[Piece]:
        return [Text(text)] if text and (self.calls == 0 or text.strip()) else []

    def feed(self, text: str) -> list[Piece]:
        self.buffer += text
        pieces: list[Piece] = []
        while self._step(pieces):
            pass
        return pieces


class CallParser:
    """Calls whose input is JSON (`CallSyntax`: Missive's own, Hermes)."""

    def __init__(self, syntax: CallSyntax) -> None:
        self.syntax = syntax
        self.buffer = ""
        self.state = "text"  # text -> header -> input -> close -> text ...
        self.calls = 0
        self.value = JsonEnd()

    @property
    def in_call(self) -> bool:
        return self.state != "text"

    def feed(self, text: str) -> list[Piece]:
        self.buffer += text
        pieces: list[Piece] = []
        opening, name_end, closing = self.syntax.open, self.syntax.name_end, self.syntax.close
        while True:
            if self.state == "text":
                at = self.buffer.find(opening)
                if at == -1:
                    keep = held(self.buffer, opening)
                    emit, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
                    if emit and (self.calls == 0 or emit.strip()):
                        pieces.append(Text(emit))
                    return pieces
                before = self.buffer[:at]
                if before and (self.calls == 0 or before.strip()):
                    pieces.append(Text(before))
                self.buffer, self.state = self.buffer[at + len(opening) :], "header"
            elif self.state == "header":
                end = self.buffer.find(name_end)
                if end == -1:
                    if len(self.buffer) > MAX_HEADER:  # no name after all: text
                        pieces.append(Text(opening + self.buffer))
                        self.buffer, self.state = "", "text"
                        continue
                    return pieces
                # Mistral v11+ may write `[CALL_ID]id` between the name and `[ARGS]`
                pieces.append(CallStart(self.buffer[:end].partition("[CALL_ID]")[0].strip()))
                self.buffer, self.state, self.value = self.buffer[end + len(name_end) :], "input", JsonEnd()
            elif self.state == "input":
                rest = stream_input(self.value, self.buffer, pieces)
                self.buffer = rest or ""
                if rest is None:
                    return pieces
                self.calls += 1
                self.state = "close"
            else:  # the closing syntax after the value (and the spaces the grammar allows before it)
                rest = self.buffer.lstrip(" ")
                if closing.startswith(rest):
                    return pieces
                self.buffer = rest[len(closing) :] if rest.startswith(closing) else rest
                self.state = "text"

    def flush(self) -> list[Piece]:
        """The end of the output: what was held back is text (or the rest of an unfinished call)."""
        rest, self.buffer = self.buffer, ""
        if self.state == "text":
            return [Text(rest)] if rest and (self.calls == 0 or rest.strip()) else []
        if self.state == "input":
            return ([CallInput(rest)] if rest else []) + [CallEnd()]
        if self.state == "header":  # no call after all (or one cut short before its name ended): text
            return [Text(self.syntax.open + rest)]
        return []  # the closing syntax
