"""Constrained output, piece by piece: loop control inside constrained JSON (`repetition.LoopGuard`, on
a vocabulary of a few pieces) and where a streamed call ends (`toolcalls.CallParser`).

Their effect on the real model is tested end to end in test_tools.py (forced calls finish); here their
decisions are checked one by one: when the guard steers, towards which tokens, and when it never does.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from missive.engines.local.grammar import integer_range
from missive.engines.local.repetition import LoopGuard, closing_tokens
from missive.engines.local.toolcalls import CallEnd, CallInput, CallParser, CallStart, Text
from missive.engines.prompt import HERMES_CALLS, MISSIVE_CALLS, CallSyntax

PIECES = ['<tool_call name="', "Read", '">', "{", '"path"', ": ", '"a', ".json", '"', "}", "</tool_call>",
          '"}', ", ", "[", "]", '{"x": 1}', ' "', '}"', "<end>", "ab", "\n"]  # fmt: skip
END = PIECES.index("<end>")


def token(piece: str) -> int:
    return PIECES.index(piece)


def guard(json_after: tuple[str, ...] = (MISSIVE_CALLS.open, MISSIVE_CALLS.name_end)) -> LoopGuard:
    def piece(t: int) -> bytes:
        return b"" if t == END else PIECES[t].encode()

    return LoopGuard(json_after, piece, closing_tokens(len(PIECES), piece), [END])


def feed(g: LoopGuard, *pieces: str) -> None:
    for piece in pieces:
        g.feed(token(piece))


def names(tokens: list[int] | None) -> list[str] | None:
    return None if tokens is None else [PIECES[t] for t in tokens]


CALL = ['<tool_call name="', "Read", '">', "{", '"path"', ": "]


def test_a_loop_inside_a_string_is_closed_by_a_closing_quote() -> None:
    g = guard()
    feed(g, *CALL, '"a')
    repeats = 0
    while g.steer() is None:
        feed(g, ".json")
        repeats += 1
    assert repeats == 20  # 96 bytes of ".json" after the first
    assert names(g.steer()) == ['"', '"}']  # `}` or ` "` would be string content, not a close
    feed(g, '"}')
    assert not g.in_value and names(g.steer()) == ["<end>"]  # a call that looped is the last one


def test_short_repetitions_and_plain_text_are_left_alone() -> None:
    g = guard()
    feed(g, *CALL, '"a', *[".json"] * 10)  # 50 bytes: content
    assert g.steer() is None
    text = guard()
    feed(text, *["ab"] * 200, '">', *['"a'] * 100)  # no call header: not a constrained value
    assert text.steer() is None and not text.in_value


def test_a_repeating_array_item_closes_the_array() -> None:
    g = guard(())  # structured output: the whole output is one JSON value
    feed(g, "{", '"path"', ": ", "[")
    while g.steer() is None:
        feed(g, '{"x": 1}', ", ")
    assert names(g.steer()) == ["]"]  # not "}": that would close the object, not the array
    feed(g, '{"x": 1}')  # (after ", " the grammar refuses "]": the sampler then samples as usual)
    assert names(g.steer()) == ["]"]
    feed(g, "]")
    assert g.steer() is None and g.in_value


def test_a_repeated_call_ends_the_turn_a_different_one_does_not() -> None:
    g = guard()
    feed(g, *CALL, '"a', '"}', "</tool_call>", "\n")
    feed(g, *CALL, '"', '"}', "</tool_call>", "\n")  # another input: parallel calls go on
    assert g.steer() is None
    feed(g, *CALL, '"', '"}')
    assert names(g.steer()) == ["<end>"]  # the same input again: the turn ends once the grammar allows it


def split_calls(syntax: CallSyntax, output: str, size: int) -> tuple[str, list[str], list[dict]]:
    """Feed `output` to a CallParser `size` characters at a time: (the text, call names, call inputs)."""
    parser = CallParser(syntax)
    pieces = [p for at in range(0, len(output), size) for p in parser.feed(output[at : at + size])] + parser.flush()
    inputs, current = [], ""
    for piece in pieces:
        if isinstance(piece, CallInput):
            current += piece.json
        elif isinstance(piece, CallEnd):
            inputs.append(json.loads(current))
            current = ""
    text = "".join(p.text for p in pieces if isinstance(p, Text))
    return text, [p.name for p in pieces if isinstance(p, CallStart)], inputs


@pytest.mark.parametrize("syntax", [MISSIVE_CALLS, HERMES_CALLS])
@pytest.mark.parametrize("size", [1, 3, 8])
def test_a_call_ends_where_its_json_ends_not_at_a_closing_tag_inside_a_string(syntax: CallSyntax, size: int) -> None:
    inputs = [{"note": f"a {syntax.close} b", "n": 1}, {"q": "\\\"}"}]
    output = "Sure." + "\n".join(syntax.text("Read", value) for value in inputs) + "\n"
    text, names, calls = split_calls(syntax, output, size)
    assert names == ["Read", "Read"]
    assert calls == inputs and text == "Sure."


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 9007199254740991), (1, 9007199254740991), (5, 1234), (None, 17), (-45, 300), (-1000, -7), (3, None),
     (-20, None), (0, 0), (99, 101)],
)  # fmt: skip
def test_integer_ranges_are_exact(low: int | None, high: int | None) -> None:
    """The GBNF of a range, read as a regular expression, takes exactly the integers in it (no leading zeros)."""
    gbnf = integer_range(low, high).replace('"', "").replace(" ", "")
    pattern = re.compile(f"^({gbnf})$")
    first = low if low is not None else -10**6
    last = high if high is not None else 10**6
    rng = random.Random(0)
    for value in [first - 1, first, last, last + 1, *(rng.randint(first - 50, last + 50) for _ in range(2000))]:
        inside = (low is None or value >= low) and (high is None or value <= high)
        assert bool(pattern.match(str(value))) == inside, value
    assert not pattern.match("007")
