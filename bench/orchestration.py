"""Benchmark: jobs/s and CPU per job through the whole orchestration loop.

In one process: ``Runtime.open(settings)`` on a scratch SQLite file or PostgreSQL
database, the ``instant/test`` provider (latency 0) and a worker with validation OFF
(``runtime.new_worker(validate=False)``) and derivatives (thumbnail, poster, preview:
ffmpeg work like validation) off. Each job is one clip step that goes
create -> claim -> submit -> poll -> deliver (the provider's small clip is copied into
local storage) -> completed.

Two modes, each timed with wall clock and ``time.process_time()`` (all threads of
this process), after a warm-up of a few jobs through the whole loop (the instant
provider renders its stock clip once; caches and connections fill):

* ``stream`` (the default, what a running installation does): one worker runs while
  N jobs are created back to back in the same process; the clock stops when every
  job is terminal. CPU per job includes creating it.
* ``backlog``: N jobs are created while no worker runs (create cost alone), then a
  fresh worker drains them (worker cost alone). A fresh worker starts with the
  reconciler's sweep, which visits every open job: that is part of this figure.

Goal: <= 5 ms CPU per single-step job (create + drain).

    python bench/orchestration.py [--db sqlite|postgres] [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import resource
import time
from pathlib import Path
from typing import Any

from benchlib import (
    HostCpu,
    clear_vidpipe_env,
    emit,
    exit_on_sigterm,
    machine,
    note,
    scratch_database,
    scratch_dir,
    wait_for_quiet,
)
from sqlalchemy import func, select

from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.core.worker import Worker
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import jobs

GOAL_CPU_MS_PER_JOB = 5.0
TERMINAL = ("completed", "failed", "canceled", "expired")
REQUEST = CreateVideo(prompt="bench", seconds=4, size="720x1280", model="instant/test")


def children_cpu_s() -> float:
    """CPU of finished child processes (ffmpeg): zero unless media work sneaks in."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def statuses(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.read() as conn:
        rows = await conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
        return {str(status): int(count) for status, count in rows}


async def wait_terminal(runtime: Runtime, total: int, limit_s: float) -> dict[str, int]:
    """Poll (20 times a second: a few per mille of the CPU) until ``total`` jobs are done."""
    deadline = time.monotonic() + limit_s
    while True:
        counts = await statuses(runtime)
        if sum(counts.get(s, 0) for s in TERMINAL) >= total:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not done after {limit_s:.0f} s: {counts}")
        await asyncio.sleep(0.05)


async def create_jobs(runtime: Runtime, tenant_id: str, n: int) -> None:
    for _ in range(n):
        await runtime.videos.create(tenant_id, REQUEST)


async def run_worker_until_done(
    runtime: Runtime, total: int, limit_s: float
) -> tuple[Worker, dict[str, int]]:
    worker = runtime.new_worker(validate=False)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        counts = await wait_terminal(runtime, total, limit_s)
    finally:
        stop.set()
        await task
    return worker, counts


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    clear_vidpipe_env()
    profiler = cProfile.Profile() if args.cprofile else None
    with scratch_dir("orch") as home:
        async with scratch_database(args.db) as database_url:
            settings = Settings(
                home=home,
                database_url=database_url,
                instant_provider=True,
                instant_latency_s=0.0,
                instant_call_delay_s=0.0,
                # The provider's own call log (what tests count) is its work, not the
                # loop's: a cloud provider writes its logs on its own machines.
                instant_log_calls=False,
                worker_concurrency=args.concurrency,
                derivatives=False,  # media work, like validation: not the loop measured
            )
            runtime = await Runtime.open(settings)
            try:
                async with runtime.db.write() as conn:
                    tenant = await tenant_q.ensure_tenant(conn, "bench", time.time())

                note(f"warm-up: {args.warmup} jobs")
                if args.mode == "stream":
                    figures = await stream(runtime, tenant.id, args, profiler)
                else:
                    figures = await backlog(runtime, tenant.id, args, profiler)
            finally:
                await runtime.close()
    if profiler:
        profiler.dump_stats(args.cprofile)
        note(f"cProfile of the measured phase written to {args.cprofile}")
    n = args.jobs
    completed = figures.pop("completed")
    cpu_per_job_ms = figures["cpu_ms_per_job"]
    return {
        "bench": "orchestration",
        "db": args.db,
        "mode": args.mode,
        "jobs": n,
        "completed": completed,
        "not_completed": n - completed,
        "worker_concurrency": args.concurrency,
        **figures,
        "goal": f"<= {GOAL_CPU_MS_PER_JOB:g} ms CPU per job",
        "goal_met": cpu_per_job_ms <= GOAL_CPU_MS_PER_JOB and completed == n,
        "machine": machine(),
    }


