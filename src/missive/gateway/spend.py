"""Spend guards: a workspace's monthly spend limit and its prepaid credit balance (spec §7).

The balance is read with the key on every request, so it is exact as of admission. The month's
spend is a sum over the ledger, cached for a second per workspace and advanced by what this front
end settles in between, so a limit can be overshot by at most what is in flight.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio.to_thread
import sqlalchemy as sa

from missive.store.ledger import spend_since
from missive.wire.admin import Workspace
from missive.wire.errors import ApiError

CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the API. Please add credit to this workspace or ask your "
    "administrator to raise it."
)
_REFRESH_SECONDS = 1.0


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(moment: datetime) -> datetime:
    start = month_start(moment)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


class SpendGuard:
    def __init__(self, db: sa.Engine) -> None:
        self._db = db
        self._cache: dict[str, tuple[int, int, float]] = {}  # workspace -> (month start ts, spent, read at)

    async def check(self, workspace: Workspace) -> None:
        """Raise the Claude API's errors when the workspace may not spend more."""
        if workspace.credit_balance is not None and workspace.credit_balance <= 0:
            raise ApiError(400, CREDIT_TOO_LOW)
        if workspace.monthly_spend_limit is None:
            return
        now = datetime.now(UTC)
        if await self.spent_this_month(workspace.id, now) >= workspace.monthly_spend_limit:
            raise ApiError(
                400,
                "You have reached your specified workspace API usage limits. "
                f"You will regain access on {next_month(now):%Y-%m-%d} at 00:00 UTC.",
            )

    async def spent_this_month(self, workspace_id: str, now: datetime) -> int:
        start = int(month_start(now).timestamp())
        cached = self._cache.get(workspace_id)
        if cached and cached[0] == start and time.monotonic() - cached[2] < _REFRESH_SECONDS:
            return cached[1]
        spent = await anyio.to_thread.run_sync(spend_since, self._db, workspace_id, start)
        self._cache[workspace_id] = (start, spent, time.monotonic())
        return spent

    def add(self, workspace_id: str, amount: int) -> None:
        """Count what this front end just settled, until the next read from the ledger."""
        cached = self._cache.get(workspace_id)
        if cached:
            self._cache[workspace_id] = (cached[0], cached[1] + amount, cached[2])
