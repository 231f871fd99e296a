"""Events from a scheduler thread to an event loop: one wake-up of the loop per step, not per event.

The scheduler thread emits a handful of events per sequence and step (a text delta, now and then a
block start or stop). Handing each to the loop with `call_soon_threadsafe` writes to the loop's
self-pipe and wakes it once per event; on a machine whose cores all run llama.cpp's threads, each of
those wake-ups is taken out of the forward pass. A `Relay` collects what a step emits and hands the
whole step over in one call (`flush`, which the scheduler runs after each step), in emission order.
This is the path of an engine in the API process (`local.isolate = false`, and the engine's tests); the
engine process writes a step's events to its pipe from the scheduler's thread instead (process.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from missive.wire.events import Event

Item = Event | BaseException


class Relay:
    """The events bound for one event loop, held until the scheduler's next `flush`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue[Item], Item]] = []
        self._lock = threading.Lock()

    def sender(self, queue: asyncio.Queue[Item]) -> Callable[[Item], None]:
        """A job's `emit`: the event waits for the end of the step."""

        def emit(item: Item) -> None:
            with self._lock:
                self._pending.append((queue, item))

        return emit

    def flush(self) -> None:
        """Hand what was emitted since the last flush to the loop, in one wake-up (scheduler thread)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            try:
                self.loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop has closed: nobody waits for these events any more
                pass


def _deliver(batch: list[tuple[asyncio.Queue[Item], Item]]) -> None:
    for queue, item in batch:
        queue.put_nowait(item)
