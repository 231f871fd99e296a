"""The usage page's figures, from the Admin API's usage and cost reports (wire/reports.py): series for the
charts, totals, a table per group, and the CSV export. Nothing here reads the store."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from typing import Any

from missive.gateway.admin import Admin
from missive.wire import reports

RANGES = {  # name -> (words, bucket width, buckets)
    "24h": ("Last 24 hours", "1h", 24),
    "7d": ("Last 7 days", "1h", 168),
    "31d": ("Last 31 days", "1d", 31),
}
GROUPS = {"model": "model", "api_key_id": "API key", "workspace_id": "workspace"}
KINDS = (  # field of a usage result -> words
    ("uncached_input_tokens", "Input"),
    ("output_tokens", "Output"),
    ("cache_read_input_tokens", "Cache read"),
    ("cache_creation_input_tokens", "Cache write"),
)
CSV_COLUMNS = [
    "starting_at",
    "ending_at",
    "group",
    "uncached_input_tokens",
    "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
]


@dataclass(frozen=True)
class Query:
    range: str = "7d"
    group: str = "model"

    @classmethod
    def read(cls, params: dict[str, str]) -> Query:
        """Unknown values fall back to the defaults: the page's own links and selects make them."""
        chosen_range = params.get("range", "7d")
        group = params.get("group", "model")
        return cls(chosen_range if chosen_range in RANGES else "7d", group if group in GROUPS else "model")


def _window(query: Query, now: float) -> reports.Window:
    _, width, count = RANGES[query.range]
    seconds = reports.WIDTHS[width]
    end = (int(now) // seconds + 1) * seconds  # through the current bucket
    start = end - count * seconds
    return reports.window(_iso(start), _iso(end), width, str(count), None)


def _cost_window(query: Query, now: float) -> reports.Window:
    """Cost is reported by day only: the days that the range touches."""
    _, width, count = RANGES[query.range]
    days = max(1, -(-count * reports.WIDTHS[width] // 86400)) + (0 if width == "1d" else 1)
    end = (int(now) // 86400 + 1) * 86400
    return reports.window(_iso(end - days * 86400), _iso(end), "1d", str(min(days, 31)), None)


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _no_filters() -> dict[str, list[str]]:
    return {"api_key_id": [], "workspace_id": [], "model": [], "service_tier": []}


def cache_write(result: dict[str, Any]) -> int:
    creation = result["cache_creation"]
    return int(creation["ephemeral_5m_input_tokens"] + creation["ephemeral_1h_input_tokens"])


def _tokens(result: dict[str, Any], kind: str) -> int:
    return cache_write(result) if kind == "cache_creation_input_tokens" else int(result[kind])


def usage_rows(admin: Admin, query: Query, now: float | None = None) -> dict[str, Any]:
    """The usage report of the range, grouped by the query's group."""
    return admin.usage_report(_window(query, now or time.time()), [query.group], _no_filters())


def cost_rows(admin: Admin, query: Query, now: float | None = None) -> dict[str, Any]:
    group = ["description"] if query.group != "workspace_id" else ["workspace_id"]
    return admin.cost_report(_cost_window(query, now or time.time()), group, _no_filters())


def figures(admin: Admin, query: Query, names: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """Everything the usage page draws: labels, series by token kind, by group and of cost, and totals."""
    usage = usage_rows(admin, query, now)
    cost = cost_rows(admin, query, now)
    hourly = RANGES[query.range][1] == "1h"
    labels = [
        bucket["starting_at"][5:16].replace("T", " ") if hourly else bucket["starting_at"][:10]
        for bucket in usage["data"]
    ]
    by_kind = {kind: [0] * len(labels) for kind, _ in KINDS}
    by_group: dict[str, list[int]] = {}
    table: dict[str, dict[str, int]] = {}
    for index, bucket in enumerate(usage["data"]):
        for result in bucket["results"]:
            group = str(result.get(query.group) or "unknown")
            row = table.setdefault(group, {kind: 0 for kind, _ in KINDS})
            total = 0
            for kind, _ in KINDS:
                amount = _tokens(result, kind)
                by_kind[kind][index] += amount
                row[kind] += amount
                total += amount
            by_group.setdefault(group, [0] * len(labels))[index] += total
    cost_labels = [bucket["starting_at"][:10] for bucket in cost["data"]]
    cost_by: dict[str, list[float]] = {}
    cost_total = 0.0
    for index, bucket in enumerate(cost["data"]):
        for result in bucket["results"]:
            series = result.get("model") or result.get("workspace_id") or "all"
            cents = float(result["amount"])
            cost_by.setdefault(str(series), [0.0] * len(cost_labels))[index] += cents / 100
            cost_total += cents
    totals = {kind: sum(values) for kind, values in by_kind.items()}
    return {
        "labels": labels,
        "kinds": [{"label": words, "data": by_kind[kind]} for kind, words in KINDS],
        "groups": [
            {"label": names.get(group, group), "data": data} for group, data in sorted(by_group.items())
        ],
        "cost_labels": cost_labels,
        "cost": [
            {"label": names.get(series, series), "data": data} for series, data in sorted(cost_by.items())
        ],
        "totals": totals,
        "cost_total": f"{cost_total / 100:.2f}",
        "table": [
            {"group": group, "name": names.get(group, group), **row, "total": sum(row.values())}
            for group, row in sorted(table.items(), key=lambda item: -sum(item[1].values()))
        ],
    }


def usage_csv(admin: Admin, query: Query, names: dict[str, str], now: float | None = None) -> str:
    """One line per bucket and group, the token kinds as the report splits them."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS[:3], f"{query.group}_name", *CSV_COLUMNS[3:]])
    for bucket in usage_rows(admin, query, now)["data"]:
        for result in bucket["results"]:
            group = str(result.get(query.group) or "")
            creation = result["cache_creation"]
            writer.writerow(
                [
                    bucket["starting_at"],
                    bucket["ending_at"],
                    group,
                    names.get(group, group),
                    result["uncached_input_tokens"],
                    creation["ephemeral_5m_input_tokens"],
                    creation["ephemeral_1h_input_tokens"],
                    result["cache_read_input_tokens"],
                    result["output_tokens"],
                ]
            )
    return out.getvalue()


def cost_csv(admin: Admin, query: Query, names: dict[str, str], now: float | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["starting_at", "ending_at", "workspace_id", "model", "token_type", "description", "amount_usd"]
    )
    for bucket in cost_rows(admin, query, now)["data"]:
        for result in bucket["results"]:
            writer.writerow(
                [
                    bucket["starting_at"],
                    bucket["ending_at"],
                    result.get("workspace_id") or "",
                    result.get("model") or "",
                    result.get("token_type") or "",
                    result.get("description") or "",
                    f"{float(result['amount']) / 100:.6f}",
                ]
            )
    return out.getvalue()
