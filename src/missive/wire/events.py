"""The internal event vocabulary that every engine speaks, and the usage it reports.

    Started            once, when the engine begins: the input side of the usage
    BlockStart         a content block opens (text, thinking, tool_use)
    Delta              a piece of the open block (text, thinking, partial JSON, signature)
    BlockStop          the open block closes
    Finished           once, last: stop reason and the final usage

Blocks never interleave. It lives in `wire/` because it is the Messages stream's own vocabulary, one
step from its SSE frames (`wire/messages.py`); engines produce it and the gateway counts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BlockKind = Literal["text", "thinking", "tool_use"]
DeltaKind = Literal["text", "thinking", "input_json", "signature"]
StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded", "pause_turn", "refusal"
]


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    thinking_tokens: int = 0


@dataclass
class Started:
    usage: Usage


@dataclass
class BlockStart:
    kind: BlockKind
    tool_id: str | None = None
    tool_name: str | None = None


@dataclass
class Delta:
    kind: DeltaKind
    text: str


@dataclass
class BlockStop:
    pass


@dataclass
class Finished:
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None


Event = Started | BlockStart | Delta | BlockStop | Finished
