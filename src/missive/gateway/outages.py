"""When the store (SQLite/PostgreSQL) or the shared rate limiter (Redis) is away: a fast, retryable error.

Both clients are set to give up quickly (connect and socket timeouts), and their connection errors
become one Anthropic error, 503 `api_error` with `retry-after`, which every SDK retries. Nothing
acknowledged is lost: a request is refused before its ledger record could be written, and a
settlement the store refused is kept and retried by the ledger. Both clients reconnect by themselves
when their server is back.
"""

from __future__ import annotations

import redis.exceptions
import sqlalchemy.exc

from missive.wire.errors import ApiError

STORE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)
LIMITER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
BACKEND_ERRORS = STORE_ERRORS + LIMITER_ERRORS
CONNECT_TIMEOUT = 3  # seconds, for both
REDIS_SOCKET_TIMEOUT = 3


def unavailable(error: BaseException) -> ApiError:
    which = "the usage store" if isinstance(error, STORE_ERRORS) else "the rate limiter"
    return ApiError(
        503,
        f"Service unavailable: {which} cannot be reached right now. Please retry shortly.",
        error_type="api_error",
        headers={"retry-after": "1"},
    )


def describe(error: BaseException) -> str:
    """One line for the log: no traceback for an outage, which is not a bug."""
    return f"{type(error).__module__}.{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
