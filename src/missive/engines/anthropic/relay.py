"""An Anthropic stream (SSE) -> Missive's engine events, one upstream event at a time, nothing buffered.

    message_start        Started: input, cache read, cache writes (the 5m/1h split of cache_creation)
    content_block_start  BlockStart for text, thinking and tool_use blocks
    content_block_delta  Delta: text_delta, thinking_delta, signature_delta (the upstream's own
                         signature, passed through), input_json_delta
    content_block_stop   BlockStop
    message_delta        kept: stop_reason, stop_sequence, the cumulative usage
    message_stop         Finished
    ping                 nothing (Missive sends its own pings)
    error                raises it (errors.from_event)

What Missive's events cannot carry is left out of the relayed message and logged: `redacted_thinking`
blocks, server-tool blocks (`server_tool_use`, `*_tool_result`, MCP blocks) and any block type this
module does not know, with their deltas; `citations_delta`s (the text they annotate still comes
through); and any delta type not listed above. `stop_details` and the upstream's message id,
`service_tier` and `container` are not relayed either. `pause_turn` and `refusal` stop reasons, which
the API defines, are passed on as they are. A stream whose message_start is missing (llama-server
leaves it out now and then) starts at its first block, its input estimated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

from missive.engines import upstream
from missive.engines.anthropic import errors
from missive.wire.events import BlockStart, BlockStop, Delta, Event, Finished, Started, StopReason, Usage

log = logging.getLogger("missive.engines.anthropic")

RELAYED_BLOCKS = ("text", "thinking", "tool_use")
DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
    "input_json_delta": ("input_json", "partial_json"),
}
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"}
PASSED_STOP_REASONS = {"pause_turn", "refusal"}  # defined by the API, not (yet) in wire/events.StopReason


async def sse(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, Any]]:
    """Server-sent events as (event name, parsed JSON data); the name defaults to the data's `type`. Text
    that is not UTF-8 is read with replacement characters."""
    async for name, data in upstream.sse(body):
        payload = json.loads(data.decode(errors="replace"))
        yield name or (payload.get("type", "") if isinstance(payload, dict) else ""), payload


def usage_from(reported: Any, base: Usage) -> Usage:
    """`base` updated by an Anthropic usage object (message_start's, or message_delta's cumulative one)."""
    if not isinstance(reported, dict):
        return base
    usage = replace(base)

    def number(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        if (value := number(reported.get(key))) is not None:
            setattr(usage, key, value)
    split = reported.get("cache_creation")
    if isinstance(split, dict):
        usage.cache_write_5m_tokens = number(split.get("ephemeral_5m_input_tokens")) or 0
        usage.cache_write_1h_tokens = number(split.get("ephemeral_1h_input_tokens")) or 0
    total = number(reported.get("cache_creation_input_tokens"))
    if total is not None and total != usage.cache_write_5m_tokens + usage.cache_write_1h_tokens:
        # no split (or one that does not add up): what the 1h part does not explain was written for 5m
        usage.cache_write_1h_tokens = min(usage.cache_write_1h_tokens, total)
        usage.cache_write_5m_tokens = total - usage.cache_write_1h_tokens
    details = reported.get("output_tokens_details")
    if isinstance(details, dict) and (thinking := number(details.get("thinking_tokens"))) is not None:
        usage.thinking_tokens = thinking
    return usage


@dataclass
class Relay:
    """The translation of one upstream stream. `feed` takes each SSE event and returns Missive's events."""

    engine: str
    request_id: str = ""
    estimated_input: int = 0  # the input tokens to report if the upstream reports none (no message_start)
    started: bool = False
    finished: bool = False
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    stopped: bool = False  # message_delta seen
    _open: str | None = None  # the relayed block's type; "" for a block left out
    _pending_input: str | None = None  # a tool_use start's non-empty input, if no input_json_delta follows
    _pending_signature: str | None = None  # a thinking start's signature, if no signature_delta follows
    left_out: list[str] = field(default_factory=list)

    def feed(self, name: str, data: Any) -> list[Event]:
        if name == "error":
            raise errors.from_event(data, self.started)
        if not isinstance(data, dict) or name in ("ping", ""):
            return []
        if name == "message_start":
            return self._message_start(data)
        if not self.started:
            if name not in (
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
            ):
                return []
            # The message began without its message_start (llama-server leaves it out now and then):
            # start it here, its input side estimated, since the upstream reported none.
            log.warning(
                "%s engine %s: the upstream sent %s before message_start; input usage estimated at %d",
                self.request_id,
                self.engine,
                name,
                self.estimated_input,
            )
            self.usage, self.started = Usage(input_tokens=self.estimated_input), True
            return [Started(replace(self.usage)), *self.feed(name, data)]
        if name == "content_block_start":
            return self._block_start(data.get("content_block"))
        if name == "content_block_delta":
            return self._delta(data.get("delta"))
        if name == "content_block_stop":
            return self._block_stop()
        if name == "message_delta":
            delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
            if "stop_reason" in delta:
                self.stop_reason = delta["stop_reason"]
            if "stop_sequence" in delta:
                self.stop_sequence = delta["stop_sequence"]
            self.usage = usage_from(data.get("usage"), self.usage)
            self.stopped = True
            return []
        if name == "message_stop":
            return self.finish()
        return []  # event types of later API versions: ignored, as the SDKs do

    def finish(self) -> list[Event]:
        """The stream's end: close a block left open, and the Finished event."""
        events: list[Event] = self._block_stop() if self._open is not None else []
        self.finished = True
        if self.left_out:
            log.warning(
                "%s engine %s: left out what Missive's events cannot carry: %s",
                self.request_id,
                self.engine,
                ", ".join(dict.fromkeys(self.left_out)),
            )
        return [*events, Finished(self._stop_reason(), self.usage, self.stop_sequence)]

    def _message_start(self, data: dict[str, Any]) -> list[Event]:
        if self.started:
            raise errors.from_event(
                {"error": {"type": "api_error", "message": "A second message_start."}}, True
            )
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        self.usage = usage_from(message.get("usage"), Usage())
        self.started = True
        log.debug("%s engine %s upstream message %s", self.request_id, self.engine, message.get("id"))
        return [Started(replace(self.usage))]

    def _block_start(self, block: Any) -> list[Event]:
        events: list[Event] = self._block_stop() if self._open is not None else []  # blocks never interleave
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in RELAYED_BLOCKS:
            self._open = ""
            self.left_out.append(f"{kind} block")
            return events
        assert isinstance(block, dict)
        self._open = kind
        self._pending_input = self._pending_signature = None
        if kind == "tool_use":
            events.append(BlockStart("tool_use", tool_id=block.get("id"), tool_name=block.get("name")))
            if block.get("input"):  # some servers send the whole input here rather than in deltas
                self._pending_input = json.dumps(block["input"], ensure_ascii=False)
            return events
        events.append(BlockStart(kind))
        if block.get(kind):  # text or thinking already in the start event
            events.append(Delta(kind, block[kind]))
        if kind == "thinking" and block.get("signature"):
            self._pending_signature = block["signature"]
        return events

    def _delta(self, delta: Any) -> list[Event]:
        if not self._open or not isinstance(delta, dict):
            return []
        kind, key = DELTAS.get(delta.get("type", ""), (None, ""))
        value = delta.get(key)
        if kind is None or not isinstance(value, str) or not self._fits(kind):
            self.left_out.append(str(delta.get("type")))
            return []
        if kind == "input_json":
            self._pending_input = None
        elif kind == "signature":
            self._pending_signature = None
        return [Delta(kind, value)]

    def _fits(self, kind: str) -> bool:
        if self._open == "thinking":
            return kind in ("thinking", "signature")
        if self._open == "tool_use":
            return kind == "input_json"
        return kind == "text"

    def _block_stop(self) -> list[Event]:
        if self._open is None:
            return []
        events: list[Event] = []
        if self._open == "tool_use" and self._pending_input is not None:
            events.append(Delta("input_json", self._pending_input))
        if self._open == "thinking" and self._pending_signature is not None:
            events.append(Delta("signature", self._pending_signature))
        if self._open:
            events.append(BlockStop())
        self._open, self._pending_input, self._pending_signature = None, None, None
        return events

    def _stop_reason(self) -> StopReason:
        reason = self.stop_reason
        if reason in STOP_REASONS or reason in PASSED_STOP_REASONS:
            return cast(StopReason, reason)
        log.warning(
            "%s engine %s: upstream stop_reason %r read as end_turn", self.request_id, self.engine, reason
        )
        return "end_turn"
