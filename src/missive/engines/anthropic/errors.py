"""An Anthropic-compatible upstream's failures as Missive's errors (engines/base.py's error contract).

upstream answer                      what Missive raises
400, 404, 413, other 4xx             ApiError: the same status, type and message (the request's fault)
401, 402, 403                        EngineUnavailable 500 api_error, no retry: Missive's own upstream
                                     credentials (or billing) are wrong, which is neither the client's
                                     fault nor its key; another engine of the route may serve
408, 409, 429, 5xx, 529              EngineUnavailable, same status and type, retry-after passed on
connect error, broken connection     EngineUnavailable 529 overloaded_error
no first event in time               EngineUnavailable 504 timeout_error
`event: error` before message_start  as its status would be (retryable types fall back)
`event: error` after it              ApiError of that type: the stream ends with it
connection lost / silent mid-stream  ApiError 500 api_error / 504 timeout_error: the stream ends with it
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from missive.engines.base import EngineUnavailable
from missive.wire.errors import ERROR_TYPES, RETRYABLE, ApiError

log = logging.getLogger("missive.engines.anthropic")

CREDENTIALS = {401, 402, 403}
RETRY_HEADERS = ("retry-after", "retry-after-ms")
STATUS_OF_TYPE = {error_type: status for status, error_type in ERROR_TYPES.items()}


def _falls_back(status: int) -> bool:
    return status in RETRYABLE or status >= 500


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
    engine: str, request_id: str, status: int, content: bytes, headers: httpx.Headers
) -> ApiError:
    """The error for an upstream's non-200 answer to `/v1/messages` or `/v1/messages/count_tokens`."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    error_type, message = _error_of(data)
    if message is None:
        message = content.decode(errors="replace").strip()[:500] or f"upstream answered {status}"
    error_type = (
        error_type or ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    )
    log.info(
        "%s engine %s upstream request-id=%s answered %d %s: %s",
        request_id,
        engine,
        headers.get("request-id"),
        status,
        error_type,
        message,
    )
    if status in CREDENTIALS:
        log.error(
            "%s engine %s: the upstream refused Missive's credentials (%d %s); check api_key_env",
            request_id,
            engine,
            status,
            error_type,
        )
        return EngineUnavailable(
            500,
            f"Engine {engine} could not authenticate with its upstream ({status} {error_type}).",
            error_type="api_error",
            should_retry=False,
        )
    if _falls_back(status):
        passed = {name: headers[name] for name in RETRY_HEADERS if name in headers}
        return EngineUnavailable(status, message, error_type=error_type, headers=passed)
    return ApiError(status, message, error_type=error_type)


def from_event(data: Any, started: bool) -> ApiError:
    """The error of an `event: error`: before message_start a retryable one lets the route fall back."""
    error_type, message = _error_of(data)
    error_type = error_type or "api_error"
    status = STATUS_OF_TYPE.get(error_type, 500)
    message = message or "The upstream reported an error."
    if not started and _falls_back(status):
        return EngineUnavailable(status, message, error_type=error_type)
    return ApiError(status, message, error_type=error_type)


def unreachable(engine: str, exc: httpx.HTTPError) -> EngineUnavailable:
    """A transport failure before the first event: this engine cannot serve now."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return first_event_timeout(engine, None)
    return EngineUnavailable(
        529,
        f"Overloaded: engine {engine} cannot reach its upstream ({type(exc).__name__}).",
        error_type="overloaded_error",
    )


def first_event_timeout(engine: str, seconds: float | None) -> EngineUnavailable:
    within = f" within {seconds:g} s" if seconds is not None else ""
    return EngineUnavailable(
        504, f"Engine {engine}: no first event from the upstream{within}.", error_type="timeout_error"
    )


def busy(engine: str, seconds: float) -> EngineUnavailable:
    return EngineUnavailable(
        529,
        f"Overloaded: engine {engine} is at its max_concurrency and no slot freed within {seconds:g} s.",
        error_type="overloaded_error",
    )


def cut(engine: str, exc: httpx.HTTPError) -> ApiError:
    """A transport failure after the first event: the stream ends with this error."""
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(
            504, f"Engine {engine}: the upstream fell silent mid-stream.", error_type="timeout_error"
        )
    return ApiError(
        500, f"Engine {engine}: the upstream connection was lost mid-stream.", error_type="api_error"
    )
