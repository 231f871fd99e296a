"""Errors in the Anthropic shape: one exception type, rendered in one place."""

from __future__ import annotations

from typing import Any

# HTTP status -> Anthropic error type (spec §7).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}


class ApiError(Exception):
    """An error the client sees: HTTP status, Anthropic error type and message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}
        self.should_retry = status in RETRYABLE if should_retry is None else should_retry

    def body(self, request_id: str | None) -> dict[str, Any]:
        return error_body(self.error_type, self.message, request_id)


def error_body(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


def invalid(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
