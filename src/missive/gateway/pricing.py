"""What a request costs: per-model prices from settings, the cache multipliers and the batch discount.

Amounts are integers of pico-USD (1e-12 USD), so that sums are exact on every database: a price of
$P per million tokens is P * 1e6 pico-USD per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from missive.settings import ModelPrice, PricingSettings

PICO = 10**12
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
            input=_round(base * tokens.input),
            cache_write=_round(write_5m * tokens.cache_write_5m + write_1h * tokens.cache_write_1h),
            cache_read=_round(read * tokens.cache_read),
            output=_round(_per_token(price.output) * factor * tokens.output),
        )


def _per_token(usd_per_million: float) -> Decimal:
    return Decimal(str(usd_per_million)) * PICO / 10**6


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def usd_to_pico(usd: str | float | Decimal) -> int:
    return _round(Decimal(str(usd)) * PICO)


def pico_to_usd(amount: int) -> str:
    """A decimal string in USD, e.g. "12.345678" (six decimals: micro-dollars)."""
    return str((Decimal(amount) / PICO).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def pico_to_cents(amount: int) -> str:
    """A decimal string in cents, as the Claude API's cost report gives amounts."""
    return format((Decimal(amount) / (PICO // 100)).normalize(), "f")
