"""The price catalog: what each model costs, with where the figure came from.

Shipped defaults carry their source and date; the operator overrides them with
``VIDPIPE_PRICES`` or the admin API. A model without a price is refused (never
silently free). The local, instant and simulated providers are explicitly free: they
run on this machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

Unit = Literal["second", "video", "character", "token", "image"]


class Price(BaseModel):
    """A price per unit, in USD; per-second prices may have resolution tiers."""

    model_config = {"extra": "forbid", "frozen": True}

    unit: Unit = "second"
    usd: float = Field(ge=0)
    # Per-unit price by resolution tier ("720p", "1080p", "4k": the longer side up to
    # 1280, 1920, above), overriding ``usd`` for that tier.
    tiers: dict[str, float] = Field(default_factory=dict)
    source: str = "operator"
    as_of: str | None = None


def tier_of(width: int, height: int) -> str:
    longest = max(width, height)
    if longest <= 1280:
        return "720p"
    if longest <= 1920:
        return "1080p"
    return "4k"


_FREE = Price(unit="second", usd=0.0, source="runs on this machine: no provider charge")

DEFAULT_PRICES: dict[str, Price] = {
    "local/procedural": _FREE,
    "instant/test": _FREE,
    "simulated/sim-1": _FREE,
    # Runway: 1 credit = $0.01; credits per second from Runway's published table
    # (veo models through Runway: the upper end of the stated 20-40 / 10-15 ranges).
    "runway/gen4_turbo": Price(usd=0.05, source="Runway credits table, 5/s", as_of="2026-08"),
    "runway/gen4.5": Price(usd=0.12, source="Runway credits table, 12/s", as_of="2026-08"),
    "runway/veo3": Price(usd=0.40, source="Runway credits table, 40/s", as_of="2026-08"),
    "runway/veo3.1": Price(usd=0.40, source="Runway credits table, 20-40/s", as_of="2026-08"),
    "runway/veo3.1_fast": Price(usd=0.15, source="Runway credits table, 10-15/s", as_of="2026-08"),
    "luma/ray-2": Price(usd=0.08, source="third-party price lists (unconfirmed)", as_of="2026-03"),
    "veo/veo-3.1-generate-preview": Price(
        usd=0.40, source="third-party price lists (unconfirmed)", as_of="2026-03"
    ),
    "veo/veo-3.1-fast-generate-preview": Price(
        usd=0.15, source="third-party price lists (unconfirmed)", as_of="2026-03"
    ),
}


@dataclass
class PriceBook:
    """Defaults, then settings, then admin overrides (the last word)."""

    settings: Mapping[str, Price] = field(default_factory=dict)
    overrides: dict[str, Price] = field(default_factory=dict)

    def price(self, model_ref: str) -> Price | None:
        return (
            self.overrides.get(model_ref)
            or self.settings.get(model_ref)
            or DEFAULT_PRICES.get(model_ref)
        )

    def known(self) -> dict[str, Price]:
        return {**DEFAULT_PRICES, **self.settings, **self.overrides}


def price_from_json(data: Mapping[str, Any]) -> Price:
    return Price.model_validate(data)
