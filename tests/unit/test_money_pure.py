import datetime as dt

import pytest

from vidpipe.core.retry import RetryPolicy
from vidpipe.money.catalog import Price, PriceBook, tier_of
from vidpipe.money.estimate import (
    NotAVideoPrice,
    actual_video_micros,
    estimate_video,
    video_attempt_micros,
)
from vidpipe.money.periods import period_end, period_start
from vidpipe.money.units import to_micros, to_usd


@pytest.mark.parametrize(
    ("usd", "micros"), [("0.05", 50_000), (0.1 + 0.2, 300_000), ("12.3456785", 12_345_679)]
)
def test_micros_are_exact(usd: str | float, micros: int) -> None:
    assert to_micros(usd) == micros
    assert to_usd(micros) == pytest.approx(float(usd), abs=1e-6)


@pytest.mark.parametrize(
    ("w", "h", "tier"),
    [(1280, 720, "720p"), (720, 1280, "720p"), (1920, 1080, "1080p"), (3840, 2160, "4k")],
)
def test_tiers(w: int, h: int, tier: str) -> None:
    assert tier_of(w, h) == tier


@pytest.mark.parametrize(
    ("price", "seconds", "size", "micros"),
    [
        (Price(usd=0.05), 5, (1280, 720), 250_000),
        (Price(usd=0.05), 4.2, (1280, 720), 250_000),  # whole seconds are billed
        (Price(usd=0.05, tiers={"1080p": 0.08}), 5, (1920, 1080), 400_000),
        (Price(usd=0.05, tiers={"1080p": 0.08}), 5, (1280, 720), 250_000),
        (Price(unit="video", usd=0.35), 10, (1280, 720), 350_000),
        (Price(usd=0.0), 10, (1280, 720), 0),
    ],
)
def test_attempt_cost(price: Price, seconds: float, size: tuple[int, int], micros: int) -> None:
    assert video_attempt_micros(price, seconds=seconds, width=size[0], height=size[1]) == micros


def test_estimate_includes_the_billable_retry_allowance() -> None:
    policy = RetryPolicy(generation_resubmits=1, quality_regenerations=3)
    est = estimate_video(Price(usd=0.1), seconds=5, width=1280, height=720, policy=policy)
    assert (est.per_attempt_micros, est.expected_micros, est.ceiling_micros) == (
        500_000,
        500_000,
        2_500_000,
    )


def test_a_character_price_cannot_price_a_video() -> None:
    with pytest.raises(NotAVideoPrice):
        video_attempt_micros(Price(unit="character", usd=0.0003), seconds=5, width=1, height=1)


@pytest.mark.parametrize(
    ("reported", "price", "delivered", "expected"),
    [
        (0.42, Price(usd=0.05), 5.0, 420_000),  # the provider's own figure wins
        (None, Price(usd=0.05), 4.0, 200_000),  # else what was delivered
        (None, None, 4.0, 777),  # else the reservation
    ],
)
def test_actual_cost(
    reported: float | None, price: Price | None, delivered: float, expected: int
) -> None:
    assert (
        actual_video_micros(
            price,
            reported_usd=reported,
            seconds_delivered=delivered,
            width=1280,
            height=720,
            reserved_micros=777,
        )
        == expected
    )


def test_pricebook_layers() -> None:
    book = PriceBook(settings={"luma/ray-2": Price(usd=0.2)})
    assert book.price("luma/ray-2") == Price(usd=0.2)
    assert book.price("runway/gen4_turbo") is not None
    assert book.price("nobody/nothing") is None
    assert book.price("local/procedural") == Price(
        usd=0.0, source="runs on this machine: no provider charge"
    )


def test_periods_are_utc_days_and_months() -> None:
    t = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC).timestamp()
    assert period_start("day", t) == dt.datetime(2026, 12, 31, tzinfo=dt.UTC).timestamp()
    assert period_end("day", t) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert period_start("month", t) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    assert period_end("month", t) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
