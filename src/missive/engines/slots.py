"""A remote engine's `max_concurrency` slots, where interactive requests go before batch work.

`SlotPool` is a semaphore with two queues of waiters: whenever a slot frees, the longest-waiting
interactive request gets it, and a background one (a batch request, `Generation.background`) only
when no interactive request waits. A background request also never takes a free slot past an
interactive one already waiting. A freed slot passes straight to its next owner, so at most
`capacity` slots are ever held. There is no preemption: a background request that holds a slot keeps
it until its response ends (an upstream request cannot be paused).

Timeouts are the caller's (`Upstream.open`): an interactive request that gets no slot within
`first_token_timeout` is refused with a 529, so that its route can fall back; a background request
waits for a slot for as long as it takes (batch work waits for idle capacity by design), and its
`first_token_timeout` starts once it holds one.
"""

from __future__ import annotations

import asyncio
import collections


class SlotPool:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.capacity = capacity
        self.taken = 0
        self._interactive: collections.deque[asyncio.Future[None]] = collections.deque()
        self._background: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> tuple[int, int]:
        """(interactive, background) waiters."""
        return _pending(self._interactive), _pending(self._background)

    async def acquire(self, background: bool = False) -> None:
        """Take a slot, waiting behind every interactive waiter (and, for background, every waiter)."""
        ahead = _pending(self._interactive) + (_pending(self._background) if background else 0)
        if self.taken < self.capacity and not ahead:
            self.taken += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._background if background else self._interactive
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed a slot, then cancelled: pass it on
                self.release()
            elif future in queue:
                queue.remove(future)
            raise

    def release(self) -> None:
        """Free a slot: hand it to the next waiter, interactive first, or return it to the pool."""
        for queue in (self._interactive, self._background):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the slot changes owner: `taken` stays the same
                    return
        self.taken -= 1


def _pending(queue: collections.deque[asyncio.Future[None]]) -> int:
    return sum(not future.done() for future in queue)
