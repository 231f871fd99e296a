"""What the Anthropic-compatible engine sends upstream: the client's request, re-serialised as sent.

The body is the parsed request dumped back with only the fields the client set (`exclude_unset`), by
their wire names (`by_alias`: `output_config.format.schema`), so cache_control, thinking, tools,
system blocks and every beta field go through as they came. Two things change: `model` becomes the
model's name at the upstream, and `stream` is always true (Missive relays the upstream's events and
renders them itself, streamed or collected). `messages` are the client's, not the normalised turns:
the upstream validates and merges them itself, and its error paths then name the client's indexes.
"""

from __future__ import annotations

from typing import Any

from missive.engines.base import Generation
from missive.wire import requests as rq

# Admission's estimate of a prompt's tokens, without asking the upstream (`prepare` must not add a
# round trip): about four characters of text per token, a fixed price per image or base64 document.
CHARS_PER_TOKEN = 4
TOKENS_PER_MEDIA = 1600
_BINARY_KEYS = ("data",)  # base64 payloads of image and document sources


def body(generation: Generation, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The request body for the upstream: the client's fields as sent, with the upstream model's name."""
    # warnings off: the tool union's callable discriminator makes pydantic warn on every tool that is not
    # a custom one, though it serialises each by its own model (tests/test_engine_anthropic.py checks).
    sent = generation.params.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
    sent["model"] = upstream_model
    if stream:
        sent["stream"] = True
    return sent


def headers(generation: Generation, api_key: str | None) -> dict[str, str]:
    """`anthropic-version` and `anthropic-beta` as the client sent them, and the upstream's own key."""
    sent = {"anthropic-version": generation.version, "content-type": "application/json"}
    if generation.betas:
        sent["anthropic-beta"] = ",".join(generation.betas)
    if api_key:
        sent["x-api-key"] = api_key
    return sent


def estimate_tokens(params: rq.MessageCreateParams | rq.CountTokensParams) -> int:
    """A cheap estimate of the prompt's input tokens (system, messages, tools): the characters of its text
    over four, and a flat `TOKENS_PER_MEDIA` for each base64 image or document."""
    dumped = params.model_dump(
        mode="json", exclude_unset=True, include={"system", "messages", "tools"}, warnings=False
    )
    chars, media = _measure(dumped)
    return max(1, chars // CHARS_PER_TOKEN + media * TOKENS_PER_MEDIA)


def _measure(node: Any) -> tuple[int, int]:
    if isinstance(node, str):
        return len(node), 0
    chars = media = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BINARY_KEYS and isinstance(value, str) and node.get("type") == "base64":
                media += 1
                continue
            more_chars, more_media = _measure(value)
            chars, media = chars + more_chars, media + more_media
    elif isinstance(node, list):
        for value in node:
            more_chars, more_media = _measure(value)
            chars, media = chars + more_chars, media + more_media
    return chars, media
