"""Token buckets, continuously refilled: capacity C per minute refills at C/60 per second.

One operation applies to several buckets at once, atomically:

- `admit`: take `amount` from every bucket, or from none. A bucket must hold min(amount, capacity):
  a charge larger than the whole bucket waits for a full bucket instead of being refused for ever,
  and then takes the bucket below zero (a debt that refills like any other deficit).
- `force`: take (or with a negative amount, give back) unconditionally: settling an estimate.
- `peek`: change nothing; report the levels.

`MemoryBuckets` serves one process. `RedisBuckets` runs the same arithmetic as one Lua script on the
Redis server with the server's clock, so any number of front ends share one set of buckets exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

Mode = Literal["admit", "force", "peek"]


@dataclass(frozen=True)
class Charge:
    key: str
    capacity: int  # per minute, > 0
    amount: float = 0


@dataclass(frozen=True)
class Outcome:
    granted: bool
    wait: float  # seconds until the refused charges would fit; 0 when granted
    levels: list[float]  # after the operation (before it, when refused)


class BucketStore(Protocol):
    async def apply(self, charges: list[Charge], mode: Mode) -> Outcome: ...

    async def close(self) -> None: ...


def decide(charges: list[Charge], levels: list[float], mode: Mode) -> tuple[bool, float, list[float]]:
    """The shared arithmetic, given the refilled levels: (granted, wait, levels after)."""
    wait = 0.0
    if mode == "admit":
        for charge, level in zip(charges, levels, strict=True):
            need = min(charge.amount, charge.capacity)
            if need > level:
                wait = max(wait, (need - level) * 60 / charge.capacity)
    if wait > 0:
        return False, wait, levels
    if mode == "peek":
        return True, 0.0, levels
    after = [
        min(charge.capacity, level - charge.amount) for charge, level in zip(charges, levels, strict=True)
    ]
    return True, 0.0, after


class MemoryBuckets:
    """Buckets in this process (the default: one front end)."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (level, at)

    async def apply(self, charges: list[Charge], mode: Mode) -> Outcome:
        now: float = self._clock()  # type: ignore[operator]
        levels = []
        for charge in charges:
            level, at = self._state.get(charge.key, (float(charge.capacity), now))
            levels.append(min(float(charge.capacity), level + (now - at) * charge.capacity / 60))
        granted, wait, after = decide(charges, levels, mode)
        if granted and mode != "peek":
            for charge, level in zip(charges, after, strict=True):
                self._state[charge.key] = (level, now)
        return Outcome(granted, wait, after)

    async def close(self) -> None:
        pass


_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local levels, wait = {}, 0
for i = 1, #KEYS do
  local capacity, amount = tonumber(ARGV[i * 2]), tonumber(ARGV[i * 2 + 1])
  local level = capacity
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  if state[1] then
    level = math.min(capacity, tonumber(state[1]) + (now - tonumber(state[2])) * capacity / 60)
  end
  levels[i] = level
  if mode == 'admit' then
    local need = math.min(amount, capacity)
    if need > level then wait = math.max(wait, (need - level) * 60 / capacity) end
  end
end
local granted = 1
if wait > 0 then granted = 0 end
if granted == 1 and mode ~= 'peek' then
  for i = 1, #KEYS do
    local capacity, amount = tonumber(ARGV[i * 2]), tonumber(ARGV[i * 2 + 1])
    local level = math.min(capacity, levels[i] - amount)
    levels[i] = level
    redis.call('HSET', KEYS[i], 'l', string.format('%.6f', level), 't', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - level) * 60000 / capacity) + 60000)
  end
end
local out = {granted, string.format('%.6f', wait)}
for i = 1, #KEYS do out[#out + 1] = string.format('%.6f', levels[i]) end
return out
"""


class RedisBuckets:
    """Buckets in Redis, shared by every front end that uses the same URL and prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        from missive.gateway.outages import CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT

        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=REDIS_SOCKET_TIMEOUT
        )
        self._prefix = prefix
        self._script = self._client.register_script(_LUA)

    async def apply(self, charges: list[Charge], mode: Mode) -> Outcome:
        args: list[object] = [mode]
        for charge in charges:
            args += [charge.capacity, repr(float(charge.amount))]
        reply = await self._script(keys=[self._prefix + charge.key for charge in charges], args=args)
        return Outcome(bool(int(reply[0])), float(reply[1]), [float(level) for level in reply[2:]])

    async def close(self) -> None:
        await self._client.aclose()
