"""An Anthropic-compatible upstream's error bodies and error events as Missive's errors.

The status mapping (credentials, fallback, transport failures) is engines/upstream.py's, shared with
the OpenAI-compatible engine; here the Anthropic shape is read: `{"error": {"type", "message"}}`, with
the upstream's type and message kept, and `event: error` inside a stream:

`event: error` before message_start  as its status would be (retryable types fall back)
`event: error` after it              ApiError of that type: the stream ends with it
"""

from __future__ import annotations

from typing import Any

from missive.engines import upstream
from missive.engines.base import EngineUnavailable
from missive.wire.errors import ERROR_TYPES, ApiError

STATUS_OF_TYPE = {error_type: status for status, error_type in ERROR_TYPES.items()}


def _error_of(data: Any) -> tuple[str | None, str | None]:
    """(type, message) of an Anthropic error body, or Nones."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    error_type, message = error.get("type"), error.get("message")
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
    )


def from_response(
    engine: str, request_id: str, status: int, content: bytes, headers: upstream.Headers
) -> ApiError:
    """The error for an upstream's non-200 answer to `/v1/messages` or `/v1/messages/count_tokens`."""
    error_type, message = _error_of(upstream.json_or_none(content))
    return upstream.refused(
        engine, request_id, status, error_type, message or upstream.body_text(content, status), headers
    )


def from_event(data: Any, started: bool) -> ApiError:
    """The error of an `event: error`: before message_start a retryable one lets the route fall back."""
    error_type, message = _error_of(data)
    error_type = error_type or "api_error"
    status = STATUS_OF_TYPE.get(error_type, 500)
    message = message or "The upstream reported an error."
    if not started and upstream.falls_back(status):
        return EngineUnavailable(status, message, error_type=error_type)
    return ApiError(status, message, error_type=error_type)
