"""Money as integers: micro-dollars (1 USD = 1,000,000), so sums never drift."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MICROS_PER_USD = 1_000_000


def to_micros(usd: Decimal | float | str) -> int:
    return int((Decimal(str(usd)) * MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def to_usd(micros: int) -> float:
    """For display and JSON: dollars, exact to the micro-dollar."""
    return round(micros / MICROS_PER_USD, 6)
