"""Prompt caching with the Claude API's meaning (spec §8), over real KV state.

An entry is the KV state of a prompt prefix that ended at a `cache_control` breakpoint, saved from
the sequence that computed it into host memory. A later request of the same workspace whose prompt
has the same tokens up to one of its breakpoints (or up to a block boundary at most 20 blocks before
one), and would compute them in the same prefill chunks, restores that state instead of computing
it, so a hit changes no number of the response. The tokens reported as read are tokens whose
prefill was skipped. Entries live for their TTL (5 minutes or 1 hour), refreshed on every hit, within
a memory budget; what must go before its TTL ends goes least-recently-used, and is then a miss.

`plan` turns a lookup into the usage the response reports: reads, 1h writes, 5m writes, input.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from missive.engines.prompt import Ttl

LOOKBACK_BLOCKS = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass
class Entry:
    key: bytes
    length: int  # prefix tokens
    state: bytes  # llama.cpp sequence state holding exactly `length` positions
    ttl: Ttl
    expires_at: float
    last_used: float


@dataclass(frozen=True)
class Plan:
    """What a request reads from and writes to the cache, in tokens, by position in its prompt."""

    read: int  # A: the longest cached prefix found
    write_1h: int  # B - A
    write_5m: int  # C - B
    input: int  # tokens after the last breakpoint (or after the hit): billed as plain input
    writes: tuple[tuple[int, Ttl], ...]  # breakpoints to save once the prefill reaches them


def prefix_keys(workspace: str, tokens: list[int], ends: list[int], positions: list[int]) -> dict[int, bytes]:
    """A key for each prefix `tokens[:p]` computed in forward passes that ended at `ends`, chained so the
    whole prompt is hashed once.

    The passes are part of the key because a position's KV numbers depend on the pass that computed it:
    an entry is found only by a request that would have computed its prefix in the same passes, so a
    hit restores exactly the numbers that the request would compute without it.
    """
    keys: dict[int, bytes] = {}
    hasher = hashlib.blake2b(workspace.encode(), digest_size=16)
    passes = hashlib.blake2b(digest_size=16)
    done, index = 0, 0
    for position in sorted(set(positions)):
        hasher.update(array("i", tokens[done:position]).tobytes())
        start = index
        while index < len(ends) and ends[index] <= position:
            index += 1
        passes.update(array("i", ends[start:index]).tobytes())
        done = position
        keys[position] = hashlib.blake2b(hasher.digest() + passes.digest(), digest_size=16).digest()
    return keys


def lookup_positions(boundaries: list[int], breakpoints: list[tuple[int, Ttl]]) -> list[int]:
    """Block boundaries where a cached prefix may be found: each breakpoint and up to 20 blocks before it."""
    positions: set[int] = set()
    for position, _ in breakpoints:
        index = boundaries.index(position)
        positions.update(boundaries[max(0, index - LOOKBACK_BLOCKS) : index + 1])
    return sorted(p for p in positions if p > 0)


def plan(total: int, breakpoints: list[tuple[int, Ttl]], hit: int, cacheable: Callable[[int], bool]) -> Plan:
    """The Claude API's accounting: A = hit, B = last 1h breakpoint after A, C = last breakpoint after A."""
    writes = tuple((p, ttl) for p, ttl in breakpoints if p > hit and cacheable(p))
    last_1h = max((p for p, ttl in writes if ttl == "1h"), default=hit)
    last = max((p for p, _ in writes), default=hit)
    return Plan(read=hit, write_1h=last_1h - hit, write_5m=last - last_1h, input=total - last, writes=writes)


class PromptCache:
    def __init__(self, budget_bytes: int, clock: Callable[[], float]) -> None:
        self.budget = budget_bytes
        self.clock = clock
        self.entries: dict[bytes, Entry] = {}
        self.bytes_per_token = 0.0  # learned from the first saved state

    @property
    def size(self) -> int:
        return sum(len(entry.state) for entry in self.entries.values())

    def expire(self) -> None:
        now = self.clock()
        for key in [key for key, entry in self.entries.items() if entry.expires_at <= now]:
            del self.entries[key]

    def find(self, keys: dict[int, bytes]) -> Entry | None:
        """The live entry for the longest of these prefixes."""
        self.expire()
        for position in sorted(keys, reverse=True):
            entry = self.entries.get(keys[position])
            if entry is not None:
                return entry
        return None

    def touch(self, entry: Entry, ttl: Ttl | None, started: float) -> None:
        """A hit refreshes the lifetime, measured from the start of the request that read it."""
        if ttl is not None and TTL_SECONDS[ttl] > TTL_SECONDS[entry.ttl]:
            entry.ttl = ttl
        entry.expires_at = max(entry.expires_at, started + TTL_SECONDS[entry.ttl])
        entry.last_used = self.clock()

    def fits(self, length: int) -> bool:
        return length * self.bytes_per_token <= self.budget

    def put(self, key: bytes, length: int, state: bytes, ttl: Ttl, started: float) -> None:
        if length:
            self.bytes_per_token = max(self.bytes_per_token, len(state) / length)
        if len(state) > self.budget:
            return
        self.expire()
        self.entries.pop(key, None)
        while self.entries and self.size + len(state) > self.budget:
            oldest = min(self.entries.values(), key=lambda entry: entry.last_used)
            del self.entries[oldest.key]
        self.entries[key] = Entry(key, length, state, ttl, started + TTL_SECONDS[ttl], self.clock())
