"""Money: integers of pico-USD (1e-12 USD), so that sums are exact on every database, and USD strings.

An amount a client sets (a spend limit, a credit balance) is a plain decimal string of at most
`MAX_USD`, far below what a 64-bit column of pico-USD holds (9,223,372.03 USD).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

PICO = 10**12
MAX_USD = Decimal(1_000_000)
MAX_PICO = int(MAX_USD) * PICO
_AMOUNT = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")


def to_pico(value: Decimal) -> int:
    """A Decimal of pico-USD, rounded half up to an integer."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def usd_to_pico(usd: str | float | Decimal) -> int:
    return to_pico(Decimal(str(usd)) * PICO)


def parse_usd(text: str) -> int:
    """A client's USD amount, e.g. "100.00", in pico-USD; ValueError unless 0 <= amount <= MAX_USD."""
    if not _AMOUNT.fullmatch(text):
        raise ValueError('Input should be a decimal amount in USD, e.g. "100.00"')
    amount = Decimal(text)
    if amount < 0:
        raise ValueError("Input should be greater than or equal to 0")
    if amount > MAX_USD:
        raise ValueError(f"Input should be at most {MAX_USD:.2f} (USD)")
    return usd_to_pico(amount)


def pico_to_usd(amount: int) -> str:
    """A decimal string in USD, e.g. "12.345678" (six decimals: micro-dollars)."""
    return str((Decimal(amount) / PICO).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def pico_to_cents(amount: int) -> str:
    """A decimal string in cents, as the Claude API's cost report gives amounts."""
    return format((Decimal(amount) / (PICO // 100)).normalize(), "f")
