"""Loop control inside constrained JSON, so that a forced tool call or structured output ends.

Under a grammar a small model can fall into a loop that the grammar cannot stop: the same bytes again
and again inside a string value (`"file_path": "a.json.json.json...`), or the same item again and again
in an array, until max_tokens. Every token is valid, so the grammar lets it run; the JSON never ends.

`LoopGuard` follows the bytes of one sequence's constrained JSON values with a small lexer (strings,
objects, arrays). When the end of a value has become periodic, the same unit of at most `MAX_PERIOD`
bytes repeated at least `MIN_REPEATS` times over at least `MIN_SPAN` bytes, it has found a loop, and
the level that loops: the innermost string, array or object that the whole repetition stays inside.
It then steers the sampler to close that level: the next tokens are sampled, with the request's own
sampling, among the tokens that only close levels (`"`, `"}`, `]`, ...) and that the grammar allows.
When the grammar allows none of them yet (a required property is missing, an enum is not complete),
the token is sampled as usual, and the closing goes on at the next token. Every token still passes
the grammar, so the input stays valid under its schema; only a repetition is cut short.

The same holds one level up, for calls. Where parallel calls are allowed, a call whose input equals
the previous call's is the model repeating itself too (parallel calls do different things at once),
and a model that had to be stopped looping inside a call starts the next call the same way. So after
either, the turn ends: the end-of-generation token is chosen as soon as the grammar allows it.

Only bytes inside a constrained JSON value are watched: plain text, and text before a lazy grammar
wakes, are never touched. The guard is state of one sequence, fed only that sequence's tokens, so its
output is the same alone or batched with others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np

MAX_PERIOD = 256  # bytes in the repeating unit: a sentence or two
MIN_REPEATS = 3
MIN_SPAN = 96  # bytes of repetition, whatever the unit: a run of 95 spaces or '=' is still content
_PERIODS = np.arange(1, MAX_PERIOD + 1)
_NEEDED = np.maximum(MIN_REPEATS * _PERIODS, MIN_SPAN) - _PERIODS  # matching bytes that make a loop, by period
_HISTORY = 4 * MAX_PERIOD * MIN_REPEATS

QUOTE, BACKSLASH = ord('"'), ord("\\")
OPENERS, CLOSERS = b"{[", b"}]"
WHITESPACE = b" \t\n\r"


def closing_tokens(n_vocab: int, piece: Callable[[int], bytes]) -> list[int]:
    """The tokens that can only close levels: whitespace and `"`, `}`, `]`, with at least one of these."""
    allowed, blank = set(WHITESPACE + b'"' + CLOSERS), set(WHITESPACE)
    return [token for token in range(n_vocab) if (data := set(piece(token))) and data <= allowed and data - blank]


class LoopGuard:
    def __init__(
        self,
        json_after: tuple[str, ...],
        piece: Callable[[int], bytes],
        closers: Sequence[int],
        ends: Sequence[int],
    ) -> None:
        self.markers = [marker.encode() for marker in json_after]
        self.piece = piece
        self.closers = closers
        self.ends = ends  # end-of-generation tokens
        self.value = bytearray()  # the value being written
        self.previous: object = None  # the last complete value, parsed
        self.last_call = False  # a loop was cut, or a value equals the one before it: no more calls
        self.found = 0  # markers found before the next value; all of them: inside a value
        self.tail = b""  # the last bytes written while looking for the next marker
        self.stack = bytearray()  # the open levels: '{', '[' or '"'
        self.escape = False  # inside a string, after a backslash
        self.started = False  # the value's first byte is written
        self.repeats = _Repeats()
        self.target: int | None = None  # steering: close levels until the depth is below this

    @property
    def in_value(self) -> bool:
        return self.found == len(self.markers)

    def steer(self) -> list[int] | None:
        """The tokens to sample the next one among (those of them that the grammar allows), or None: all."""
        if self.target is not None:
            return self.closing()
        if self.last_call and not self.in_value:
            return list(self.ends)
        return None

    def feed(self, token: int) -> None:
        """A token of the output (sampled or written for the model)."""
        for byte in self.piece(token):
            if self.in_value:
                self._value_byte(byte)
            else:
                marker = self.markers[self.found]
                self.tail = (self.tail + bytes([byte]))[-len(marker) :]
                if self.tail == marker:
                    self.found, self.tail = self.found + 1, b""
        if self.target is not None and len(self.stack) < self.target:
            self._reset_loop()  # the looping level is closed
        elif self.target is None and self.in_value:
            self.target = self.repeats.looping_depth()
            self.last_call = self.last_call or self.target is not None

    def closing(self) -> list[int]:
        """The tokens that would close the innermost open level, opening nothing."""
        return [token for token in self.closers if self._closes(self.piece(token))]

    def _value_byte(self, byte: int) -> None:
        stack = self.stack
        if stack and stack[-1] == QUOTE:
            if self.escape:
                self.escape = False
            elif byte == BACKSLASH:
                self.escape = True
            elif byte == QUOTE:
                stack.pop()
        elif byte in OPENERS or byte == QUOTE:
            stack.append(byte)
        elif byte in CLOSERS and stack:
            stack.pop()
        if byte not in WHITESPACE:
            self.started = True
        self.value.append(byte)
        self.repeats.push(byte, len(stack))
        if self.started and not stack:  # the value is complete: look for the next call's header
            self.found, self.started = (0, False) if self.markers else (self.found, True)
            self._reset_loop()
            value = _parsed(bytes(self.value))
            self.last_call = self.last_call or (value is not None and value == self.previous)
            self.previous, self.value = value, bytearray()

    def _reset_loop(self) -> None:
        self.target = None
        self.repeats = _Repeats()

    def _closes(self, data: bytes) -> bool:
        stack, depth = bytearray(self.stack), len(self.stack)
        for byte in data:
            if stack and stack[-1] == QUOTE:  # a string closes at once: no more of its content
                if byte != QUOTE or self.escape:
                    return False
                stack.pop()
            elif byte in OPENERS or byte == QUOTE:
                return False
            elif byte in CLOSERS:
                if not stack or stack[-1] != OPENERS[CLOSERS.index(byte)]:
                    return False
                stack.pop()
        return len(stack) < depth


class _Repeats:
    """The periodic end of a byte stream, for every period up to MAX_PERIOD, updated byte by byte."""

    def __init__(self) -> None:
        self.bytes = np.zeros(_HISTORY, np.uint8)
        self.depths = np.zeros(_HISTORY, np.int32)  # the depth after each byte
        self.size = 0
        self.matches = np.zeros(MAX_PERIOD, np.int64)  # [p - 1]: trailing bytes equal to the byte p before them

    def push(self, byte: int, depth: int) -> None:
        if self.size == _HISTORY:  # keep the newer half: more than any loop needs to be found
            half = _HISTORY // 2
            self.bytes[:half], self.depths[:half] = self.bytes[half:], self.depths[half:]
            self.size = half
        n = self.size
        k = min(MAX_PERIOD, n)
        if k:
            same = self.bytes[n - k : n][::-1] == byte  # the byte 1, 2, ... k before this one
            self.matches[:k] = np.where(same, self.matches[:k] + 1, 0)
        self.bytes[n], self.depths[n] = byte, depth
        self.size = n + 1

    def looping_depth(self) -> int | None:
        """The depth of the innermost level that the repetition at the end stays inside, if there is one."""
        loops = np.flatnonzero(self.matches >= _NEEDED)
        if not loops.size:
            return None
        run = min(int(self.matches[loops[0]]) + int(loops[0]) + 1, self.size)
        return max(1, int(self.depths[self.size - run : self.size].min()))


def _parsed(value: bytes) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return None
