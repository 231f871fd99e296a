"""The models, engines and rate-limits pages' figures: what is served and from where, each engine's
breaker, the headline numbers of /metrics, and each workspace's limits and what it has used of them."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import State

from missive import metrics
from missive.engines.base import Engine
from missive.engines.registry import Registry
from missive.gateway.limits import Limiter
from missive.settings import RateLimitSettings, Settings

BREAKER_WORDS = {"closed": "healthy", "half-open": "probing", "open": "out of rotation"}


def served(registry: Registry) -> list[tuple[str, Any]]:
    """(model id, route) for each id served under its own name (aliases are listed with their target)."""
    seen: dict[str, Any] = {}
    for model_id, card in registry.listing():
        if card.id == model_id or model_id not in seen:
            route = registry.resolve(model_id)
            if route.id == model_id:
                seen[model_id] = route
    return list(seen.items())


def models(registry: Registry, settings: Settings) -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for model in settings.models:
        aliases.setdefault(model.id, []).extend(model.aliases)
    for engine in settings.engines:
        for remote in engine.models:
            aliases.setdefault(remote.id, []).extend(remote.aliases)
    rows = []
    for model_id, route in served(registry):
        card = route.card
        rows.append(
            {
                "id": model_id,
                "display_name": card.display_name,
                "context_window": card.context_window,
                "max_output_tokens": card.max_output_tokens,
                "targets": [target.engine.name for target in route.targets],
                "aliases": aliases.get(model_id, []),
            }
        )
    return rows


def engines(state: State) -> list[dict[str, Any]]:
    settings: Settings = state.settings
    remote = {engine.name: engine for engine in settings.engines}
    registry: Registry = state.registry
    rows = []
    for engine in state.engines:
        config = remote.get(engine.name)
        where = f"{config.kind} upstream at {config.url}" if config else "embedded llama.cpp on this machine"
        breaker = registry.breakers[engine.name].state
        rows.append(
            {
                "name": engine.name,
                "where": where,
                "state": breaker,
                "health": BREAKER_WORDS.get(breaker, breaker),
                "models": [card.id for card in engine.models()],
            }
        )
    return rows


async def headline(engines: list[Engine]) -> dict[str, float]:
    """Queue, active sequences, tokens/s (mean decode speed), prompt cache: summed over models, from the
    same text as GET /metrics."""
    isolated = [engine for engine in engines if hasattr(engine, "metrics_text")]
    sources = [await engine.metrics_text() for engine in isolated] or [
        generate_latest(metrics.ENGINE_REGISTRY)
    ]  # type: ignore[attr-defined]
    text = (generate_latest(metrics.REGISTRY) + b"".join(sources)).decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    speed_sum = found.get("missive_decode_tokens_per_second_sum", 0.0)
    speed_count = found.get("missive_decode_tokens_per_second_count", 0.0)
    ttft_sum = found.get("missive_time_to_first_token_seconds_sum", 0.0)
    ttft_count = found.get("missive_time_to_first_token_seconds_count", 0.0)
    return {
        "queue": found.get("missive_queue_depth", 0.0),
        "active": found.get("missive_active_sequences", 0.0),
        "tokens_per_second": speed_sum / speed_count if speed_count else 0.0,
        "time_to_first_token": ttft_sum / ttft_count if ttft_count else 0.0,
        "kv_tokens": found.get("missive_kv_cache_tokens", 0.0),
        "prompt_cache_mib": found.get("missive_prompt_cache_bytes", 0.0) / 2**20,
        "cache_read_tokens": found.get("missive_prompt_cache_read_tokens_total", 0.0),
        "output_tokens": found.get("missive_output_tokens_total", 0.0),
    }


_DIMENSIONS = (("requests", "Requests"), ("input-tokens", "Input tokens"), ("output-tokens", "Output tokens"))


async def limits(
    config: RateLimitSettings, limiter: Limiter, registry: Registry, workspaces: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each workspace: its tier, and each per-minute limit with what is in use now, for the models in use
    or with limits of their own; the idle rest, which share the tier's limits, in one row."""
    rows = []
    for space in workspaces:
        tier_name = space["rate_limit_tier"] or config.default_tier
        per_model = []
        for model_id, _route in served(registry):
            pool = limiter.pool(space["id"], space["rate_limit_tier"], model_id)
            verdict = await limiter.peek(pool)
            dims = []
            for name, words in _DIMENSIONS:
                limit = verdict.headers.get(f"anthropic-ratelimit-{name}-limit")
                left = verdict.headers.get(f"anthropic-ratelimit-{name}-remaining")
                if limit is None:
                    dims.append({"words": words, "limit": None})
                    continue
                used = max(0, int(limit) - int(left or 0))
                dims.append(
                    {
                        "words": words,
                        "limit": int(limit),
                        "used": used,
                        "share": used / int(limit) if int(limit) else 0,
                    }
                )
            per_model.append({"model": model_id, "dims": dims})
        overrides = config.tiers[tier_name].models if tier_name in config.tiers else {}
        busy = [
            row for row in per_model if row["model"] in overrides or any(d.get("used") for d in row["dims"])
        ]
        idle = [row for row in per_model if row not in busy]
        if idle:  # idle, and no limits of their own: the tier's limits, unused, in one row
            busy.append({"model": "every other model" if busy else "every model", "dims": idle[0]["dims"]})
        rows.append({"workspace": space, "tier": tier_name, "models": busy})
    return rows
