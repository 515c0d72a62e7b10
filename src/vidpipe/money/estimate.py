"""Estimates and actual costs: pure functions of prices and what was asked or made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidpipe.core.retry import RetryPolicy
from vidpipe.money.catalog import Price, tier_of
from vidpipe.money.units import to_micros


class NotAVideoPrice(ValueError):
    pass


@dataclass(frozen=True)
class Estimate:
    per_attempt_micros: int  # one submission
    expected_micros: int  # one successful run of every step
    ceiling_micros: int  # every billable retry the policy allows, too


def video_attempt_micros(price: Price, *, seconds: float, width: int, height: int) -> int:
    if price.unit == "video":
        return to_micros(price.usd)
    if price.unit != "second":
        raise NotAVideoPrice(f"a video cannot be priced per {price.unit}")
    per_second = price.tiers.get(tier_of(width, height), price.usd)
    # Providers bill whole seconds; a partial second costs a whole one.
    return to_micros(per_second * math.ceil(seconds - 1e-9))


def estimate_video(
    price: Price, *, seconds: float, width: int, height: int, policy: RetryPolicy
) -> Estimate:
    per = video_attempt_micros(price, seconds=seconds, width=width, height=height)
    # Transient failures never reach the provider's meter; generation and quality
    # retries may each be billed.
    billable_tries = 1 + policy.generation_resubmits + policy.quality_regenerations
    return Estimate(per, per, per * billable_tries)


def actual_video_micros(
    price: Price | None,
    *,
    reported_usd: float | None,
    seconds_delivered: float,
    width: int,
    height: int,
    reserved_micros: int,
) -> int:
    """What a finished attempt cost: the provider's own figure where it gives one, else
    the price of what was delivered, else (no price known any more) the reservation."""
    if reported_usd is not None:
        return to_micros(reported_usd)
    if price is None:
        return reserved_micros
    return video_attempt_micros(price, seconds=seconds_delivered, width=width, height=height)
