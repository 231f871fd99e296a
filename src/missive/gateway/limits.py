"""Rate limits per workspace and model (spec §9): RPM, ITPM and OTPM, and count_tokens' own RPM.

A workspace's limits come from its named tier in settings (or the default tier), with per-model
overrides. ITPM counts input plus cache writes, never cache reads. OTPM is charged `max_tokens` at
admission (at most the bucket's size) and settled to the real count at the end. Every response
carries `anthropic-ratelimit-*` headers read from the same buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from missive.gateway.buckets import BucketStore, Charge, MemoryBuckets, Outcome, RedisBuckets
from missive.settings import RateLimits, RateLimitSettings

DIMENSIONS = ("requests", "input-tokens", "output-tokens")
_NOUNS = {"requests": "requests", "input-tokens": "input tokens", "output-tokens": "output tokens"}


@dataclass(frozen=True)
class Verdict:
    granted: bool
    retry_after: int  # whole seconds, when refused
    headers: dict[str, str]
    exceeded: str | None = None  # which limit refused: a sentence fragment


@dataclass
class Pool:
    """The buckets that one request draws on."""

    workspace_id: str
    model: str
    limits: dict[str, int] = field(default_factory=dict)  # dimension -> per-minute capacity (> 0 only)

    def key(self, dimension: str) -> str:
        return f"{self.workspace_id}:{self.model}:{dimension}"


class Limiter:
    def __init__(self, settings: RateLimitSettings, store: BucketStore) -> None:
        self._settings = settings
        self._store = store

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> Limiter:
        if settings.backend == "redis":
            return cls(settings, RedisBuckets(settings.redis_url, settings.redis_prefix))
        return cls(settings, MemoryBuckets())

    async def close(self) -> None:
        await self._store.close()

    def pool(self, workspace_id: str, tier_name: str | None, model: str) -> Pool:
        tiers = self._settings.tiers
        tier = tiers.get(tier_name or self._settings.default_tier) or tiers[self._settings.default_tier]
        limits: RateLimits = tier.models.get(model, tier)
        values = {
            "requests": limits.requests_per_minute,
            "input-tokens": limits.input_tokens_per_minute,
            "output-tokens": limits.output_tokens_per_minute,
        }
        return Pool(workspace_id, model, {name: value for name, value in values.items() if value > 0})

    def count_tokens_pool(self, workspace_id: str, tier_name: str | None) -> Pool:
        tiers = self._settings.tiers
        tier = tiers.get(tier_name or self._settings.default_tier) or tiers[self._settings.default_tier]
        limits = {"requests": tier.count_tokens_requests_per_minute}
        return Pool(
            workspace_id, "count_tokens", {name: value for name, value in limits.items() if value > 0}
        )

    async def admit(self, pool: Pool, amounts: dict[str, float]) -> Verdict:
        """Take `amounts` (dimension -> units) from the pool's buckets, all or none."""
        return await self._apply(pool, amounts, "admit")

    async def settle(self, pool: Pool, adjustments: dict[str, float]) -> Verdict:
        """Correct earlier estimates: positive takes more, negative gives back."""
        return await self._apply(pool, {name: value for name, value in adjustments.items() if value}, "force")

    async def peek(self, pool: Pool) -> Verdict:
        return await self._apply(pool, {}, "peek")

    async def _apply(self, pool: Pool, amounts: dict[str, float], mode: str) -> Verdict:
        dimensions = [name for name in DIMENSIONS if name in pool.limits]
        if not dimensions:
            return Verdict(True, 0, {})
        charges = [Charge(pool.key(name), pool.limits[name], amounts.get(name, 0)) for name in dimensions]
        outcome = await self._store.apply(charges, mode)  # type: ignore[arg-type]
        headers = rate_headers(pool, dimensions, outcome)
        if outcome.granted:
            return Verdict(True, 0, headers)
        retry_after = max(1, math.ceil(outcome.wait))
        headers["retry-after"] = str(retry_after)
        exceeded = next(
            f"{pool.limits[name]:,} {_NOUNS[name]} per minute"
            for charge, name, level in zip(charges, dimensions, outcome.levels, strict=True)
            if min(charge.amount, charge.capacity) > level
        )
        return Verdict(False, retry_after, headers, exceeded)


def rate_headers(pool: Pool, dimensions: list[str], outcome: Outcome) -> dict[str, str]:
    """`anthropic-ratelimit-*`: limit, remaining (tokens rounded to the nearest thousand), and the RFC 3339
    time at which the bucket is full again. `tokens-*` combines input and output, as the Claude API
    reports them when no tighter limit applies (30000 + 8000 -> 38000)."""
    now = datetime.now(UTC)
    headers: dict[str, str] = {}
    resets: dict[str, datetime] = {}
    levels: dict[str, int] = {}
    for name, level in zip(dimensions, outcome.levels, strict=True):
        capacity = pool.limits[name]
        resets[name] = now + timedelta(seconds=max(0.0, capacity - level) * 60 / capacity)
        levels[name] = max(0, math.floor(level))
        shown = levels[name] if name == "requests" else _round_thousand(levels[name])
        headers[f"anthropic-ratelimit-{name}-limit"] = str(capacity)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(shown)
        headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(resets[name])
    token_dimensions = [name for name in ("input-tokens", "output-tokens") if name in pool.limits]
    if token_dimensions:
        headers["anthropic-ratelimit-tokens-limit"] = str(sum(pool.limits[name] for name in token_dimensions))
        headers["anthropic-ratelimit-tokens-remaining"] = str(
            _round_thousand(sum(levels[name] for name in token_dimensions))
        )
        headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(max(resets[name] for name in token_dimensions))
    return headers


def _round_thousand(value: int) -> int:
    return int(math.floor(value / 1000 + 0.5)) * 1000


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
