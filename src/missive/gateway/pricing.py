"""What a request costs: per-model prices from settings, the cache multipliers and the batch discount.

Amounts are integers of pico-USD (wire/money.py): a price of $P per million tokens is P * 1e6 pico-USD
per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from missive.settings import ModelPrice, PricingSettings
from missive.wire.money import PICO, to_pico

CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ = Decimal("1.25"), Decimal("2"), Decimal("0.1")  # spec §8


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0


@dataclass(frozen=True)
class Cost:
    input: int
    cache_write: int
    cache_read: int
    output: int

    @property
    def total(self) -> int:
        return self.input + self.cache_write + self.cache_read + self.output

    def columns(self) -> dict[str, int]:
        return {
            "cost_input": self.input,
            "cost_cache_write": self.cache_write,
            "cost_cache_read": self.cache_read,
            "cost_output": self.output,
            "cost": self.total,
        }


class Pricing:
    def __init__(self, settings: PricingSettings) -> None:
        self._prices = dict(settings.models)
        self._batch_factor = Decimal(1) - Decimal(str(settings.batch_discount))

    def price(self, model: str, engine: str | None = None) -> ModelPrice | None:
        """The price of `model` as `engine` serves it ("engine/model"), else of `model`, else of the longest
        configured prefix of it (dated ids); None: free."""
        for name in ([f"{engine}/{model}"] if engine else []) + [model]:
            if name in self._prices:
                return self._prices[name]
        prefixes = [known for known in self._prices if model.startswith(known + "-")]
        return self._prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, tokens: Tokens, service_tier: str = "standard", engine: str | None = None) -> Cost:
        price = self.price(model, engine)
        if price is None:
            return Cost(0, 0, 0, 0)
        factor = self._batch_factor if service_tier == "batch" else Decimal(1)
        base = _per_token(price.input) * factor

        def rate(explicit: float | None, multiplier: Decimal) -> Decimal:
            return _per_token(explicit) * factor if explicit is not None else base * multiplier

        write_5m = rate(price.cache_write_5m, CACHE_WRITE_5M)
        write_1h = rate(price.cache_write_1h, CACHE_WRITE_1H)
        read = rate(price.cache_read, CACHE_READ)
        return Cost(
            input=to_pico(base * tokens.input),
            cache_write=to_pico(write_5m * tokens.cache_write_5m + write_1h * tokens.cache_write_1h),
            cache_read=to_pico(read * tokens.cache_read),
            output=to_pico(_per_token(price.output) * factor * tokens.output),
        )


def _per_token(usd_per_million: float) -> Decimal:
    return Decimal(str(usd_per_million)) * PICO / 10**6