async def stream(
    runtime: Runtime, tenant_id: str, args: argparse.Namespace, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    """One worker runs throughout; N jobs are created back to back while it works."""
    worker = runtime.new_worker(validate=False)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await create_jobs(runtime, tenant_id, args.warmup)
        await wait_terminal(runtime, args.warmup, args.timeout)
        busy_before = wait_for_quiet(max_wait_s=args.quiet_wait)
        actions0 = worker.steps_done
        host = HostCpu()
        note(f"stream: {args.jobs} jobs")
        if profiler:
            profiler.enable()
        w0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu_s()
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        await create_jobs(runtime, tenant_id, args.jobs)
        w1 = time.perf_counter()
        counts = await wait_terminal(runtime, args.warmup + args.jobs, args.timeout)
        w2, c2, k2 = time.perf_counter(), time.process_time(), children_cpu_s()
        u2 = resource.getrusage(resource.RUSAGE_SELF)
        if profiler:
            profiler.disable()
        host_busy = host.busy_cores()
    finally:
        stop.set()
        await task
    n = args.jobs
    return {
        "completed": counts.get("completed", 0) - args.warmup,
        "jobs_per_s": round(n / (w2 - w0), 1),
        "cpu_ms_per_job": round((c2 - c0) * 1000 / n, 3),
        "wall_s": round(w2 - w0, 2),
        "create_phase_s": round(w1 - w0, 2),
        "children_cpu_ms_per_job": round((k2 - k0) * 1000 / n, 3),
        "user_ms_per_job": round((u2.ru_utime - u0.ru_utime) * 1000 / n, 3),
        "system_ms_per_job": round((u2.ru_stime - u0.ru_stime) * 1000 / n, 3),
        "context_switches_per_job": round(
            (u2.ru_nvcsw - u0.ru_nvcsw + u2.ru_nivcsw - u0.ru_nivcsw) / n, 1
        ),
        "step_actions_per_job": round((worker.steps_done - actions0) / n, 2),
        "process_cpu_cores": round((c2 - c0) / (w2 - w0), 2),
        "host_busy_cores": host_busy,
        "host_busy_cores_before": busy_before,
    }


async def backlog(
    runtime: Runtime, tenant_id: str, args: argparse.Namespace, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    """N jobs created with no worker running, then drained by a fresh worker."""
    await create_jobs(runtime, tenant_id, args.warmup)
    await run_worker_until_done(runtime, args.warmup, args.timeout)
    busy_before = wait_for_quiet(max_wait_s=args.quiet_wait)
    host = HostCpu()
    note(f"backlog: create {args.jobs} jobs")
    if profiler:
        profiler.enable()
    w0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu_s()
    await create_jobs(runtime, tenant_id, args.jobs)
    w1, c1 = time.perf_counter(), time.process_time()
    note("backlog: drain")
    worker, counts = await run_worker_until_done(runtime, args.warmup + args.jobs, args.timeout)
    w2, c2, k2 = time.perf_counter(), time.process_time(), children_cpu_s()
    if profiler:
        profiler.disable()
    n = args.jobs
    return {
        "completed": counts.get("completed", 0) - args.warmup,
        "jobs_per_s": round(n / (w2 - w0), 1),
        "cpu_ms_per_job": round((c2 - c0) * 1000 / n, 3),
        "wall_s": round(w2 - w0, 2),
        "create_jobs_per_s": round(n / (w1 - w0), 1),
        "drain_jobs_per_s": round(n / (w2 - w1), 1),
        "create_cpu_ms_per_job": round((c1 - c0) * 1000 / n, 3),
        "drain_cpu_ms_per_job": round((c2 - c1) * 1000 / n, 3),
        "children_cpu_ms_per_job": round((k2 - k0) * 1000 / n, 3),
        "step_actions_per_job": round(worker.steps_done / n, 2),
        "process_cpu_cores": round((c2 - c0) / (w2 - w0), 2),
        "host_busy_cores": host.busy_cores(),
        "host_busy_cores_before": busy_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mode", choices=["stream", "backlog"], default="stream")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16, help="worker concurrency")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest drain (s)")
    parser.add_argument("--cprofile", type=Path, default=None, help="write a cProfile here")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="longest wait for an idle machine (s)"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    emit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
