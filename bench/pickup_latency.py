"""Benchmark: how soon a worker in another process picks up a new job.

Starts a real ``vidpipe worker`` process, then creates jobs one at a time from this
process (``runtime.videos.create``, no worker here), with a pause between them, and
reads per job ``first attempt created_at - job created_at`` from the database (float
epoch seconds written by the two processes; same machine, same clock).

* PostgreSQL: the worker sleeps up to VIDPIPE_IDLE_POLL_S=5 s, so only LISTEN/NOTIFY
  can wake it fast. Goal: p50 <= 20 ms.
* SQLite: no NOTIFY across processes; the worker polls (default idle poll 1 s), which
  shows the difference.

Deliveries are kept cheap (validation_mode=basic, derivatives off) so the worker's
capacity is not what is measured: at 20 jobs/s full validation and derivatives (ffmpeg
passes) would saturate 2 cores and the queue, not the wake-up, would set the latency.

    python bench/pickup_latency.py [--db postgres|sqlite] [--jobs 100] [--gap-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
from benchlib import (
    Child,
    HostCpu,
    bench_env,
    clear_vidpipe_env,
    emit,
    exit_on_sigterm,
    machine,
    ms,
    note,
    percentile,
    raw_pg_dsn,
    scratch_database,
    scratch_dir,
    vidpipe_cmd,
    wait_for_quiet,
)
from sqlalchemy import func, select

from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts, jobs, workers

GOAL_P50_MS = 20.0
REQUEST = CreateVideo(prompt="bench", seconds=4, size="720x1280", model="instant/test")


async def wait_worker_ready(
    runtime: Runtime, child: Child, database_url: str | None, limit_s: float = 60.0
) -> None:
    """The worker registered itself and, on PostgreSQL, holds its LISTEN connection."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the worker exited early:\n{child.tail()}")
        async with runtime.db.read() as conn:
            registered = await conn.scalar(
                select(func.count()).select_from(workers).where(workers.c.stopped_at.is_(None))
            )
        listening = True
        if database_url is not None and registered:
            conn_pg = await asyncpg.connect(raw_pg_dsn(database_url))
            try:
                listening = bool(
                    await conn_pg.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                    )
                )
            finally:
                await conn_pg.close()
        if registered and listening:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the worker was not ready after {limit_s:.0f} s:\n{child.tail()}")


async def pickups(runtime: Runtime, job_ids: list[str]) -> dict[str, float]:
    """job id -> first attempt created_at - job created_at, for jobs with an attempt."""
    async with runtime.db.read() as conn:
        rows = await conn.execute(
            select(jobs.c.id, jobs.c.created_at, func.min(attempts.c.created_at))
            .join(attempts, attempts.c.job_id == jobs.c.id)
            .where(jobs.c.id.in_(job_ids))
            .group_by(jobs.c.id, jobs.c.created_at)
        )
        return {str(r[0]): float(r[2]) - float(r[1]) for r in rows}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    clear_vidpipe_env()
    idle_poll = (
        args.idle_poll if args.idle_poll is not None else (5.0 if args.db == "postgres" else 1.0)
    )
    with scratch_dir("pickup") as home:
        async with scratch_database(args.db) as database_url:
            settings = Settings(home=home, database_url=database_url, instant_provider=True)
            runtime = await Runtime.open(settings)  # migrates the scratch database
            worker = None
            try:
                async with runtime.db.write() as conn:
                    tenant = await tenant_q.ensure_tenant(conn, "bench", time.time())
                env = bench_env(
                    home,
                    database_url,
                    instant_provider="true",
                    instant_latency_s="0",
                    idle_poll_s=f"{idle_poll:g}",
                    # Cheap deliveries: the worker's capacity is not what is measured.
                    validation_mode="basic",
                    derivatives="false",
                )
                worker = Child.start(vidpipe_cmd("worker"), env, Path(home) / "worker.log")
                await wait_worker_ready(runtime, worker, database_url)
                for _ in range(args.warmup):  # the worker renders its stock clip once
                    await runtime.videos.create(tenant.id, REQUEST)
                    await asyncio.sleep(args.gap_ms / 1000)
                await asyncio.sleep(idle_poll + 1.0)
                busy_before = wait_for_quiet(max_wait_s=args.quiet_wait)
                host = HostCpu()
                note(f"{args.jobs} jobs, {args.gap_ms:g} ms apart (idle poll {idle_poll:g} s)")
                job_ids: list[str] = []
                for _ in range(args.jobs):
                    created = await runtime.videos.create(tenant.id, REQUEST)
                    job_ids.append(created.job.id)
                    await asyncio.sleep(args.gap_ms / 1000)
                deadline = time.monotonic() + idle_poll + 30.0
                found = await pickups(runtime, job_ids)
                while len(found) < len(job_ids) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    found = await pickups(runtime, job_ids)
                host_busy = host.busy_cores()
                if not worker.alive():
                    raise RuntimeError(f"the worker died:\n{worker.tail()}")
            finally:
                if worker is not None:
                    code = worker.stop()
                await runtime.close()
    values = list(found.values())
    p50 = percentile(values, 50)
    goal: str | None = None
    goal_met: bool | None = None
    if args.db == "postgres":  # SQLite is measured for comparison only
        goal = f"p50 <= {GOAL_P50_MS:g} ms (PostgreSQL, LISTEN/NOTIFY)"
        goal_met = len(values) == args.jobs and p50 * 1000 <= GOAL_P50_MS
    return {
        "bench": "pickup_latency",
        "db": args.db,
        "idle_poll_s": idle_poll,
        "jobs": args.jobs,
        "gap_ms": args.gap_ms,
        "picked_up": len(values),
        "p50_ms": ms(p50),
        "p95_ms": ms(percentile(values, 95)),
        "p99_ms": ms(percentile(values, 99)),
        "min_ms": ms(min(values)) if values else None,
        "max_ms": ms(max(values)) if values else None,
        "host_busy_cores": host_busy,
        "host_busy_cores_before": busy_before,
        "worker_exit_code": code,
        "goal": goal,
        "goal_met": goal_met,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--idle-poll", type=float, default=None, help="worker idle poll (s); 5 on PG, 1 on SQLite"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="longest wait for an idle machine (s)"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    emit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
