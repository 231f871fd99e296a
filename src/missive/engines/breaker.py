"""A circuit breaker per engine: an engine that keeps failing is taken out of rotation, then probed back.

    closed     requests go through; `failures` in a row open it
    open       requests skip it for `cool_down` seconds
    half-open  then one request goes through as a probe: success closes it, failure reopens it (a
               probe that never reports, say its client went away, lets another through after
               `cool_down`)

A pure decision object over an injected clock, as `gateway/buckets.py` is, so its tests need no waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Breaker:
    failures: int = 3
    cool_down: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic)
    _failed: int = 0
    _opened_at: float | None = None
    _probe_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self._opened_at >= self.cool_down else "open"

    def allows(self) -> bool:
        """Whether a request may go to the engine now; in half-open state, the first caller is the probe."""
        state = self.state
        if state == "closed":
            return True
        now = self.clock()
        if state == "half-open" and (self._probe_at is None or now - self._probe_at >= self.cool_down):
            self._probe_at = now
            return True
        return False

    def succeeded(self) -> None:
        self._failed, self._opened_at, self._probe_at = 0, None, None

    def failed(self) -> None:
        self._failed += 1
        if self._probe_at is not None or self._failed >= self.failures:
            self._opened_at, self._probe_at = self.clock(), None
