"""Unit tests of the policy parts: token buckets (in process and in Redis), limits and their headers,
pricing, report windows."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest
from platform_backends import REDIS_URL, redis_prefix

from missive.gateway.buckets import Charge, MemoryBuckets, RedisBuckets
from missive.gateway.limits import Limiter
from missive.gateway.pricing import Pricing, Tokens
from missive.settings import PricingSettings, RateLimitSettings
from missive.wire import reports
from missive.wire.errors import ApiError
from missive.wire.money import pico_to_cents, pico_to_usd, usd_to_pico


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_continuously_and_admits_all_or_nothing() -> None:
    clock = Clock()
    store = MemoryBuckets(clock)
    rpm, tokens = Charge("r", 60, 1), Charge("t", 600, 100)

    async def run() -> None:
        for _ in range(6):
            assert (await store.apply([rpm, tokens], "admit")).granted
        refused = await store.apply([rpm, tokens], "admit")  # tokens: 0 left, needs 100 at 10/s
        assert not refused.granted and refused.wait == pytest.approx(10.0)
        assert refused.levels == pytest.approx([54, 0])  # nothing was taken from the request bucket
        clock.now += 5  # half way: 50 tokens back, still refused
        assert not (await store.apply([rpm, tokens], "admit")).granted
        clock.now += 5
        granted = await store.apply([rpm, tokens], "admit")
        assert granted.granted and granted.levels == pytest.approx(
            [60 - 1, 0]
        )  # 54 + 10 s at 1/s, capped at 60
        clock.now += 3600
        assert (await store.apply([rpm, tokens], "peek")).levels == pytest.approx([60, 600])  # full, not more

    asyncio.run(run())


def test_a_charge_larger_than_the_bucket_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    clock = Clock()
    store = MemoryBuckets(clock)

    async def run() -> None:
        assert (await store.apply([Charge("i", 60, 150)], "admit")).levels == pytest.approx([-90])
        refused = await store.apply([Charge("i", 60, 10)], "admit")
        assert refused.wait == pytest.approx(100.0)  # from -90 to 10 at 1/s
        refund = await store.apply([Charge("i", 60, -1000)], "force")  # settling gives back, up to full
        assert refund.levels == pytest.approx([60])

    asyncio.run(run())


def test_redis_buckets_are_shared_exactly_by_several_front_ends() -> None:
    with redis_prefix() as prefix:

        async def run() -> list[bool]:
            fronts = [RedisBuckets(REDIS_URL, prefix) for _ in range(3)]
            try:
                charge = [Charge("ws:model:requests", 40, 1)]
                outcomes = await asyncio.gather(*(fronts[i % 3].apply(charge, "admit") for i in range(120)))
                debt = await fronts[0].apply([Charge("ws:model:input", 60, 150)], "admit")
                assert debt.levels[0] == pytest.approx(-90, abs=0.5)
                later = await fronts[1].apply([Charge("ws:model:input", 60, 10)], "admit")
                assert not later.granted and later.wait == pytest.approx(100, abs=0.5)
                return [outcome.granted for outcome in outcomes]
            finally:
                for front in fronts:
                    await front.close()

        granted = asyncio.run(run())
    assert sum(granted) == 40  # refill over the burst is a fraction of one request


def _limiter() -> Limiter:
    settings = RateLimitSettings(
        tiers={
            "t": {
                "requests_per_minute": 50,
                "input_tokens_per_minute": 30000,
                "output_tokens_per_minute": 8000,
                "count_tokens_requests_per_minute": 7,
                "models": {"big": {"requests_per_minute": 2}},
            }
        },
        default_tier="t",
    )
    return Limiter(settings, MemoryBuckets())


def test_limits_come_from_the_tier_with_model_overrides() -> None:
    limiter = _limiter()
    assert limiter.pool("ws", None, "small").limits == {
        "requests": 50,
        "input-tokens": 30000,
        "output-tokens": 8000,
    }
    assert limiter.pool("ws", "t", "big").limits == {"requests": 2}
    assert limiter.pool("ws", "unlimited", "small").limits == {}
    assert limiter.count_tokens_pool("ws", None).limits == {"requests": 7}


def test_headers_agree_with_the_buckets() -> None:
    limiter = _limiter()
    pool = limiter.pool("ws", None, "m")

    async def run() -> None:
        verdict = await limiter.admit(pool, {"requests": 1, "input-tokens": 12_345, "output-tokens": 4_000})
        headers = verdict.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "50"
        assert headers["anthropic-ratelimit-requests-remaining"] == "49"
        assert (
            headers["anthropic-ratelimit-input-tokens-remaining"] == "18000"
        )  # 17,655 to the nearest thousand
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "4000"
        assert (
            headers["anthropic-ratelimit-tokens-limit"] == "38000"
        )  # 30000 + 8000, as the Claude API reports
        assert headers["anthropic-ratelimit-tokens-remaining"] == "22000"  # 17,655 + 4,000
        now = datetime.now(UTC)
        input_reset = datetime.fromisoformat(headers["anthropic-ratelimit-input-tokens-reset"])
        assert abs((input_reset - now).total_seconds() - 12_345 / 500) <= 1.5  # refills 500/s
        output_reset = datetime.fromisoformat(headers["anthropic-ratelimit-output-tokens-reset"])
        assert abs((output_reset - now).total_seconds() - 30) <= 1.5
        settled = await limiter.settle(pool, {"output-tokens": -3_990})  # used 10 of the 4000 estimated
        assert settled.headers["anthropic-ratelimit-output-tokens-remaining"] == "8000"
        refused = await limiter.admit(pool, {"requests": 1, "input-tokens": 25_000})
        assert not refused.granted and refused.exceeded == "30,000 input tokens per minute"
        assert refused.retry_after == math.ceil((25_000 - 17_655) / 500)
        assert refused.headers["retry-after"] == str(refused.retry_after)

    asyncio.run(run())


def test_prices_multipliers_and_batch_discount() -> None:
    pricing = Pricing(PricingSettings(models={"local": {"input": 0.5, "output": 1, "cache_read": 0.01}}))
    million = 1_000_000
    sonnet = pricing.cost("claude-sonnet-4-6", Tokens(input=million, output=million))
    assert (sonnet.input, sonnet.output) == (usd_to_pico(3), usd_to_pico(15))
    cached = pricing.cost(
        "claude-sonnet-4-6", Tokens(cache_write_5m=million, cache_write_1h=million, cache_read=million)
    )
    assert cached.cache_write == usd_to_pico("3.75") + usd_to_pico(6) and cached.cache_read == usd_to_pico(
        "0.30"
    )
    batch = pricing.cost(
        "claude-sonnet-4-6", Tokens(input=million, cache_read=million, output=million), "batch"
    )
    assert (batch.input, batch.cache_read, batch.output) == (
        usd_to_pico("1.5"),
        usd_to_pico("0.15"),
        usd_to_pico("7.5"),
    )
    dated = pricing.cost("claude-haiku-4-5-20251001", Tokens(input=1, output=1))
    assert dated.total == usd_to_pico("0.000006")  # $1 + $5 per million, one token each
    assert pricing.cost("local", Tokens(cache_read=million)).total == usd_to_pico("0.01")
    assert (
        pricing.cost("smollm2", Tokens(input=million, output=million)).total == 0
    )  # unpriced local model: free
    assert (
        pico_to_usd(usd_to_pico("12.3456789")) == "12.345679" and pico_to_cents(usd_to_pico("1.5")) == "150"
    )


def test_report_windows_align_paginate_and_refuse_bad_input() -> None:
    win = reports.window("2026-03-04T10:17:00Z", "2026-03-04T15:00:00Z", "1h", "2", None)
    assert win.buckets() == [(win.start, win.start + 3600), (win.start + 3600, win.start + 7200)]
    assert datetime.fromtimestamp(win.start, UTC).hour == 10 and win.has_more
    following = reports.window(
        "2026-03-04T10:17:00Z", "2026-03-04T15:00:00Z", "1h", "2", reports.next_page(win)
    )
    assert following.start == win.start + 7200 and following.has_more
    last = reports.window("2026-03-04T10:17:00Z", "2026-03-04T15:00:00Z", "1h", "24", None)
    assert len(last.buckets()) == 5 and not last.has_more and reports.next_page(last) is None
    for args, message in [
        ((None, None, "1d", None, None), "starting_at: Field required"),
        (("2026-03-04T00:00:00Z", None, "2h", None, None), "bucket_width"),
        (("2026-03-04T00:00:00Z", None, "1d", "32", None), "limit: Input should be between 1 and 31"),
        (("yesterday", None, "1d", None, None), "starting_at: Input should be a valid datetime"),
    ]:
        with pytest.raises(ApiError) as caught:
            reports.window(*args)
        assert message in caught.value.message
