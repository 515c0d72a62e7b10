"""Budget periods: UTC days and months, identified by their start time."""

from __future__ import annotations

import datetime as dt
from typing import Literal

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")


def period_start(period: Period, at: float) -> float:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def period_end(period: Period, at: float) -> float:
    start = dt.datetime.fromtimestamp(period_start(period, at), dt.UTC)
    if period == "day":
        end = start + dt.timedelta(days=1)
    elif start.month == 12:
        end = start.replace(year=start.year + 1, month=1)
    else:
        end = start.replace(month=start.month + 1)
    return end.timestamp()


def week_start(at: float) -> float:
    """Monday 00:00 UTC of the week of ``at``."""
    day = dt.datetime.fromtimestamp(at, dt.UTC).date()
    monday = day - dt.timedelta(days=day.weekday())
    return dt.datetime.combine(monday, dt.time(), dt.UTC).timestamp()
