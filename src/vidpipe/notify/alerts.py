"""Alerts about money: budgets crossing 80 % and 100 %."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.money.ledger import Crossing
from vidpipe.money.periods import week_start
from vidpipe.money.reports import usage
from vidpipe.money.units import to_usd
from vidpipe.notify.channels import AlertChannel
from vidpipe.notify.outbox import enqueue_alert
from vidpipe.store.db import Database
from vidpipe.store.schema import budget_alerts


async def budget_crossings(
    conn: AsyncConnection,
    channels: Sequence[AlertChannel],
    crossings: Sequence[Crossing],
    now: float,
) -> None:
    for c in crossings:
        stop = " New billable work for it is on hold." if c.threshold >= 100 else ""
        await enqueue_alert(
            conn,
            channels,
            title=f"vidpipe budget {c.threshold}% used",
            text=(
                f"The {c.period}ly budget of {c.scope} is at {c.threshold}%: "
                f"${to_usd(c.used_micros)} of ${to_usd(c.limit_micros)}.{stop}"
            ),
            data={
                "scope": c.scope,
                "period": c.period,
                "threshold": c.threshold,
                "used_usd": to_usd(c.used_micros),
                "limit_usd": to_usd(c.limit_micros),
            },
            now=now,
        )


async def weekly_report(
    db: Database, conn: AsyncConnection, channels: Sequence[AlertChannel], now: float
) -> bool:
    """Once per week (Monday, UTC), last week's spend to the alert channels."""
    if not channels:
        return False
    start = week_start(now)
    first = await db.insert_ignore(
        conn,
        budget_alerts,
        {
            "scope": "report",
            "period": "week",
            "period_start": start,
            "threshold": 0,
            "sent_at": now,
        },
    )
    if not first:
        return False
    rows = await usage(conn, start=start - 7 * 86400, end=start, group_by=["provider"])
    total = sum(float(r["spend_usd"]) for r in rows)
    lines = [
        f"{r['provider']}: ${r['spend_usd']:.2f}, {r['jobs']} videos, {r['seconds']} s, "
        f"{r['failures']} failures (${r['failure_cost_usd']:.2f})"
        for r in rows
    ]
    await enqueue_alert(
        conn,
        channels,
        title="vidpipe weekly spend",
        text=f"Last week: ${total:.2f}\n" + ("\n".join(lines) or "no usage"),
        data={"week_start": int(start - 7 * 86400), "total_usd": round(total, 6), "rows": rows},
        now=now,
    )
    return True
