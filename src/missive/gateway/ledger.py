"""The usage ledger at work: open a record at admission, checkpoint it, settle it once, recover orphans.

Durability: a record exists, `in_flight`, before the response's first byte: it is written while the
first engine asked prepares its first event. Its tokens so far are saved every `checkpoint_interval`,
and sooner once it is `checkpoint_tokens` ahead of its last save. Each front end beats in the
`instances` table; when one stops beating for `dead_after` (it crashed, or was killed), any front end
settles its records still in flight as `interrupted`, with the tokens last saved, at the current
prices. A record is one row keyed by its request id and settling is a conditional update, so nothing
is ever counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread
import sqlalchemy as sa

from missive.gateway import outages
from missive.gateway.pricing import Cost, Pricing, Tokens
from missive.settings import LedgerSettings
from missive.store import ledger as store
from missive.store.writer import Writer
from missive.wire.ids import new_id
from missive.wire.times import now

log = logging.getLogger("missive.ledger")


@dataclass
class _Live:
    record: store.Record
    saved: dict[str, int]  # its tokens as last written


def _tokens(record: store.Record) -> dict[str, int]:
    return {column: getattr(record, column) for column in store.TOKEN_COLUMNS}


def tokens_of(record: store.Record) -> Tokens:
    return Tokens(
        input=record.input_tokens,
        cache_write_5m=record.cache_write_5m_tokens,
        cache_write_1h=record.cache_write_1h_tokens,
        cache_read=record.cache_read_tokens,
        output=record.output_tokens,
    )


class Ledger:
    def __init__(self, db: sa.Engine, settings: LedgerSettings, pricing: Pricing) -> None:
        self.db = db
        self.settings = settings
        self.pricing = pricing
        self.instance_id = new_id("inst_")
        self.writer = Writer(
            db, settings.synchronous_commit
        )  # every ledger write goes through it: group commits
        self._live: dict[str, _Live] = {}
        self._due: anyio.Event | None = None  # set: a record ran `checkpoint_tokens` past its last save
        self._unsettled: dict[str, store.Settlement] = {}  # settlements the database refused for now

    async def open(self, record: store.Record) -> None:
        await asyncio.shield(self.opening(record))

    def opening(self, record: store.Record) -> asyncio.Future[None]:
        """Write `record`, in flight; the write is queued when this returns (see `Writer.submit`)."""
        record.instance_id = self.instance_id
        created_at = now()
        opening = store.reopen_record if record.service_tier == "batch" else store.open_record
        self._live[record.id] = _Live(record, _tokens(record))
        return self.writer.submit(lambda conn: opening(conn, record, created_at))

    def retarget(self, record: store.Record) -> asyncio.Future[None]:
        """Write the record's engine and model again (queued, as `opening`)."""
        engine, model = record.engine, record.model
        return self.writer.submit(lambda conn: store.retarget(conn, record.id, engine, model))

    async def discard(self, record: store.Record) -> None:
        """Remove a record opened for a request that no engine served."""
        self._live.pop(record.id, None)
        await self.writer.write(lambda conn: store.discard(conn, record.id))

    def progress(self, record_id: str, output_tokens: int) -> None:
        live = self._live.get(record_id)
        if live is not None:
            live.record.output_tokens = output_tokens
            ahead = output_tokens - live.saved["output_tokens"]
            if self._due is not None and ahead >= self.settings.checkpoint_tokens:
                self._due.set()

    async def settle(
        self, record: store.Record, status: str, stop_reason: str | None, latency_ms: int | None
    ) -> Cost:
        """Settle a record this front end opened; returns its cost."""
        self._live.pop(record.id, None)
        cost = self._cost(record, status)
        settlement = _settlement(record, status, cost, stop_reason, latency_ms)
        try:
            await self._write_settlement(record.id, settlement)
        except Exception as error:  # the database is away: keep it, and try again at every tick
            if isinstance(error, outages.STORE_ERRORS):
                log.warning("%s could not be settled now (%s); will retry", record.id, outages.describe(error))
            else:
                log.exception("%s could not be settled now; will retry", record.id)
            self._unsettled[record.id] = settlement
        return cost

    def _cost(self, record: store.Record, status: str) -> Cost:
        """A batch request costs nothing unless it succeeded: a failed or cut attempt is run again, or
        ends as an errored result, which the batch discount's terms make free."""
        if record.service_tier == "batch" and status != "succeeded":
            return Cost(0, 0, 0, 0)
        return self.pricing.cost(record.model, tokens_of(record), record.service_tier, record.engine)

    async def _write_settlement(self, record_id: str, settlement: store.Settlement) -> None:
        await self.writer.write(
            lambda conn: store.settle(conn, record_id, settlement, (store.IN_FLIGHT, "interrupted"))
        )

    async def run(self) -> None:
        """Beat, checkpoint and recover every `checkpoint_interval`, for as long as the server runs; in
        between, checkpoint as soon as a record is `checkpoint_tokens` ahead of its last save (at most
        every `checkpoint_spacing`), so that a crash loses little output whatever the speed."""
        next_tick = time.monotonic()
        while True:
            self._due = due = anyio.Event()
            with anyio.move_on_after(max(0.0, next_tick - time.monotonic())):
                await due.wait()
            try:
                if time.monotonic() >= next_tick:
                    await self.tick()
                    next_tick = time.monotonic() + self.settings.checkpoint_interval
                else:
                    await self.checkpoint()
            except outages.STORE_ERRORS as error:  # the store is away: keep trying, at the timer's pace
                log.warning("ledger upkeep: the store is unavailable (%s); retrying", outages.describe(error))
                await anyio.sleep(self.settings.checkpoint_interval)
            except Exception:  # a bug must not stop accounting for good either
                log.exception("ledger upkeep failed; retrying")
            await anyio.sleep(self.settings.checkpoint_spacing)

    async def tick(self) -> None:
        beat = _ms()
        await self.writer.write(lambda conn: store.heartbeat(conn, self.instance_id, beat))
        for record_id, settlement in list(self._unsettled.items()):
            await self._write_settlement(record_id, settlement)
            del self._unsettled[record_id]
        await self.checkpoint()
        await self.recover()

    async def checkpoint(self) -> None:
        """Save the tokens so far of the records in flight that moved since their last save: the output,
        and the input side once the engine has counted it (the record was opened with admission's count)."""
        changed = {
            record_id: tokens
            for record_id, live in list(self._live.items())
            if (tokens := _tokens(live.record)) != live.saved
        }
        if changed:
            await self.writer.write(lambda conn: store.checkpoint(conn, changed))
            for record_id, tokens in changed.items():
                if record_id in self._live:
                    self._live[record_id].saved = tokens

    async def recover(self) -> int:
        """Settle the records of front ends that died in flight; returns how many."""
        dead_after = int(self.settings.dead_after * 1000)
        orphans = await anyio.to_thread.run_sync(store.orphans, self.db, _ms(), dead_after)
        settled = 0
        for record in orphans:
            if record.instance_id == self.instance_id:
                continue
            cost = self._cost(record, "interrupted")
            settlement = _settlement(record, "interrupted", cost, None, None)
            if await self.writer.write(
                lambda conn, record=record, settlement=settlement: store.settle(  # type: ignore[misc]
                    conn, record.id, settlement, (store.IN_FLIGHT,)
                )
            ):
                settled += 1
                log.warning("%s settled as interrupted (front end %s stopped)", record.id, record.instance_id)
        return settled

    async def close(self) -> None:
        await self.writer.write(lambda conn: store.remove_instance(conn, self.instance_id))
        await anyio.to_thread.run_sync(self.writer.close)


def _settlement(
    record: store.Record, status: str, cost: Cost, stop_reason: str | None, latency_ms: int | None
) -> store.Settlement:
    return store.Settlement(status, _tokens(record), cost.columns(), stop_reason, latency_ms)


def _ms() -> int:
    return int(time.time() * 1000)
