"""gpt-oss's harmony format: the output is a sequence of messages, each `<|start|>assistant` HEADER
`<|message|>` BODY and an end (`<|end|>`, `<|call|>` or `<|return|>`). The header names the channel and
maybe a recipient:

    <|channel|>analysis<|message|>reasoning...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>
    <|start|>assistant<|channel|>final<|message|>the answer<|return|>

`final` messages, and `commentary` ones without a recipient (preambles the user may see), are text; a
message to `functions.NAME` is a call whose body is its JSON input (the recipient may also stand before the
channel: `<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>`, as the template
renders history); `analysis` messages are reasoning. The first analysis message is the thinking block,
split off before this parser by `ThinkingSplitter` (thinking.py); any later one is not shown as text (the
upstream bug is reasoning leaking into the answer). Text that is not in harmony's shape is text.
`<|call|>` and `<|return|>` are end-of-generation tokens, so the engine stops there.
"""

from __future__ import annotations

import re

from missive.engines.local.toolcalls import (
    CallEnd,
    CallInput,
    CallStart,
    JsonEnd,
    Piece,
    StepParser,
    held,
    stream_input,
)
from missive.engines.prompt import ToolSpec

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
ENDS = (END, CALL, RETURN, START)  # a body ends at its end tag, or (the end left out) at the next start
HEADER_STARTS = (START, CHANNEL, "to=", CONSTRAIN)
MAX_HEADER = 512
_RECIPIENT = re.compile(r"(?:^|\s|>)to=functions\.([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")
_ROLE = re.compile(re.escape(START) + r"\s*([^\s<]+)")


class HarmonyParser(StepParser):
    def __init__(self, tools: list[ToolSpec]) -> None:
        self.names = {tool.name for tool in tools}
        self.buffer = ""
        self.state = "header"  # header -> body -> (after_call) -> header ...
        self.kind = "text"  # the body's: "text", "hidden" (reasoning) or "call"
        self.calls = 0
        self.value = JsonEnd()
        self.pending_call: str | None = None  # a call's name, until its body shows it is JSON

    @property
    def in_call(self) -> bool:
        return self.kind == "call" and self.state != "header"

    def _step(self, pieces: list[Piece]) -> bool:
        if self.state == "header":
            return self._header(pieces)
        if self.state == "after_call":
            rest = self.buffer.lstrip()
            for tag in (CALL, END, RETURN):
                if rest.startswith(tag):
                    self.buffer, self.state = rest[len(tag) :], "header"
                    return True
            if any(tag.startswith(rest) for tag in (CALL, END, RETURN)):
                return False
            self.buffer, self.state = rest, "header"
            return True
        if self.kind == "call":
            return self._call(pieces)
        found = [(at, tag) for tag in ENDS if (at := self.buffer.find(tag)) != -1]
        if not found:
            keep = max(held(self.buffer, tag) for tag in ENDS)
            emit = self.buffer[: len(self.buffer) - keep]
            if self.kind == "text" and self.calls and not emit.strip():
                return False
            if self.kind == "text":
                pieces += self._text(emit)
            self.buffer = self.buffer[len(emit) :]
            return False
        at, tag = min(found)
        if self.kind == "text":
            pieces += self._text(self.buffer[:at])
        self.buffer = self.buffer[at:] if tag == START else self.buffer[at + len(tag) :]
        self.state = "header"
        return True

    def _header(self, pieces: list[Piece]) -> bool:
        rest = self.buffer.lstrip()
        if not rest:
            return False
        if not rest.startswith(HEADER_STARTS):
            if any(start.startswith(rest) for start in HEADER_STARTS):
                return False
            self.state, self.kind = "body", "text"  # not harmony's shape: text
            return True
        at = rest.find(MESSAGE)
        stray = [i for tag in (END, CALL, RETURN) if (i := rest.find(tag)) != -1 and (at == -1 or i < at)]
        if stray or (at == -1 and len(rest) > MAX_HEADER):  # no header after all: text up to there
            cut = min(stray) if stray else len(rest)
            pieces += self._text(rest[:cut])
            self.buffer = rest[cut:]
            if stray:
                self.buffer = self.buffer[next(len(t) for t in (END, CALL, RETURN) if self.buffer.startswith(t)) :]
            return True
        if at == -1:
            return False
        header, self.buffer, self.state = rest[:at], rest[at + len(MESSAGE) :], "body"
        role = _ROLE.match(header)
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        if role and role.group(1) != "assistant":
            self.kind = "text"  # another role's message (only in a prompt, never in output)
        elif recipient and recipient.group(1) in self.names:  # no tools (tool_choice none): no calls
            self.kind, self.pending_call = "call", recipient.group(1)
        elif channel and channel.group(1) == "analysis":
            self.kind = "hidden"
        else:
            self.kind = "text"
        return True

    def _call(self, pieces: list[Piece]) -> bool:
        if self.pending_call is not None:  # the body must be JSON; otherwise it is text
            rest = self.buffer.lstrip()
            if not rest:
                return False
            if rest[0] != "{":
                self.kind, self.pending_call = "text", None
                return True
            pieces += [CallStart(self.pending_call)]
            self.buffer, self.pending_call, self.value = rest, None, JsonEnd()
        rest = stream_input(self.value, self.buffer, pieces)
        self.buffer = rest or ""
        if rest is None:
            return False
        self.calls += 1
        self.state, self.kind = "after_call", "text"
        return True

    def flush(self) -> list[Piece]:
        """The end of the output: held text is text; a call cut short ends (its input maybe incomplete)."""
        pieces: list[Piece] = []
        rest, self.buffer = self.buffer, ""
        if self.state == "header":  # a header cut short is syntax, not text
            pieces += [] if rest.lstrip().startswith(HEADER_STARTS) else self._text(rest)
        elif self.state == "body" and self.kind == "text":
            pieces += self._text(rest)
        elif self.state == "body" and self.kind == "call" and self.pending_call is None:
            pieces += [*([CallInput(rest)] if rest else []), CallEnd()]
            self.calls += 1
        self.state, self.kind = "header", "text"
        return pieces
