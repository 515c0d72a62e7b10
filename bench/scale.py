"""Benchmark: 10,000 jobs in flight at once, held by one worker process.

Goal: <= 300 MB RSS for the worker, and no polling beyond what the polling policy
(``core/retry.py: next_poll_delay_s``) gives for the provider's latency and hints.

What happens (127.0.0.1 only, cleaned up at the end, also on errors):

* a scratch PostgreSQL database (``--db postgres``, the default) or SQLite file, migrated;
* ``--jobs`` (10,000) videos of 1 s 640x360 on ``simulated/sim-1`` with a long latency
  (median ``--latency-s`` 600 s, clamped to at least 75 % of it: nothing finishes during
  the run) and no failures, created in this process by ``--create-tasks`` concurrent
  loops of ``runtime.videos.create`` (the creation rate is measured);
* then one ``python -m vidpipe worker`` (``--concurrency``, default 8) submits them all
  and settles into polling; the run watches it for ``--settle-s`` seconds after the
  last submission (bounded by ``--timeout`` overall);
* once a second: the worker's RSS (``VmRSS``, and the kernel's peak ``VmHWM`` at the
  end) and CPU (``utime + stime`` of ``/proc/<pid>/stat``), the number of submitted
  attempts; every ``--poll-sample-s`` seconds a snapshot of every in-flight step's
  ``updated_at``: each poll rewrites it (``_still_running``), so the steps whose value
  moved since the last snapshot, past their submission, are the polls made in between
  (exact while a step is polled at most once between snapshots; the interval between
  two polls of one step is never below 5 s here).

Expected polls: the executor schedules the first poll ``next_poll_delay_s(elapsed=0)``
after submission (half the provider's typical latency, at most 30 s), then each next
poll after ``next_poll_delay_s(elapsed, hint)``, where the simulated provider hints
``min(remaining, 5 s)``: the hint wins, so every in-flight job is due every 5 s.
From the attempts' real submission times this gives the polls the policy asks for in
the measured window (``expected_polls_per_s``); ``policy_without_hint_polls_per_s``
is the same without a provider hint (the interval grows to 30 s).

    python bench/scale.py [--db postgres|sqlite] [--jobs 10000] [--settle-s 180]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    REPO,
    Child,
    HostCpu,
    bench_env,
    clear_vidpipe_env,
    emit,
    machine,
    note,
    process_cpu_s,
    scratch_database,
    scratch_dir,
    vidpipe_cmd,
)
from sqlalchemy import func, select, text

from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.retry import next_poll_delay_s
from vidpipe.core.runtime import Runtime
from vidpipe.providers.simulated import SimulatedProvider
from vidpipe.store import migrate
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts

GOAL_RSS_MB = 300.0
REQUEST = CreateVideo(prompt="scale", seconds=1, size="640x360", model="simulated/sim-1")


def simulated_config(latency_s: float) -> dict[str, Any]:
    return {
        "seed": 5,
        "latency_median_s": latency_s,
        "latency_sigma": 0.2,
        "latency_min_s": latency_s * 0.75,
        "latency_max_s": latency_s * 2,
    }


# -- the worker process --------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_worker(env: dict[str, str], log: Path) -> Child:
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            vidpipe_cmd("worker"),
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    return Child(proc, log)


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key = line.split(":", 1)[0]
            if key in values:
                values[key] = int(line.split()[1])
    return values["VmRSS"], values["VmHWM"]


# -- sampling ---------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the worker started
    rss_mb: float
    cpu_s: float
    submitted: int


@dataclass
class PollCounter:
    """Polls seen as moves of steps' ``updated_at`` past their attempt's submission."""

    last: dict[str, float] = field(default_factory=dict)
    # (wall time of the snapshot, polls since the previous one)
    marks: list[tuple[float, int]] = field(default_factory=list)
    submitted_at: dict[str, float] = field(default_factory=dict)

    async def snapshot(self, runtime: Runtime) -> int:
        query = text(
            "SELECT s.id, s.updated_at, a.submitted_at FROM steps s "
            "JOIN attempts a ON a.step_id = s.id AND a.state = 'submitted'"
        )
        async with runtime.db.read() as conn:
            rows = (await conn.execute(query)).all()
        now = time.time()
        polls = 0
        for step_id, updated_at, submitted_at in rows:
            sid = str(step_id)
            self.submitted_at[sid] = float(submitted_at)
            before = self.last.get(sid)
            # The submission writes updated_at == submitted_at; any later write is a poll.
            if before is not None and updated_at != before and updated_at > submitted_at:
                polls += 1
            self.last[sid] = float(updated_at)
        self.marks.append((now, polls))
        return polls

    def polls_between(self, t1: float, t2: float) -> int:
        return sum(n for at, n in self.marks[1:] if t1 < at <= t2)


def expected_polls(
    submitted_at: list[float], t1: float, t2: float, typical_s: float, hint_s: float | None
) -> int:
    """Polls the policy schedules in (t1, t2] for jobs submitted at these times, each
    poll on time (a worker that falls behind makes fewer)."""
    total = 0
    for sub in submitted_at:
        at = sub + next_poll_delay_s(typical_latency_s=typical_s, elapsed_s=0)
        while at <= t2:
            if at > t1:
                total += 1
            at += next_poll_delay_s(typical_latency_s=typical_s, elapsed_s=at - sub, hint_s=hint_s)
    return total


# -- the run ------------------------------------------------------------------------------


async def create_jobs(runtime: Runtime, n: int, tasks: int) -> float:
    async with runtime.db.write() as conn:
        tenant = await tenant_q.ensure_tenant(conn, "scale", runtime.clock.now())
    remaining = iter(range(n))
    started = time.monotonic()

    async def loop() -> None:
        for _ in remaining:
            await runtime.videos.create(tenant.id, REQUEST)

    await asyncio.gather(*(loop() for _ in range(tasks)))
    return time.monotonic() - started


async def count_submitted(runtime: Runtime) -> int:
    async with runtime.db.read() as conn:
        value = await conn.scalar(
            select(func.count()).select_from(attempts).where(attempts.c.state == "submitted")
        )
    return int(value or 0)


async def finished_jobs(runtime: Runtime) -> int:
    async with runtime.db.read() as conn:
        value = await conn.scalar(
            text("SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'expired')")
        )
    return int(value or 0)


async def pg_counters(runtime: Runtime) -> tuple[int, int] | None:
    """(transactions committed, sessions opened) in this database so far (PostgreSQL)."""
    if not runtime.db.is_postgres:
        return None
    async with runtime.db.read() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT xact_commit, sessions FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            )
        ).one()
    return int(row[0]), int(row[1])


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        return ""

    changed = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {"head": git("rev-parse", "--short", "HEAD"), "src_files_changed": len(changed)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    clear_vidpipe_env()
    sim = simulated_config(args.latency_s)
    with scratch_dir("scale") as home:
        async with scratch_database(args.db) as database_url:
            settings = Settings(
                home=home, database_url=database_url, simulated_config=json.dumps(sim)
            )
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
            env = bench_env(
                home,
                database_url,
                simulated_config=json.dumps(sim),
                worker_concurrency=str(args.concurrency),
                step_deadline_s="86400",
            )
            runtime = await Runtime.open(settings, run_migrations=False)
            try:
                return await run(args, runtime, env, home, sim)
            finally:
                await runtime.close()


async def run(
    args: argparse.Namespace,
    runtime: Runtime,
    env: dict[str, str],
    home: Path,
    sim: dict[str, Any],
) -> dict[str, Any]:
    provider = runtime.registry.get("simulated")
    assert isinstance(provider, SimulatedProvider)
    note(f"creating {args.jobs} jobs with {args.create_tasks} concurrent loops")
    host_create = HostCpu()
    cpu0 = time.process_time()
    create_s = await create_jobs(runtime, args.jobs, args.create_tasks)
    create_cpu_s = time.process_time() - cpu0
    create_busy = host_create.busy_cores()
    note(f"created {args.jobs} in {create_s:.1f} s ({args.jobs / create_s:.0f}/s)")

    worker = start_worker(env, home / "worker.log")
    try:
        return await watch(
            args, runtime, provider, worker, sim, create_s, create_cpu_s, create_busy
        )
    finally:
        code = await asyncio.to_thread(worker.stop, 60.0)
        note(f"worker stopped ({code})")


async def watch(
    args: argparse.Namespace,
    runtime: Runtime,
    provider: SimulatedProvider,
    worker: Child,
    sim: dict[str, Any],
    create_s: float,
    create_cpu_s: float,
    create_busy: float,
) -> dict[str, Any]:
    t_start = time.monotonic()
    wall_start = time.time()
    samples: list[Sample] = []
    polls = PollCounter()
    deadline = t_start + args.timeout
    all_submitted_at: float | None = None  # monotonic
    first_submit_t: float | None = None
    last_snapshot = 0.0
    commits: list[tuple[float, int, int]] = []
    host = HostCpu()
    bench_cpu0 = time.process_time()
    while True:
        now = time.monotonic()
        if not worker.alive():
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}):\n{worker.tail()}")
        rss, _hwm = rss_kb(worker.pid)
        cpu = process_cpu_s(worker.pid)
        submitted = await count_submitted(runtime)
        samples.append(Sample(round(now - t_start, 2), round(rss / 1024, 1), cpu, submitted))
        if first_submit_t is None and submitted > 0:
            first_submit_t = now
        if all_submitted_at is None and submitted >= args.jobs:
            all_submitted_at = now
            note(f"all {args.jobs} submitted after {now - t_start:.1f} s; settling")
        if now - last_snapshot >= args.poll_sample_s:
            last_snapshot = now
            await polls.snapshot(runtime)
            counters = await pg_counters(runtime)
            if counters is not None:
                commits.append((time.time(), *counters))
        if len(samples) % 15 == 0:
            note(
                f"t={now - t_start:.0f} s rss={rss / 1024:.0f} MB cpu={cpu:.1f} s "
                f"submitted={submitted} polls(last)={polls.marks[-1][1] if polls.marks else 0}"
            )
        if all_submitted_at is not None and now - all_submitted_at >= args.settle_s:
            break
        if now > deadline:
            note(f"time limit {args.timeout:.0f} s reached with {submitted} submitted")
            break
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    wall_end = time.time()
    host_busy = host.busy_cores()
    bench_cpu = time.process_time() - bench_cpu0
    _rss, hwm = rss_kb(worker.pid)
    finished = await finished_jobs(runtime)
    await polls.snapshot(runtime)

    # Submissions: from the first to the last submitted attempt (the database's times).
    async with runtime.db.read() as conn:
        sub_times = sorted(
            float(t)
            for (t,) in await conn.execute(
                select(attempts.c.submitted_at).where(attempts.c.submitted_at.is_not(None))
            )
        )
    submit_span = sub_times[-1] - sub_times[0] if len(sub_times) > 1 else float("nan")

    # The polling window: from 30 s after the last submission (every job past its first
    # poll) to the end; CPU over the same window.
    last_sub = sub_times[-1] if sub_times else wall_end
    first_poll_delay = next_poll_delay_s(typical_latency_s=provider.typical_latency_s, elapsed_s=0)
    w1 = min(last_sub + first_poll_delay, wall_end - 30.0)
    w2 = wall_end
    window_s = max(w2 - w1, 1e-9)
    observed = polls.polls_between(w1, w2)
    # The provider's own hint for a job in flight now (the policy obeys it).
    probe_job = next(iter(polls.submitted_at), None)
    hint: float | None = None
    if probe_job is not None:
        async with runtime.db.read() as conn:
            pjid = await conn.scalar(
                select(attempts.c.provider_job_id).where(attempts.c.step_id == probe_job)
            )
        if pjid:
            hint = (await provider.poll(str(pjid))).next_poll_s
    expected = expected_polls(sub_times, w1, w2, provider.typical_latency_s, hint)
    no_hint = expected_polls(sub_times, w1, w2, provider.typical_latency_s, None)

    def at_wall(t: float) -> Sample:
        rel = t - wall_start
        return min(samples, key=lambda s: abs(s.t - rel))

    s1, s2 = at_wall(w1), at_wall(w2)
    cpu_window = s2.cpu_s - s1.cpu_s
    span_samples = max(s2.t - s1.t, 1e-9)
    commits_per_s = sessions_per_s = None
    in_window = [c for c in commits if w1 <= c[0] <= w2]
    if len(in_window) >= 2:
        span = in_window[-1][0] - in_window[0][0]
        commits_per_s = round((in_window[-1][1] - in_window[0][1]) / span, 1)
        # New server connections: a pool that fits the worker opens none in steady state.
        sessions_per_s = round((in_window[-1][2] - in_window[0][2]) / span, 1)
    # Polls per second over time (30 s buckets), to see the worker keep up or fall behind.
    timeline = []
    bucket = 30.0
    t = wall_start
    while t < wall_end:
        n = polls.polls_between(t, t + bucket)
        length = min(bucket, wall_end - t)
        sub = sum(1 for s in sub_times if s <= t + bucket)
        rel = round(t - wall_start)
        sample = at_wall(min(t + bucket, wall_end))
        timeline.append(
            {
                "t_s": rel,
                "polls_per_s": round(n / length, 1),
                "submitted": sub,
                "rss_mb": sample.rss_mb,
            }
        )
        t += bucket
    peak_rss = max(s.rss_mb for s in samples)
    polls_per_s = observed / window_s
    expected_per_s = expected / window_s
    return {
        "bench": "scale",
        "db": args.db,
        "jobs": args.jobs,
        "worker_concurrency": args.concurrency,
        "latency_median_s": args.latency_s,
        "create_s": round(create_s, 1),
        "creates_per_s": round(args.jobs / create_s, 1),
        "create_cpu_ms_per_job": round(create_cpu_s / args.jobs * 1000, 2),
        "create_host_busy_cores": create_busy,
        "submitted": len(sub_times),
        "all_submitted": all_submitted_at is not None,
        "submit_s": round(submit_span, 1),
        "submissions_per_s": round((len(sub_times) - 1) / submit_span, 1)
        if submit_span == submit_span and submit_span > 0
        else None,
        "finished_jobs": finished,
        "peak_rss_mb": peak_rss,
        "vm_hwm_mb": round(hwm / 1024, 1),
        "rss_end_mb": samples[-1].rss_mb,
        "worker_cpu_s": round(samples[-1].cpu_s, 1),
        "worker_wall_s": samples[-1].t,
        "window_s": round(window_s, 1),
        "cpu_pct_while_polling": round(cpu_window / span_samples * 100, 1),
        "polls": observed,
        "polls_per_s": round(polls_per_s, 1),
        "provider_hint_s": hint,
        "expected_polls_per_s": round(expected_per_s, 1),
        "policy_without_hint_polls_per_s": round(no_hint / window_s, 1),
        "poll_ratio": round(polls_per_s / expected_per_s, 3) if expected_per_s else None,
        "cpu_ms_per_poll": round(cpu_window * 1000 / observed, 2) if observed else None,
        "pg_commits_per_s": commits_per_s,
        "pg_sessions_opened_per_s": sessions_per_s,
        "host_busy_cores": host_busy,
        "bench_process_cpu_s": round(bench_cpu, 1),
        "timeline": timeline,
        "goal": f"<= {GOAL_RSS_MB:g} MB RSS; polls/s <= expected",
        "goal_rss_met": peak_rss <= GOAL_RSS_MB,
        "goal_polls_met": expected_per_s == 0 or polls_per_s <= expected_per_s * 1.02,
        "simulated": sim,
        "machine": machine(),
        "git": git_state(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="VIDPIPE_WORKER_CONCURRENCY (pool: 10)"
    )
    parser.add_argument("--latency-s", type=float, default=600.0, help="median job latency")
    parser.add_argument("--create-tasks", type=int, default=8, help="concurrent create loops")
    parser.add_argument("--settle-s", type=float, default=180.0, help="watch after submitting")
    parser.add_argument("--poll-sample-s", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the watch")
    args = parser.parse_args()

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(args)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        note("interrupted: worker stopped, scratch database and directory removed")
        raise SystemExit(2) from None
    emit(result)


if __name__ == "__main__":
    main()
