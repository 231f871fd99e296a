"""One admitted request: its buckets and ledger record, followed through its events to one settlement.

`track` wraps the engine's event iterator. However the generation ends (finished, failed, or
cancelled because the client went away or a limit closed it), the record is settled exactly once,
with the usage of `Finished`, or else with the output counted so far, and the estimates taken from
the buckets at admission are corrected to what was really used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from missive.engines.base import Delta, Event, Finished, Usage
from missive.gateway.limits import Pool
from missive.store.ledger import Record

if TYPE_CHECKING:
    from missive.gateway.policy import Policy

log = logging.getLogger("missive.admission")


def itpm_tokens(usage: Usage) -> int:
    """What counts against ITPM: input plus cache writes; cache reads are free (spec §9)."""
    return usage.input_tokens + usage.cache_write_5m_tokens + usage.cache_write_1h_tokens


class Admission:
    def __init__(
        self, policy: Policy, pool: Pool, record: Record, charged: dict[str, float], headers: dict[str, str]
    ):
        self.policy = policy
        self.pool = pool
        self.record = record
        self.charged = charged
        self.headers = headers  # rate-limit headers as of admission, then as of settlement
        self.started = time.monotonic()
        self.settled = False

    async def track(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        status, stop_reason = "failed", None
        try:
            async for event in events:
                if isinstance(event, Delta) and event.kind != "signature":
                    self.record.output_tokens += 1  # at least one token per piece, until Finished says
                    self.policy.ledger.progress(self.record.id, self.record.output_tokens)
                elif isinstance(event, Finished):
                    self._take_usage(event.usage)
                    status, stop_reason = "succeeded", event.stop_reason
                yield event
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            status = "cancelled"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self.settle(status, stop_reason)

    def _take_usage(self, usage: Usage) -> None:
        record = self.record
        record.input_tokens = usage.input_tokens
        record.cache_write_5m_tokens = usage.cache_write_5m_tokens
        record.cache_write_1h_tokens = usage.cache_write_1h_tokens
        record.cache_read_tokens = usage.cache_read_input_tokens
        record.output_tokens = usage.output_tokens

    async def settle(self, status: str, stop_reason: str | None = None) -> None:
        if self.settled:
            return
        self.settled = True
        record = self.record
        latency_ms = int((time.monotonic() - self.started) * 1000)
        try:
            cost = await self.policy.ledger.settle(record, status, stop_reason, latency_ms)
            self.policy.spend.add(record.workspace_id, cost.total)
            input_used = record.input_tokens + record.cache_write_5m_tokens + record.cache_write_1h_tokens
            verdict = await self.policy.limiter.settle(
                self.pool,
                {
                    "input-tokens": input_used - self.charged.get("input-tokens", 0),
                    "output-tokens": record.output_tokens - self.charged.get("output-tokens", 0),
                },
            )
            if verdict.headers:
                self.headers = verdict.headers
        except Exception:  # the record stays in flight and is recovered as interrupted
            log.exception("%s could not be settled", record.id)
            return
        log.info(
            "%s settled %s key=%s workspace=%s model=%s in=%d out=%d cost_pusd=%d %dms",
            record.id,
            status,
            record.key_id,
            record.workspace_id,
            record.model,
            record.input_tokens,
            record.output_tokens,
            cost.total,
            latency_ms,
        )
