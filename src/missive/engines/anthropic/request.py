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
