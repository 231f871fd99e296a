"""One admitted request: its buckets and ledger record, followed through its events to one settlement.

Admission charges the buckets before an engine is asked for a slot. As an engine is asked, `open`
writes the ledger record, naming that engine (or the next one asked, after an engine that could not
serve). `track` wraps the event iterator of the engine that serves: however the generation ends
(finished, failed, or cancelled because the client went away or a limit closed it), the record is
settled exactly once, with the usage of `Finished`, or else with the output counted so far, and the
estimates taken from the buckets are corrected to what was really used. If no engine starts at all,
`release` removes the record and gives the tokens back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import anyio

from missive import metrics
from missive.gateway import outages
from missive.gateway.ledger import Ledger
from missive.gateway.limits import Limiter, Pool
from missive.gateway.spend import SpendGuard
from missive.store.ledger import Record
from missive.wire.events import Delta, Event, Finished, Usage

log = logging.getLogger("missive.admission")


class Admission:
    def __init__(
        self,
        ledger: Ledger,
        limiter: Limiter,
        spend: SpendGuard,
        pool: Pool,
        record: Record,
        charged: dict[str, float],
        headers: dict[str, str],
    ):
        self.ledger, self.limiter, self.spend = ledger, limiter, spend
        self.pool = pool
        self.record = record
        self.charged = charged
        self.headers = headers  # rate-limit headers as of admission, then as of settlement
        self.began = time.monotonic()
        self.opened = False  # the record's write has been queued (Admission.open)
        self.settled = False

    def open(self, engine: str, model: str) -> asyncio.Future[None]:
        """An engine is asked to serve: write the record, in flight and naming it, while the engine works
        towards its first event (the future is done once the record is committed, which must be before
        the first byte). After an engine that could not serve, the next one asked is named instead."""
        self.record.engine, self.record.model = engine, model
        if self.opened:
            return self.ledger.retarget(self.record)
        self.opened = True
        return self.ledger.opening(self.record)

    def started(self, usage: Usage) -> None:
        """The engine's first event: the input side of its usage, as it counted it (saved at the next
        checkpoint, and at settlement)."""
        self._take_usage(usage)

    async def release(self) -> None:
        """Nothing was served: remove the record, and give back the tokens charged (the request still
        counts)."""
        if self.settled:
            return
        self.settled = True
        if self.opened:
            try:
                await self.ledger.discard(self.record)
            except outages.STORE_ERRORS as error:  # recovery settles it as interrupted
                log.warning("%s: no engine served; record kept: %s", self.record.id, outages.describe(error))
        await self.limiter.settle(
            self.pool, {name: -amount for name, amount in self.charged.items() if name != "requests"}
        )

    async def track(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        status, stop_reason = "failed", None
        try:
            async for event in events:
                if isinstance(event, Delta) and event.kind != "signature":
                    self.record.output_tokens += 1  # at least one token per piece, until Finished says
                    self.ledger.progress(self.record.id, self.record.output_tokens)
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
        latency_ms = int((time.monotonic() - self.began) * 1000)
        try:
            cost = await self.ledger.settle(record, status, stop_reason, latency_ms)
            self.spend.add(record.workspace_id, cost.total)
            input_used = record.input_tokens + record.cache_write_5m_tokens + record.cache_write_1h_tokens
            verdict = await self.limiter.settle(
                self.pool,
                {
                    "input-tokens": input_used - self.charged.get("input-tokens", 0),
                    "output-tokens": record.output_tokens - self.charged.get("output-tokens", 0),
                },
            )
            if verdict.headers:
                self.headers = verdict.headers
        except outages.BACKEND_ERRORS as error:  # the limiter is away: its buckets refill on their own
            log.warning("%s settled, buckets not corrected: %s", record.id, outages.describe(error))
            return
        except Exception:  # the record stays in flight and is recovered as interrupted
            log.exception("%s could not be settled", record.id)
            return
        finally:
            metrics.ENGINE_REQUESTS.labels(engine=record.engine, outcome=status).inc()
        log.info(
            "%s settled %s key=%s workspace=%s engine=%s model=%s in=%d out=%d cost_pusd=%d %dms",
            record.id,
            status,
            record.key_id,
            record.workspace_id,
            record.engine,
            record.model,
            record.input_tokens,
            record.output_tokens,
            cost.total,
            latency_ms,
        )
