"""The batch worker: every front end runs one. It claims queued requests up to its `concurrency` and runs
each through the same pipeline as `/v1/messages` (limits, the ledger, prompt caching, tools), marked
as batch work: billed at the batch price, and yielding its engine slot to interactive requests
(engines/base.py `Generation.background`).

    claim      queued requests, oldest batch first (store/batches.py: SKIP LOCKED on PostgreSQL)
    run        pipeline.create -> collect the Message -> write the result, conditional on the claim
    refused    a retryable refusal (429, 529, 5xx) is queued again after its retry-after, up to
               `max_attempts`; any other refusal is the request's `errored` result
    upkeep     every `poll_interval`: put back the claims of dead front ends, expire, end finished
               batches, purge old results, set the gauges, and log each open batch's progress

The first request of a batch that this front end starts runs alone until its prompt is prefilled, so
that a system prompt its batch shares (with `cache_control`) is written to the prompt cache once and
read by the rest.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import anyio.to_thread
import sqlalchemy as sa

from missive import metrics
from missive.gateway.auth import Principal
from missive.pipeline import Call, Pipeline
from missive.settings import Settings
from missive.store import batches as store
from missive.store.workspaces import get_workspace
from missive.wire.batches import ERRORED, QUEUED, RESULTS, RUNNING, SUCCEEDED, batch_fault, errored, succeeded
from missive.wire.betas import parse_betas
from missive.wire.errors import ApiError
from missive.wire.events import Started
from missive.wire.times import now

log = logging.getLogger("missive.batches")
_PURGE_EVERY = 60.0


@dataclass
class _Progress:
    """What the log has said of one open batch: when it was first seen, and how far it was then."""

    seen_at: float
    done_then: int
    logged_at: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


class BatchWorker:
    def __init__(self, db: sa.Engine, pipeline: Pipeline, settings: Settings, instance_id: str) -> None:
        self.db, self.pipeline, self.settings = db, pipeline, settings
        self.config = settings.batches
        self.instance_id = instance_id
        self.concurrency = self.config.concurrency if self.config.concurrency is not None else settings.local.parallel
        self.running: set[str] = set()
        self._wake = anyio.Event()
        self._gates: dict[str, anyio.Event] = {}  # batch id -> set once its first request here has prefilled
        self._progress: dict[str, _Progress] = {}
        self._purged_at = 0.0

    def wake(self) -> None:
        """New work was queued, or a slot of the worker freed."""
        self._wake.set()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._upkeep_loop)
                while True:
                    self._wake = anyio.Event()  # before looking: a wake during the look is kept
                    free = self.concurrency - len(self.running)
                    if free > 0:
                        for claimed in await self._claim(free):
                            self.running.add(claimed.id)
                            tasks.start_soon(self._run_one, claimed)
                    with anyio.move_on_after(self.config.poll_interval):
                        await self._wake.wait()
        finally:
            with anyio.CancelScope(shield=True):  # stopping: what runs here is queued again at once
                await anyio.to_thread.run_sync(store.give_back, self.db, self.instance_id)

    async def _claim(self, limit: int) -> list[store.Claimed]:
        try:
            return await anyio.to_thread.run_sync(store.claim, self.db, self.instance_id, limit, _ms())
        except sa.exc.SQLAlchemyError as error:
            log.warning("could not claim batch requests now: %s", error.__class__.__name__)
            return []

    async def _run_one(self, claimed: store.Claimed) -> None:
        try:
            await self._execute(claimed)
        except Exception:  # a bug, not the request's fault: tried again, up to max_attempts
            log.exception("%s batch request failed", claimed.id)
            await self._refused(claimed, ApiError(500, "Internal server error"))
        finally:
            self.running.discard(claimed.id)
            self.wake()

    async def _execute(self, claimed: store.Claimed) -> None:
        gate = self._gates.get(claimed.batch_id)
        opener = gate is None
        if gate is None:
            gate = self._gates[claimed.batch_id] = anyio.Event()
        else:
            await gate.wait()
        try:
            params = json.loads(claimed.params)
            fault = batch_fault(params) if isinstance(params, dict) else None
            if fault is not None:
                raise fault
            settings = self.settings
            workspace = await anyio.to_thread.run_sync(get_workspace, self.db, claimed.workspace_id)
            principal = Principal(claimed.key_id, claimed.workspace_id, workspace)
            betas = parse_betas(",".join(claimed.betas), settings.strict_betas, settings.extra_betas)
            call = Call(principal, claimed.version, betas, claimed.id, batch=True)
            reply = await self.pipeline.create(call, claimed.params.encode())
            builder, events = reply.builder, reply.events
            try:
                builder.feed(reply.first)
                async for event in events:
                    if not isinstance(event, Started):
                        gate.set()  # its prompt is in: the rest of its batch may start
                    builder.feed(event)
            finally:
                await events.aclose()  # type: ignore[attr-defined]
        except ApiError as error:
            await self._refused(claimed, error)
            return
        finally:
            if opener:
                gate.set()
        await self._finish(claimed, SUCCEEDED, succeeded(builder.message))

    async def _refused(self, claimed: store.Claimed, error: ApiError) -> None:
        if error.should_retry and claimed.attempts < self.config.max_attempts:
            delay = _retry_after(error, claimed.attempts)
            log.info("%s batch request refused (%d %s), retried in %.1f s", claimed.id, error.status,
                     error.error_type, delay)  # fmt: skip
            await anyio.to_thread.run_sync(
                store.requeue, self.db, claimed.id, self.instance_id, _ms() + int(delay * 1000)
            )
            return
        await self._finish(claimed, ERRORED, errored(error))

    async def _finish(self, claimed: store.Claimed, status: str, result: str) -> None:
        written = await anyio.to_thread.run_sync(
            store.finish, self.db, claimed.id, claimed.batch_id, self.instance_id, status, result
        )
        if written:
            metrics.BATCH_RESULTS.labels(result=status).inc()
        else:
            log.warning("%s batch request was taken over by another front end; its result here is dropped", claimed.id)

    # --- upkeep --------------------------------------------------------------------------------

    async def _upkeep_loop(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.upkeep)
            except sa.exc.SQLAlchemyError as error:
                log.warning("batch upkeep: the store is unavailable (%s); retrying", error.__class__.__name__)
            except Exception:
                log.exception("batch upkeep failed; retrying")
            await anyio.sleep(self.config.poll_interval)

    def upkeep(self) -> None:
        """Recover, expire, end, purge; then the gauges and the progress lines (runs in a thread)."""
        db = self.db
        recovered = store.recover(db, _ms(), int(self.settings.ledger.dead_after * 1000))
        if recovered:
            log.warning("%d batch requests of stopped front ends queued again", recovered)
        expired = store.expire(db)
        if expired:
            log.warning("%d batch requests expired before they could run", expired)
        store.end_finished(db)
        if time.monotonic() - self._purged_at > _PURGE_EVERY:
            self._purged_at = time.monotonic()
            purged = store.purge(db, now() - timedelta(seconds=self.config.retention))
            if purged:
                log.info("%d batches past their retention archived: their results are purged", purged)
        self._report(store.open_counts(db))

    def _report(self, open_counts: dict[str, dict[str, int]]) -> None:
        metrics.BATCH_REQUESTS.labels(state="queued").set(sum(c.get(QUEUED, 0) for c in open_counts.values()))
        metrics.BATCH_REQUESTS.labels(state="running").set(sum(c.get(RUNNING, 0) for c in open_counts.values()))
        metrics.BATCH_REQUESTS.labels(state="done").set(
            sum(c.get(s, 0) for c in open_counts.values() for s in RESULTS)
        )
        clock = time.monotonic()
        for batch_id in [b for b in self._progress if b not in open_counts]:  # ended since the last look
            del self._progress[batch_id]
            self._gates.pop(batch_id, None)
            batch = store.get(self.db, batch_id, None)
            if batch is None or batch.ended_at is None:  # deleted meanwhile
                continue
            final = store.counts(self.db, [batch_id])[batch_id]
            summary = ", ".join(f"{final[s]} {s}" for s in RESULTS if final.get(s))
            took = (batch.ended_at - batch.created_at).total_seconds()
            log.info("batch %s ended %.1f s after its creation: %s", batch_id, took, summary or "empty")
        for batch_id, counts in open_counts.items():
            total = sum(counts.values())
            done = sum(counts.get(s, 0) for s in RESULTS)
            progress = self._progress.setdefault(batch_id, _Progress(clock, done))
            progress.counts = counts
            if clock - progress.logged_at < self.config.progress_interval or not (done or counts.get(RUNNING)):
                continue
            progress.logged_at = clock
            elapsed = clock - progress.seen_at
            rate = (done - progress.done_then) / elapsed if elapsed > 0 else 0.0
            left = f", about {math.ceil((total - done) / rate)} s left" if rate > 0 else ""
            log.info("batch %s: %d/%d done (%d%%), %d running, %.2f requests/s%s", batch_id, done, total,
                     100 * done // total, counts.get(RUNNING, 0), rate, left)  # fmt: skip


def _retry_after(error: ApiError, attempts: int) -> float:
    """The refusal's retry-after, else an exponential backoff (1, 2, 4 ... s, at most a minute)."""
    header = error.headers.get("retry-after", "")
    try:
        return max(0.1, float(header))
    except ValueError:
        return float(min(60, 2 ** max(0, attempts - 1)))


def _ms() -> int:
    return int(time.time() * 1000)
