"""One writer thread per process that commits the ledger's writes in groups.

Each write is a function of a connection. Writes that arrive while a transaction is being committed
wait and go together into the next one, so under load many requests share one commit (and SQLite's
single writer is never contended by this process). Callers await their own write's result, so a
write is durable when its await returns. If a group fails, its writes are retried one by one, so that
one bad write fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

log = logging.getLogger("missive.store")
T = TypeVar("T")
_MAX_GROUP = 256
_Item = tuple[Callable[[sa.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class Writer:
    def __init__(self, db: sa.Engine, synchronous_commit: bool = True) -> None:
        self._db = db
        # PostgreSQL: without waiting for the WAL flush, a commit survives a crash of this process (as
        # SQLite's WAL with synchronous=NORMAL does), not a crash of the database host
        self._relaxed = not synchronous_commit and db.dialect.name == "postgresql"
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def write(self, operation: Callable[[sa.Connection], T]) -> T:
        """Run `operation` in a committed transaction; returns its result."""
        return await asyncio.shield(self.submit(operation))  # a cancelled caller does not undo the write

    def submit(self, operation: Callable[[sa.Connection], T]) -> asyncio.Future[T]:
        """Queue `operation` now, behind the writes queued before it; the future is its result once
        committed. For a write that overlaps other work: await the future (shielded) when it must be done."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="missive-ledger-writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((operation, future, loop))
        return future

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            group = [item]
            while len(group) < _MAX_GROUP:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)
                    break
                group.append(following)
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        try:  # a connection per group, from the pool: a lost database connection is replaced
            with self._db.begin() as conn:
                if self._relaxed:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                results = [operation(conn) for operation, _, _ in group]
        except Exception:
            if len(group) == 1:
                _settle(group[0], error=_current_exception())
                return
            for item in group:  # find the one that fails; the others commit on their own
                self._commit([item])
            return
        for item, result in zip(group, results, strict=True):
            _settle(item, result=result)


def _current_exception() -> BaseException:
    import sys

    error = sys.exc_info()[1]
    assert error is not None
    return error


def _settle(item: _Item, result: Any = None, error: BaseException | None = None) -> None:
    _, future, loop = item

    def deliver() -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("ledger write finished after its event loop closed")
