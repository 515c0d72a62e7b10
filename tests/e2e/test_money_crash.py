"""Money survives killed workers: every reservation ends settled or released."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.e2e.conftest import VIDPIPE, vidpipe_env
from vidpipe.config import Settings
from vidpipe.core import reconciler
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.money import ledger
from vidpipe.money.reports import ledger_totals
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts, budget_usage

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

PRICES = {"simulated/sim-1": {"unit": "second", "usd": 1.0}}
SIMULATED = {
    "seed": 5,
    "latency_median_s": 1.5,
    "latency_sigma": 0.3,
    "latency_min_s": 0.8,
    "latency_max_s": 3.0,
}


async def test_killed_workers_leak_no_reservation(
    pg_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    env = vidpipe_env(
        home,
        VIDPIPE_DATABASE_URL=pg_url,
        VIDPIPE_SIMULATED_CONFIG=json.dumps(SIMULATED),
        VIDPIPE_PRICES=json.dumps(PRICES),
        VIDPIPE_LEASE_S="2",
        VIDPIPE_IDLE_POLL_S="0.2",
    )
    settings = Settings(
        home=home,
        database_url=pg_url,
        simulated_config=json.dumps(SIMULATED),
        prices=PRICES,  # type: ignore[arg-type]
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
            await ledger.set_budget(
                runtime.db, conn, ledger.GLOBAL, "day", 10_000_000, runtime.clock.now()
            )
        ids = [
            (
                await runtime.videos.create(
                    tenant.id,
                    CreateVideo(prompt=f"m{i}", seconds=1, size="640x360", model="simulated/sim-1"),
                )
            ).job.id
            for i in range(10)
        ]

        def start(n: int) -> subprocess.Popen[bytes]:
            with (tmp_path / f"w{n}.log").open("ab") as log:
                proc = subprocess.Popen([*VIDPIPE, "worker"], env=env, stdout=log, stderr=log)
            processes.append(proc)
            return proc

        first = start(0)

        async def reserved_attempts() -> int:
            async with runtime.db.read() as conn:
                return int(
                    await conn.scalar(
                        select(func.count())
                        .select_from(attempts)
                        .where(attempts.c.money_state == "reserved")
                    )
                    or 0
                )

        async with asyncio.timeout(60):
            while await reserved_attempts() < 3:
                await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # holding reservations of attempts at the provider
        first.wait(timeout=10)
        second = start(1)

        async def all_done() -> bool:
            jobs, _ = await runtime.videos.list(None, limit=100)
            return all(j.status in ("completed", "failed") for j in jobs)

        async with asyncio.timeout(120):
            while not await all_done():
                await asyncio.sleep(0.2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        await reconciler.sweep(runtime.db, runtime.clock, idempotency_ttl_s=3600)
        async with runtime.db.read() as conn:
            totals = await ledger_totals(conn)
            usage = (
                await conn.execute(
                    select(budget_usage.c.reserved_micros, budget_usage.c.spent_micros).where(
                        budget_usage.c.scope == "global", budget_usage.c.period == "day"
                    )
                )
            ).one()
            leaked = await reserved_attempts()
        statuses = {(await runtime.videos.get(None, i)).status for i in ids}
    finally:
        await runtime.close()
    assert statuses == {"completed"}
    assert leaked == 0
    assert usage[0] == 0  # nothing held any more
    assert usage[1] == totals["settle"] == 10_000_000  # each video paid once
    assert totals["reserve"] == totals["settle"] + totals["release"] - totals.get("adjust", 0)
