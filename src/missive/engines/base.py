"""The Engine protocol: what every engine (embedded, OpenAI-compatible, Anthropic-compatible) does.

A request reaches an engine in two steps, so that admission sits between them:

    prepared = await engine.prepare(generation)   # render and count; the request's faults raise here
    ...                                            # the pipeline admits on prepared.input_tokens
    async for event in prepared.generate(): ...    # takes a slot (or an upstream connection) and runs

`generate` yields the events of `wire/events.py`: `Started` first, `Finished` last.

Error contract:
- `ApiError` from `prepare`, or from `generate` before `Started`, is the request's answer (prompt too
  long, unsupported input, an upstream's 400), rendered as an HTTP error.
- `EngineUnavailable` (an `ApiError`) from the same places means this engine cannot serve now
  (connect error, upstream 5xx/429/529, no first token in time, the engine's own overload): the
  pipeline tries the route's next engine, and renders the error only when none is left.
- After `Started`, any error ends the stream and is rendered as `event: error`. There is no fallback
  once a byte of the response may have been sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.events import Event
from missive.wire.models import ModelCard


class EngineUnavailable(ApiError):
    """The engine cannot serve this request now; another engine of its route may."""


@dataclass
class Generation:
    """One request as an engine sees it."""

    model: ModelCard
    params: rq.MessageCreateParams | rq.CountTokensParams
    messages: list[rq.MessageParam]  # normalised: consecutive same-role turns merged
    workspace_id: str = "default"
    version: str = "2023-06-01"  # the anthropic-version the client sent
    betas: tuple[str, ...] = ()  # the anthropic-beta names the client sent, as sent
    request_id: str = ""
    background: bool = False  # batch work: yields its slot to interactive requests (docs/batches.md)

    @property
    def max_tokens(self) -> int:
        return getattr(self.params, "max_tokens", 0)


class Prepared(Protocol):
    """A request that an engine has rendered and counted, ready to run once admitted."""

    @property
    def input_tokens(self) -> int:
        """The prompt's tokens as the engine knows them before running: exact for the embedded engine,
        an estimate where counting would cost an upstream round trip. Admission charges it."""

    def generate(self) -> AsyncIterator[Event]:
        """Run it. Closing the iterator cancels the generation."""


class Engine(Protocol):
    """A source of generations for the models it serves."""

    name: str  # as in settings: the ledger, metrics and routes name engines by it
    signs_thinking: bool  # the engine signs its own thinking blocks and checks those sent back to it
    fetches_urls: bool  # its upstream fetches url sources and checks media itself (media/sources.py)

    def models(self) -> list[ModelCard]: ...

    async def start(self) -> None:
        """Load models or connect; called once before the server takes requests."""

    async def close(self) -> None: ...

    async def count_tokens(self, generation: Generation) -> int:
        """The `input_tokens` that a generation of the same request would report."""

    async def prepare(self, generation: Generation) -> Prepared:
        """Render and count the request; raise `ApiError` for what is the request's fault."""
