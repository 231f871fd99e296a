"""Unit tests of the pure parts: stop matching, settings precedence, registry, events -> wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from missive.engines.local.stops import StopMatcher
from missive.engines.registry import Registry
from missive.settings import load_settings
from missive.wire.errors import ApiError
from missive.wire.events import BlockStart, BlockStop, Delta, Finished, Started, Usage
from missive.wire.messages import MessageBuilder
from missive.wire.models import ListQuery, ModelCard, paginate


@pytest.mark.parametrize(
    ("stops", "pieces", "emitted", "matched"),
    [
        ([], ["ab", "c"], "abc", None),
        (["END"], ["hello E", "N", "D more"], "hello ", "END"),
        (["END"], ["hello E", "N", "x"], "hello ENx", None),
        (["xyz", "y"], ["axy"], "ax", "y"),
        (["ab"], ["a", "a", "b"], "a", "ab"),
        (["\n\n"], ["one\n", "\ntwo"], "one", "\n\n"),
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], emitted: str, matched: str | None) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(piece) for piece in pieces if matcher.matched is None)
    if matcher.matched is None:
        out += matcher.flush()
    assert out == emitted and matcher.matched == matched


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "missive.toml"
    config.write_text('port = 9001\nlog_level = "debug"\n[local]\nthreads = 3\n')
    monkeypatch.setenv("MISSIVE_CONFIG", str(config))
    assert load_settings().port == 9001 and load_settings().local.threads == 3
    monkeypatch.setenv("MISSIVE_PORT", "9002")
    monkeypatch.setenv("MISSIVE_LOCAL__THREADS", "4")
    settings = load_settings()
    assert settings.port == 9002 and settings.local.threads == 4 and settings.log_level == "debug"
    assert load_settings(port=9003, host=None).port == 9003  # flags win; absent flags change nothing


def test_settings_reject_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "missive.toml"
    config.write_text("prot = 1\n")
    monkeypatch.setenv("MISSIVE_CONFIG", str(config))
    with pytest.raises(ValueError, match="prot"):
        load_settings()


class FakeEngine:
    def __init__(self, *ids: str) -> None:
        self.name = "fake"
        self.cards = [ModelCard(id=i, display_name=i, context_window=10, max_output_tokens=5) for i in ids]

    def models(self) -> list[ModelCard]:
        return self.cards


def test_registry_resolution_order() -> None:
    registry = Registry([FakeEngine("a", "b")], {"alias-b": "b"}, "a", claude_aliases=True)  # type: ignore[list-item]
    assert registry.resolve("b").card.id == "b"
    assert registry.resolve("alias-b").card.id == "b"
    assert registry.resolve("claude-sonnet-4-6").card.id == "a"
    with pytest.raises(ApiError) as caught:
        registry.resolve("gpt-4o")
    assert caught.value.status == 404 and caught.value.message == "model: gpt-4o"
    strict = Registry([FakeEngine("a")], {}, "a", claude_aliases=False)  # type: ignore[list-item]
    with pytest.raises(ApiError):
        strict.resolve("claude-sonnet-4-6")
    with pytest.raises(ValueError):
        Registry([FakeEngine("a")], {"x": "missing"}, "a", claude_aliases=True)  # type: ignore[list-item]


def test_registry_lists_ids_that_claude_code_keeps() -> None:
    """Claude Code's model discovery keeps ids containing "claude" or "anthropic"; each listed id resolves."""
    registry = Registry([FakeEngine("a", "b")], {"claude-big": "b", "other": "b"}, "a", claude_aliases=True)  # type: ignore[list-item]
    listed = [model_id for model_id, _ in registry.listing()]
    assert listed == ["a", "b", "claude-a", "claude-big", "claude-b"]
    assert all(registry.resolve(model_id).card.id == card.id for model_id, card in registry.listing())
    assert registry.resolve("claude-b").card.id == "b"
    strict = Registry([FakeEngine("a", "b")], {"claude-big": "b"}, "a", claude_aliases=False)  # type: ignore[list-item]
    assert [model_id for model_id, _ in strict.listing()] == ["a", "b", "claude-big"]


def test_paginate_both_directions() -> None:
    items = [{"id": str(i)} for i in range(5)]
    first = paginate(items, ListQuery(limit=2))
    assert [i["id"] for i in first["data"]] == ["0", "1"] and first["has_more"]
    last = paginate(items, ListQuery(limit=2, after_id="3"))
    assert [i["id"] for i in last["data"]] == ["4"] and not last["has_more"] and last["last_id"] == "4"
    back = paginate(items, ListQuery(limit=2, before_id="4"))
    assert [i["id"] for i in back["data"]] == ["2", "3"] and back["has_more"]
    empty = paginate(items, ListQuery(after_id="nope"))
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_message_builder_assembles_every_block_kind() -> None:
    builder = MessageBuilder("msg_1", "m")
    events = [
        Started(Usage(input_tokens=7)),
        BlockStart("thinking"),
        Delta("thinking", "hmm"),
        Delta("signature", "sig"),
        BlockStop(),
        BlockStart("text"),
        Delta("text", "Hi "),
        Delta("text", "there"),
        BlockStop(),
        BlockStart("tool_use", tool_id="toolu_1", tool_name="get"),
        Delta("input_json", ""),
        Delta("input_json", '{"a": '),
        Delta("input_json", "1}"),
        BlockStop(),
        Finished("tool_use", Usage(input_tokens=7, output_tokens=9, thinking_tokens=2)),
    ]
    wire = [frame for event in events for frame in builder.feed(event)]
    assert [f["type"] for f in wire][:2] == ["message_start", "content_block_start"]
    assert [f["index"] for f in wire if f["type"] == "content_block_start"] == [0, 1, 2]
    assert wire[-1] == {"type": "message_stop"}
    message = builder.message
    assert message["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hi there"},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 9
    assert message["usage"]["output_tokens_details"] == {"thinking_tokens": 2}


def test_thinking_splitter_holds_back_a_partial_closing_tag() -> None:
    from missive.engines.local.thinking import ThinkingSplitter

    splitter = ThinkingSplitter()
    assert splitter.feed("Let me think</th") == ("Let me think", None)
    assert splitter.feed("ink>\n\nThe answer") == ("", "The answer")
    assert splitter.done
    assert ThinkingSplitter().feed("a<b</think>c") == ("a<b", "c")
