"""An OpenAI-compatible upstream's error bodies and in-stream errors as Missive's errors.

The status mapping (credentials, fallback, transport failures) is engines/upstream.py's, shared with
the Anthropic-compatible engine. What differs is the body, which each server shapes its own way:

    {"error": {"message", "type", "code"}}            OpenAI, vLLM, llama-server, Ollama
    {"object": "error", "message", "type", "code"}    older vLLM
    {"error": "message"}                              older Ollama
    {"detail": ...}                                   FastAPI's validation errors (SGLang, vLLM)

The message is the upstream's; the error type is the upstream's only where it is one of the
Anthropic API's types (OpenAI's `invalid_request_error` is), else the one of the status. A 422 (a
FastAPI validation error) is a 400 here, as the Messages API has no 422. A prompt over the
upstream's context window is rendered in the Claude API's own words, `prompt is too long: N tokens
> M maximum`, which clients such as Claude Code act on (they compact the conversation), when the
upstream names both numbers: llama-server's `exceed_context_size_error` carries `n_prompt_tokens`
and `n_ctx`; vLLM's message says "maximum context length is M tokens" and "N in the messages" (or
"N input tokens"). vLLM also refuses a prompt that fits when it leaves less room than `max_tokens`
asks; that 400 (`NoRoom`) says how much room there is, and the engine asks again for no more.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from missive.engines import upstream
from missive.engines.base import EngineUnavailable
from missive.wire.errors import ERROR_TYPES, ApiError

log = logging.getLogger("missive.engines.openai")

ANTHROPIC_TYPES = set(ERROR_TYPES.values())
_MAXIMUM = re.compile(r"maximum context length is (\d+) tokens")
_PROMPT = re.compile(r"(\d+) (?:tokens )?in the messages|(\d+) input tokens")


def _parts(data: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """(type, message, the error object) of an error body in any of the shapes above."""
    if not isinstance(data, dict):
        return None, None, {}
    error = data.get("error")
    if isinstance(error, str):
        return None, error, {}
    if not isinstance(error, dict):
        error = data if data.get("object") == "error" or "message" in data else {}
    message = error.get("message")
    if message is None and "detail" in data:
        message = str(data["detail"])
    kind = error.get("type")
    return (kind if isinstance(kind, str) else None), (str(message) if message is not None else None), error


def too_long(message: str, error: dict[str, Any]) -> str | None:
    """The Claude API's "prompt is too long" message, if the upstream said so with both numbers."""
    prompt, window = error.get("n_prompt_tokens"), error.get("n_ctx")
    if not (isinstance(prompt, int) and isinstance(window, int)):
        maximum, given = _MAXIMUM.search(message), _PROMPT.search(message)
        if not (maximum and given):
            return None
        prompt, window = int(given.group(1) or given.group(2)), int(maximum.group(1))
    return f"prompt is too long: {prompt} tokens > {window} maximum" if prompt > window else None


class NoRoom(ApiError):
    """A 400 for a prompt that fits but leaves less room than max_tokens asks (vLLM's): `room` is what is
    left, so that the request can be sent again asking for no more."""

    def __init__(self, message: str, room: int) -> None:
        super().__init__(400, message)
        self.room = room


def room_left(message: str) -> int | None:
    """The tokens a window leaves after the prompt, where the upstream's message names both."""
    maximum, given = _MAXIMUM.search(message), _PROMPT.search(message)
    if not (maximum and given):
        return None
    room = int(maximum.group(1)) - int(given.group(1) or given.group(2))
    return room if room > 0 else None


def from_response(engine: str, request_id: str, status: int, content: bytes, headers: upstream.Headers) -> ApiError:
    """The error for an upstream's non-200 answer."""
    kind, message, error = _parts(upstream.json_or_none(content))
    message = message or upstream.body_text(content, status)
    if status == 422:
        status = 400
    if status == 400 and (claude_words := too_long(message, error)):
        log.info("%s engine %s: the upstream's words for %r: %s", request_id, engine, claude_words, message)
        message = claude_words
    elif status == 400 and (room := room_left(message)) is not None:
        log.info("%s engine %s answered 400: %s", request_id, engine, message)
        return NoRoom(message, room)
    return upstream.refused(
        engine, request_id, status, kind if kind in ANTHROPIC_TYPES else None, message, headers
    )


def from_chunk(data: dict[str, Any], started: bool) -> ApiError:
    """The error a stream carries in place of a chunk (`data: {"error": ...}`): before the first chunk a
    retryable one lets the route fall back; after it, it ends the stream."""
    kind, message, error = _parts(data)
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    error_type = kind if kind in ANTHROPIC_TYPES else ERROR_TYPES.get(status) or "api_error"
    message = message or "The upstream reported an error."
    if not started and upstream.falls_back(status):
        return EngineUnavailable(status, message, error_type=error_type)
    return ApiError(status, message, error_type=error_type)


def is_error(data: Any) -> bool:
    return isinstance(data, dict) and ("error" in data or data.get("object") == "error")
