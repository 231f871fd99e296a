"""Timestamps: timezone-aware UTC, and the range of them that Missive takes from a client.

SQLite hands back naive datetimes, which are UTC here. A client's datetime must lie in [1970-01-01,
9999-01-01) UTC: epoch seconds are never negative, and a report's page of buckets after the latest
start, or any UTC offset, still fits in a Python datetime (which ends with the year 9999).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)  # exclusive
RANGE = "between 1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z"
_NAIVE_EPOCH = EPOCH.replace(tzinfo=None)


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def in_range(moment: datetime) -> datetime:
    """`moment` in UTC (a naive one is UTC), or ValueError outside the range above. Worked out on
    timedeltas, which cannot overflow where datetimes do (9999-12-31T23:59:59-14:00 is in 10000 UTC)."""
    since = moment.replace(tzinfo=None) - _NAIVE_EPOCH - (moment.utcoffset() or timedelta(0))
    if not timedelta(0) <= since < LATEST - EPOCH:
        raise ValueError(f"Input should be a datetime {RANGE}")
    return EPOCH + since


def parse_epoch(value: str) -> int:
    """An RFC 3339 datetime string (no offset: UTC) as whole epoch seconds, or ValueError."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("Input should be a valid datetime (RFC 3339)") from None
    return int((in_range(moment) - EPOCH).total_seconds())
