"""Internal engine events -> the Anthropic stream events and the final `Message` (spec §5, §6).

There is one generation path: a non-streaming response is the same events collected by `MessageBuilder`.
"""

from __future__ import annotations

import json
from typing import Any

from missive.wire.events import BlockStart, BlockStop, Delta, Event, Finished, Started, Usage

_DELTA_TYPES = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "input_json": ("input_json_delta", "partial_json"),
    "signature": ("signature_delta", "signature"),
}


def usage_json(usage: Usage, service_tier: str = "standard") -> dict[str, Any]:
    """Every usage key, zeros where there is nothing to report, as the Claude API sends them."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"thinking_tokens": usage.thinking_tokens},
        "server_tool_use": None,
        "service_tier": service_tier,
        "inference_geo": "not_available",
    }


def _block_shell(start: BlockStart) -> dict[str, Any]:
    if start.kind == "text":
        return {"type": "text", "text": ""}
    if start.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "tool_use", "id": start.tool_id, "name": start.tool_name, "input": {}}


class MessageBuilder:
    """Turns engine events into Anthropic stream events, and accumulates the final Message."""

    def __init__(self, message_id: str, model: str, service_tier: str = "standard") -> None:
        self.message: dict[str, Any] = {
            "model": model,
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(Usage(), service_tier),
        }
        self.service_tier = service_tier
        self._partial_json: list[str] = []

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """Apply one engine event; return the Anthropic stream events it produces, in order."""
        content = self.message["content"]
        if isinstance(event, Started):
            self.message["usage"] = usage_json(event.usage, self.service_tier)
            return [{"type": "message_start", "message": json.loads(json.dumps(self.message))}]
        if isinstance(event, BlockStart):
            shell = _block_shell(event)
            content.append(shell)
            self._partial_json = []
            return [{"type": "content_block_start", "index": len(content) - 1, "content_block": dict(shell)}]
        if isinstance(event, Delta):
            block = content[-1]
            if event.kind == "input_json":
                self._partial_json.append(event.text)
            elif event.kind == "signature":
                block["signature"] = event.text
            else:
                block[event.kind] += event.text
            delta_type, key = _DELTA_TYPES[event.kind]
            return [
                {"type": "content_block_delta", "index": len(content) - 1, "delta": {"type": delta_type, key: event.text}}
            ]
        if isinstance(event, BlockStop):
            block = content[-1]
            if block["type"] == "tool_use":
                block["input"] = _tool_input("".join(self._partial_json))
            return [{"type": "content_block_stop", "index": len(content) - 1}]
        if isinstance(event, Finished):
            self.message["stop_reason"] = event.stop_reason
            self.message["stop_sequence"] = event.stop_sequence
            usage = usage_json(event.usage, self.service_tier)
            self.message["usage"] = usage
            delta_usage = {
                key: usage[key]
                for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
            }
            return [
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence},
                    "usage": delta_usage,
                },
                {"type": "message_stop"},
            ]
        raise TypeError(f"unknown engine event {event!r}")


def _tool_input(text: str) -> dict[str, Any]:
    """The input of a finished tool call; a call cut short (max_tokens) keeps an empty input."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
