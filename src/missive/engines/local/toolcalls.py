"""Splits streamed model output into text and tool calls written `<tool_call name="X">{...}</tool_call>`.

Text that could still turn out to be the start of a call (or of its end) is held back until it is
known, so a client never sees a piece of the call syntax; the call's JSON streams as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass

from missive.engines.prompt import CALL_CLOSE, CALL_OPEN


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
    def __init__(self) -> None:
        self.buffer = ""
        self.state = "text"  # text -> header -> input -> text ...
        self.calls = 0

    @property
    def in_call(self) -> bool:
        return self.state != "text"

    def feed(self, text: str) -> list[Piece]:
        self.buffer += text
        pieces: list[Piece] = []
        while True:
            if self.state == "text":
                at = self.buffer.find(CALL_OPEN)
                if at == -1:
                    keep = _held(self.buffer, CALL_OPEN)
                    emit, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
                    if emit and (self.calls == 0 or emit.strip()):
                        pieces.append(Text(emit))
                    return pieces
                before = self.buffer[:at]
                if before and (self.calls == 0 or before.strip()):
                    pieces.append(Text(before))
                self.buffer, self.state = self.buffer[at + len(CALL_OPEN) :], "header"
            elif self.state == "header":
                end = self.buffer.find('">')
                if end == -1:
                    return pieces
                pieces.append(CallStart(self.buffer[:end]))
                self.buffer, self.state = self.buffer[end + 2 :], "input"
            else:
                at = self.buffer.find(CALL_CLOSE)
                if at == -1:
                    keep = _held(self.buffer, CALL_CLOSE)
                    emit, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
                    if emit:
                        pieces.append(CallInput(emit))
                    return pieces
                if at:
                    pieces.append(CallInput(self.buffer[:at]))
                pieces.append(CallEnd())
                self.calls += 1
                self.buffer, self.state = self.buffer[at + len(CALL_CLOSE) :], "text"

    def flush(self) -> list[Piece]:
        """The end of the output: what was held back is text (or the rest of an unfinished call)."""
        rest, self.buffer = self.buffer, ""
        if self.state == "text":
            return [Text(rest)] if rest and (self.calls == 0 or rest.strip()) else []
        if self.state == "input":
            return ([CallInput(rest)] if rest else []) + [CallEnd()]
        return []
