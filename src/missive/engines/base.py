"""The Engine protocol and the internal events every engine speaks.

An engine is handed a `Generation` (the validated request, already normalised) and yields events:

    Started            once, after admission and tokenization: the input side of the usage
    BlockStart         a content block opens (text, thinking, tool_use)
    Delta              a piece of the open block (text, thinking, partial JSON, signature)
    BlockStop          the open block closes
    Finished           once, last: stop reason and the final usage

Blocks never interleave. The same events serve the embedded engine, a batching engine (each request
has its own event stream) and remote engines (their stream is translated into these events).
An engine raises `ApiError` before `Started` for anything that is the request's fault (prompt too
long, unsupported input); after `Started`, errors end the stream and are rendered as `event: error`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from missive.wire import requests as rq

BlockKind = Literal["text", "thinking", "tool_use"]
DeltaKind = Literal["text", "thinking", "input_json", "signature"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"]


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


@dataclass
class Capabilities:
    image_input: bool = False
    pdf_input: bool = False
    tools: bool = False
    thinking: bool = False
    structured_outputs: bool = False


@dataclass
class ModelCard:
    """What the server knows about one model: its limits and what input it takes."""

    id: str
    display_name: str
    context_window: int
    max_output_tokens: int
    created_at: str = "1970-01-01T00:00:00Z"
    capabilities: Capabilities = field(default_factory=Capabilities)


@dataclass
class Generation:
    """One request as an engine sees it."""

    model: ModelCard
    params: rq.MessageCreateParams | rq.CountTokensParams
    messages: list[rq.MessageParam]  # normalised: consecutive same-role turns merged
    workspace_id: str = "default"

    @property
    def max_tokens(self) -> int:
        return getattr(self.params, "max_tokens", 0)


class Engine(Protocol):
    """A source of generations for the models it serves."""

    def models(self) -> list[ModelCard]: ...

    async def start(self) -> None:
        """Load models or connect; called once before the server takes requests."""

    async def close(self) -> None: ...

    async def count_tokens(self, generation: Generation) -> int:
        """The `input_tokens` that `generate` would report for the same request."""

    def generate(self, generation: Generation) -> AsyncIterator[Event]:
        """Stream the events of one generation. Closing the iterator cancels the generation."""
