"""The usage and cost reports of the Admin API, built from ledger sums (spec §1.4).

Both are lists of time buckets, `{starting_at, ending_at, results: [...]}`, empty buckets included,
paginated with an opaque `page` / `next_page` and `has_more`. Group-by dimensions not asked for are null.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from missive.wire.errors import invalid
from missive.wire.money import pico_to_cents
from missive.wire.times import EPOCH, LATEST, parse_epoch

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # default, maximum buckets per page
USAGE_GROUPS = ("api_key_id", "workspace_id", "model", "service_tier")
COST_GROUPS = ("workspace_id", "description")
_TOKEN_TYPES = (  # ledger cost column -> (token_type, words for the description)
    ("cost_input", "uncached_input_tokens", "Input Tokens"),
    ("cost_cache_write", "cache_creation_input_tokens", "Cache Write Tokens"),
    ("cost_cache_read", "cache_read_input_tokens", "Cache Read Tokens"),
    ("cost_output", "output_tokens", "Output Tokens"),
)


@dataclass(frozen=True)
class Window:
    start: int  # epoch seconds, on a bucket boundary
    end: int  # exclusive; this page's end
    width: int
    has_more: bool
    next_start: int | None

    def buckets(self) -> list[tuple[int, int]]:
        return [(at, at + self.width) for at in range(self.start, self.end, self.width)]


def parse_time(value: str, name: str) -> int:
    """A report bound as epoch seconds, in the range of wire/times.py."""
    try:
        return parse_epoch(value)
    except ValueError as exc:
        raise invalid(f"{name}: {exc}") from None


def window(
    starting_at: str | None, ending_at: str | None, width_name: str, limit: str | None, page: str | None
) -> Window:
    """The page of buckets asked for. Every bound lies in [1970, 9999): a page past the last start still
    ends within what a datetime can show."""
    if starting_at is None:
        raise invalid("starting_at: Field required")
    if width_name not in WIDTHS:
        raise invalid(f"bucket_width: Input should be {', '.join(repr(name) for name in WIDTHS)}")
    width = WIDTHS[width_name]
    default, maximum = LIMITS[width_name]
    count = default if limit is None else _count(limit, maximum, width_name)
    start = parse_time(starting_at, "starting_at") // width * width
    if page is not None:
        start = _page_start(page, width)
    end = parse_time(ending_at, "ending_at") if ending_at else None
    page_end = start + count * width
    if end is not None and end <= start and page is None:
        raise invalid("ending_at: must be after starting_at")
    has_more = end is not None and page_end < end
    last = min(page_end, end) if end is not None else page_end
    return Window(start, max(last, start), width, has_more, page_end if has_more else None)


def _count(text: str, maximum: int, width_name: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise invalid("limit: Input should be a valid integer")
    if len(text) > 6 or not 1 <= int(text) <= maximum:
        raise invalid(f"limit: Input should be between 1 and {maximum} for bucket_width {width_name}")
    return int(text)


def next_page(win: Window) -> str | None:
    if win.next_start is None:
        return None
    return "page_" + base64.urlsafe_b64encode(str(win.next_start).encode()).decode().rstrip("=")


_LAST_START = int((LATEST - EPOCH).total_seconds())


def _page_start(page: str, width: int) -> int:
    """The start that a `next_page` token holds: a bucket boundary in the accepted range, or a 400."""
    raw = page.removeprefix("page_")
    text = ""
    if len(raw) <= 16:  # 12 digits at most
        with contextlib.suppress(ValueError):  # not base64, or not UTF-8
            text = base64.b64decode(raw + "=" * (-len(raw) % 4), b"-_", validate=True).decode()
    if not (text.isascii() and text.isdigit()) or int(text) % width or int(text) >= _LAST_START:
        raise invalid("page: invalid page token; pass the next_page of the previous response")
    return int(text)


def usage_report(win: Window, rows: list[dict[str, Any]], group_by: list[str]) -> dict[str, Any]:
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_bucket.setdefault(row["bucket"], []).append(
            {
                "uncached_input_tokens": row["input_tokens"],
                "cache_creation": {
                    "ephemeral_1h_input_tokens": row["cache_write_1h_tokens"],
                    "ephemeral_5m_input_tokens": row["cache_write_5m_tokens"],
                },
                "cache_read_input_tokens": row["cache_read_tokens"],
                "output_tokens": row["output_tokens"],
                "server_tool_use": {"web_search_requests": 0},
                **{name: row.get(name) if name in group_by else None for name in USAGE_GROUPS},
                "context_window": None,
                "inference_geo": None,
            }
        )
    return _page(win, by_bucket)


def cost_report(win: Window, rows: list[dict[str, Any]], group_by: list[str]) -> dict[str, Any]:
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        common = {
            "currency": "USD",
            "workspace_id": row.get("workspace_id") if "workspace_id" in group_by else None,
            "context_window": None,
            "service_tier": None,
        }
        results = by_bucket.setdefault(row["bucket"], [])
        if "description" not in group_by:
            results.append(
                {
                    **common,
                    "amount": pico_to_cents(row["cost"]),
                    "description": None,
                    "cost_type": None,
                    "model": None,
                    "token_type": None,
                }
            )
            continue
        for column, token_type, words in _TOKEN_TYPES:
            if row[column]:
                results.append(
                    {
                        **common,
                        "amount": pico_to_cents(row[column]),
                        "description": f"{row['model']} Usage - {words}",
                        "cost_type": "tokens",
                        "model": row["model"],
                        "token_type": token_type,
                        "service_tier": row["service_tier"],
                    }
                )
    return _page(win, by_bucket)


def _page(win: Window, by_bucket: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    data = [
        {
            "starting_at": _iso(start),
            "ending_at": _iso(end),
            "results": by_bucket.get((start - win.start) // win.width, []),
        }
        for start, end in win.buckets()
    ]
    return {"data": data, "has_more": win.has_more, "next_page": next_page(win)}


def _iso(epoch: int) -> str:
    return (EPOCH + timedelta(seconds=epoch)).strftime("%Y-%m-%dT%H:%M:%SZ")
