"""Splits streamed model output into text and tool calls written in the model's `CallSyntax`.

Text that could still turn out to be the start of a call (or of its end) is held back until it is
known, so a client never sees a piece of the call syntax; the call's JSON streams as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _held(buffer: str, marker: str) -> int:
    """Length of the longest end of `buffer` that begins `marker`."""
    for size in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:size]):
            return size
    return 0


class CallParser:
    def __init__(self, syntax: CallSyntax) -> None:
        self.syntax = syntax
        self.buffer = ""
        self.state = "text"  # text -> header -> input -> text ...
        self.calls = 0

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
                    keep = _held(self.buffer, opening)
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
                    return pieces
                pieces.append(CallStart(self.buffer[:end]))
                self.buffer, self.state = self.buffer[end + len(name_end) :], "input"
            else:
                at = self.buffer.find(closing)
                if at == -1:
                    keep = _held(self.buffer, closing)
                    emit, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
                    if emit:
                        pieces.append(CallInput(emit))
                    return pieces
                if at:
                    pieces.append(CallInput(self.buffer[:at]))
                pieces.append(CallEnd())
                self.calls += 1
                self.buffer, self.state = self.buffer[at + len(closing) :], "text"

    def flush(self) -> list[Piece]:
        """The end of the output: what was held back is text (or the rest of an unfinished call)."""
        rest, self.buffer = self.buffer, ""
        if self.state == "text":
            return [Text(rest)] if rest and (self.calls == 0 or rest.strip()) else []
        if self.state == "input":
            return ([CallInput(rest)] if rest else []) + [CallEnd()]
        return []
