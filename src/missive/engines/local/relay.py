"""Events from a scheduler thread to where they go: handed over once per step, not once per event.

The scheduler thread emits a handful of events per sequence and step (a text delta, now and then a
block start or stop). Handing each to the loop with `call_soon_threadsafe` writes to the loop's
self-pipe and wakes it once per event; on a machine whose cores all run llama.cpp's threads, each of
those wake-ups is taken out of the forward pass. A `Relay` collects what a step emits and hands the
whole step over in one call (`flush`, which the scheduler runs after each step), in emission order.
`Relay.to_loop` delivers to asyncio queues on an event loop (an engine in the API process:
`local.isolate = false`, and the engine's tests); the engine process's relay writes the step's events
to its pipe instead, from the scheduler's thread (process.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from missive.wire.events import Event

Item = Event | BaseException
Batch = list[tuple[Any, Item]]  # (where the event goes, the event), in emission order


class Relay:
    """The events of one destination, held until the scheduler's next `flush`, then given to `deliver`."""

    def __init__(self, deliver: Callable[[Batch], None]) -> None:
        self.deliver = deliver
        self._pending: Batch = []
        self._lock = threading.Lock()

    @classmethod
    def to_loop(cls, loop: asyncio.AbstractEventLoop) -> Relay:
        """Into asyncio queues (the senders' targets) on `loop`, in one wake-up of it per step."""

        def deliver(batch: Batch) -> None:
            try:
                loop.call_soon_threadsafe(_put, batch)
            except RuntimeError:  # the loop has closed: nobody waits for these events any more
                pass

        return cls(deliver)

    def sender(self, target: Any) -> Callable[[Item], None]:
        """A job's `emit`: the event waits for the end of the step."""

        def emit(item: Item) -> None:
            with self._lock:
                self._pending.append((target, item))

        return emit

    def flush(self) -> None:
        """Deliver what was emitted since the last flush, together (scheduler thread)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.deliver(batch)


def _put(batch: Batch) -> None:
    for queue, item in batch:
        queue.put_nowait(item)
