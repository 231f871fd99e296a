"""Timestamps: always timezone-aware UTC (SQLite hands back naive datetimes, which are UTC here)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
