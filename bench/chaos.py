"""Benchmark: a chaos run on PostgreSQL with killed workers and a misbehaving provider.

What happens, all on 127.0.0.1, cleaned up at the end (also on errors):

* a scratch PostgreSQL database, migrated; a scratch ``VIDPIPE_HOME`` shared by this
  process and the workers (the simulated provider's state directory lives there);
* ``--jobs`` (default 240) videos of 1 s 640x360 on ``simulated/sim-1``, created
  in-process with ``runtime.videos.create``;
* ``--workers`` (default 3) ``python -m vidpipe worker`` processes, with the simulated
  provider at ~30 % transient call failures (submit and poll), 10 % generation
  failures (failed + content policy), 10 % bad outputs (corrupt + truncated + wrong
  resolution), some expired output URLs, a few hung jobs (ended by the step deadline),
  submits that create the job and lose the answer, and Retry-After hints; short retry
  delays and a 3 s lease so killed workers' steps come back quickly;
* a killer that SIGKILLs a random worker every ``--kill-every`` seconds and starts a
  replacement (at most ``--max-kills``);
* a webhook sender that plays the provider's side: for every job the provider has
  (read from its state directory, so also jobs whose submit answer was lost), it takes
  ``SimulatedProvider.webhook_deliveries`` (signed; already duplicated, late, missing
  and out of order by the plan) and POSTs each to the app's ``/v1/hooks/simulated``
  through an in-process ``httpx.ASGITransport``, sent again with probability
  ``--extra-duplicates`` and shifted by up to ``--reorder-s`` seconds (reordering);
* when every job is terminal (bounded by ``--timeout``): workers are stopped with
  SIGTERM (they must drain and exit 0), then ``vidpipe.testing.chaos.audit`` and the
  extra checks below run; the result is one JSON line.

Extra checks beyond ``audit`` (its problems are reported together):

* every job created is in the database and terminal (none lost);
* a completed job has exactly one succeeded attempt, and it is its last;
* a failed job failed for a reason: a permanent verdict that its provider job's plan
  explains (content policy, hang -> deadline), or a retry budget of that class used up;
* each attempt's provider job is the one the provider recorded for the attempt's
  idempotency key (one provider job per attempt, whatever the kills);
* every webhook was answered 2xx, and the duplicates were recognised as duplicates.

It also counts provider jobs that no attempt knows (orphans: the submit created the
job, its answer was lost, and the retry used a new idempotency key).

    python bench/chaos.py [--jobs 240] [--workers 3] [--kill-every 5] [--max-kills 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import heapq
import json
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from benchlib import (
    REPO,
    Child,
    HostCpu,
    bench_env,
    clear_vidpipe_env,
    emit,
    machine,
    note,
    percentile,
    scratch_database,
    scratch_dir,
    vidpipe_cmd,
)
from sqlalchemy import func, select

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.retry import RetryPolicy, policy_for
from vidpipe.core.runtime import Runtime
from vidpipe.providers.simulated import Outcome, SimulatedProvider, WebhookDelivery
from vidpipe.store import migrate
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import Attempt
from vidpipe.store.schema import attempts, events, jobs, steps
from vidpipe.testing.chaos import audit

TERMINAL = ("completed", "failed", "canceled", "expired")
# "whsec_" + base64 of 32 bytes: the simulated provider signs its webhooks with it.
WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
# Nobody listens there: the callback URL only carries the attempt id to the route,
# which this process calls in-process.
PUBLIC_URL = "http://127.0.0.1:9"


def simulated_config(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "latency_median_s": 1.0,
        "latency_sigma": 0.5,
        "latency_min_s": 0.2,
        "latency_max_s": 4.0,
        # ~30 % of calls fail transiently (5 % of submits create the job and lose the
        # answer on top), a third of those with a Retry-After.
        "submit_error_rate": 0.3,
        "submit_lost_response_rate": 0.05,
        "poll_error_rate": 0.3,
        "retry_after_rate": 0.3,
        "retry_after_s": 0.5,
        # 10 % generation failures (some by content policy: permanent).
        "failure_rate": 0.08,
        "content_policy_rate": 0.02,
        # 10 % bad outputs.
        "corrupt_rate": 0.04,
        "truncated_rate": 0.03,
        "wrong_resolution_rate": 0.03,
        # An output URL that has expired (a generation failure), a job that never ends.
        "expired_rate": 0.02,
        "hang_rate": 0.01,
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_duplicate_rate": 0.3,
        "webhook_out_of_order_rate": 0.3,
        "webhook_late_rate": 0.1,
        "webhook_late_s": 3.0,
        "webhook_missing_rate": 0.1,
    }


RETRIES: dict[str, dict[str, Any]] = {
    "*": {"transient_delays_s": [0.2, 0.4, 0.8], "resubmit_delay_s": 0.1}
}


# -- worker processes ------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if this benchmark dies (no orphans)."""
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


@dataclass
class Fleet:
    env: dict[str, str]
    log_dir: Path
    rng: random.Random
    children: list[Child] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    kills: int = 0
    started: int = 0

    def start(self) -> Child:
        child = start_worker(self.env, self.log_dir / f"worker{self.started}.log")
        self.started += 1
        self.children.append(child)
        return child

    def alive(self) -> list[Child]:
        return [c for c in self.children if c.alive()]

    def working(self) -> list[Child]:
        """Live workers past start-up (their loop runs: they hold or take leases)."""
        return [c for c in self.alive() if " started (concurrency" in c.tail(100_000)]

    def check(self) -> None:
        """A worker that exited by itself is a failure of the run, not chaos."""
        for child in self.children:
            if not child.alive() and child.pid not in self.killed:
                raise RuntimeError(
                    f"worker pid {child.pid} exited by itself ({child.proc.returncode}):\n"
                    f"{child.tail()}"
                )

    def kill_one(self) -> int | None:
        """SIGKILL a random working worker (holding leases, mid-call), start a new one."""
        working = self.working()
        if not working:
            return None
        victim = self.rng.choice(working)
        self.killed.add(victim.pid)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        self.kills += 1
        self.start()
        return victim.pid

    def stop_all(self) -> list[int | None]:
        """SIGTERM the live ones (they drain and exit 0), SIGKILL stragglers."""
        codes = []
        for child in self.children:
            if child.alive():
                codes.append(child.stop(timeout=30.0))
        return codes

    def kill_all(self) -> None:
        for child in self.children:
            if child.alive():
                child.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(10)

    def copy_logs(self, to: Path) -> None:
        to.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            shutil.copy(child.log, to / child.log.name)
        note(f"worker logs copied to {to}")

    def log_errors(self) -> tuple[int, list[str]]:
        """ERROR lines in the workers' logs, and a few distinct ones to show."""
        count = 0
        distinct: dict[str, None] = {}
        for child in self.children:
            for line in child.tail(10_000_000).splitlines():
                if (
                    " ERROR " in line
                    or '"level": "error"' in line
                    or '"level": "critical"' in line
                    or line.startswith("Traceback")
                ):
                    count += 1
                    if len(distinct) < 10:
                        distinct[line.strip()[:300]] = None
        return count, list(distinct)


async def killer(fleet: Fleet, every_s: float, max_kills: int, done: asyncio.Event) -> None:
    while fleet.kills < max_kills:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every_s)
        if done.is_set():
            return
        pid = await asyncio.to_thread(fleet.kill_one)
        if pid is None:
            note("no worker past start-up to kill this round")
        else:
            note(f"SIGKILL worker pid {pid} ({fleet.kills}/{max_kills}); started a replacement")


# -- the provider's webhooks ------------------------------------------------------------


@dataclass
class Webhooks:
    """Sends every provider job's webhooks to the app, duplicated and reordered."""

    provider: SimulatedProvider
    client: httpx.AsyncClient
    rng: random.Random
    extra_duplicates: float
    reorder_s: float
    seen: set[str] = field(default_factory=set)
    queue: list[tuple[float, int, WebhookDelivery]] = field(default_factory=list)
    seq: int = 0
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    duplicates_answered: int = 0
    unmatched: int = 0
    steps_hurried: int = 0
    # Event id -> deliveries sent, and -> deliveries answered as new (must be 1).
    sent_by_event: Counter[str] = field(default_factory=Counter)
    first_answers: Counter[str] = field(default_factory=Counter)

    def discover(self) -> None:
        """New jobs at the provider (its own records, lost answers included)."""
        keys = self.provider.state_dir / "keys"
        if not keys.is_dir():
            return
        for path in keys.iterdir():
            if path.name.startswith(".") or path.name in self.seen:
                continue
            try:
                job_id = str(json.loads(path.read_text())["job_id"])
            except (OSError, ValueError, KeyError):
                continue  # not complete yet: next round
            self.seen.add(path.name)
            for delivery in self.provider.webhook_deliveries(job_id):
                copies = 1 + (self.rng.random() < self.extra_duplicates)
                for _ in range(copies):
                    at = delivery.deliver_at + self.rng.uniform(0.0, self.reorder_s)
                    heapq.heappush(self.queue, (at, self.seq, delivery))
                    self.seq += 1

    async def send(self, delivery: WebhookDelivery) -> None:
        url = urlsplit(delivery.url or "/v1/hooks/simulated")
        path = url.path + (f"?{url.query}" if url.query else "")
        response = await self.client.post(
            path, headers=dict(delivery.headers), content=delivery.body
        )
        self.sent += 1
        self.sent_by_event[delivery.event_id] += 1
        self.statuses[response.status_code] += 1
        if response.status_code // 100 == 2:
            data = response.json()
            if data.get("duplicate"):
                self.duplicates_answered += 1
            else:
                self.first_answers[delivery.event_id] += 1
            if not data.get("matched"):
                self.unmatched += 1
            self.steps_hurried += int(data.get("steps", 0))

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await asyncio.to_thread(self.discover)
            now = time.time()
            due = []
            while self.queue and self.queue[0][0] <= now:
                due.append(heapq.heappop(self.queue)[2])
            self.rng.shuffle(due)  # a batch that came due together arrives in any order
            for delivery in due:
                try:
                    await self.send(delivery)
                except Exception as exc:
                    self.statuses[-1] += 1
                    note(f"webhook {delivery.event_id} failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.1)

    def figures(self) -> dict[str, Any]:
        return {
            "provider_jobs": len(self.seen),
            "sent": self.sent,
            "events": len(self.sent_by_event),
            "not_sent_yet_at_end": len(self.queue),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "answered_duplicate": self.duplicates_answered,
            "unmatched_job": self.unmatched,
            "steps_hurried": self.steps_hurried,
        }

    def problems(self) -> list[str]:
        found = [
            f"webhooks: {n} answered {status}"
            for status, n in self.statuses.items()
            if status // 100 != 2
        ]
        # Each event is new exactly once; every other delivery of it is a duplicate.
        for event_id, n in self.first_answers.items():
            if n != 1:
                found.append(f"webhook event {event_id} taken as new {n} times")
        expected_dups = self.sent - len(self.first_answers)
        if self.statuses.get(200, 0) == self.sent and expected_dups != self.duplicates_answered:
            found.append(
                f"webhooks: {self.duplicates_answered} answered duplicate, {expected_dups} expected"
            )
        return found


# -- checks ---------------------------------------------------------------------------


async def statuses(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.read() as conn:
        rows = await conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
        return {str(status): int(count) for status, count in rows}


async def all_attempts(runtime: Runtime) -> list[Attempt]:
    async with runtime.db.read() as conn:
        rows = await conn.execute(select(attempts).order_by(attempts.c.id))
        return [Attempt.from_row(r) for r in rows.mappings()]


def budget_of(policy: RetryPolicy, error_class: str) -> int:
    """How many failures of a class a step may have (the last one ends it)."""
    return {
        "quality": policy.quality_regenerations + 1,
        "generation": policy.generation_resubmits + 1,
        "transient": len(policy.transient_delays_s) + 1,
    }.get(error_class, 1)


# Permanent codes and the planned outcomes that explain them.
PERMANENT_REASONS = {
    "content_policy": {Outcome.CONTENT_POLICY},
    "deadline_exceeded": {Outcome.HANG},
}


@dataclass
class Checked:
    problems: list[str] = field(default_factory=list)
    # Explained, but worth a look: reported, not counted as failures of the run.
    findings: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


async def extra_checks(
    runtime: Runtime,
    provider: SimulatedProvider,
    job_ids: list[str],
    policy: RetryPolicy,
) -> Checked:
    out = Checked()
    by_job: dict[str, list[Attempt]] = {}
    every = await all_attempts(runtime)
    for a in every:
        by_job.setdefault(a.job_id, []).append(a)
    async with runtime.db.read() as conn:
        rows = await conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.error_code))
        job_rows = {str(r[0]): (str(r[1]), r[2]) for r in rows}
        rows = await conn.execute(select(steps.c.id, steps.c.deadline_at))
        deadlines = {str(r[0]): r[1] for r in rows}
    if set(job_rows) != set(job_ids):
        out.problems.append(
            f"jobs in the database {len(job_rows)} != created {len(job_ids)} "
            f"(missing {sorted(set(job_ids) - set(job_rows))[:5]})"
        )
    failure_reasons: Counter[str] = Counter()
    for job_id in job_ids:
        status, error_code = job_rows.get(job_id, ("missing", None))
        tries = sorted(by_job.get(job_id, []), key=lambda a: (a.step_id, a.number))
        if status not in ("completed", "failed"):
            continue  # audit reports it
        succeeded = [a for a in tries if a.state == "succeeded"]
        if status == "completed":
            if len(succeeded) != 1 or tries[-1].state != "succeeded":
                out.problems.append(
                    f"{job_id}: completed with {len(succeeded)} successes, last attempt "
                    f"{tries[-1].state if tries else None}"
                )
            continue
        if not tries:
            out.problems.append(f"{job_id}: failed ({error_code}) without any attempt")
            continue
        last = tries[-1]
        cls = last.error_class or "none"
        failure_reasons[f"{cls}:{last.error_code}"] += 1
        if cls == "permanent":
            planned = provider.plan(last.provider_job_id).outcome if last.provider_job_id else None
            if planned in PERMANENT_REASONS.get(str(last.error_code), set()):
                continue
            deadline = deadlines.get(last.step_id)
            if (
                last.error_code == "deadline_exceeded"
                and deadline is not None
                and last.created_at > deadline
            ):
                out.findings.append(
                    f"{job_id}: expired (deadline_exceeded); attempt {last.number} (planned "
                    f"{planned}) was made {last.created_at - deadline:.1f} s after the "
                    "step's deadline had passed"
                )
            else:
                out.problems.append(
                    f"{job_id}: failed permanently ({last.error_code}) though its provider "
                    f"job was planned {planned}"
                )
        else:
            used = sum(1 for a in tries if a.error_class == cls and a.step_id == last.step_id)
            if used != budget_of(policy, cls):
                out.problems.append(
                    f"{job_id}: failed after {used} {cls} failures, budget {budget_of(policy, cls)}"
                )
    # One provider job per attempt: the provider's record for the attempt's key.
    referenced = set()
    for a in every:
        if a.provider_job_id is None:
            continue
        referenced.add(a.provider_job_id)
        record = provider._record(provider.key_digest(a.idempotency_key))
        if record.get("job_id") != a.provider_job_id:
            out.problems.append(
                f"{a.id}: provider job {a.provider_job_id}, but the provider's job for "
                f"its key is {record.get('job_id')}"
            )
    keys_dir = provider.state_dir / "keys"
    provider_jobs = {
        str(json.loads(p.read_text())["job_id"])
        for p in keys_dir.iterdir()
        if not p.name.startswith(".")
    }
    orphans = provider_jobs - referenced
    canceled_dir = provider.state_dir / "canceled"
    # Attempts given up on after poll errors: their provider job was left running.
    abandoned = [
        a
        for a in every
        if a.error_class == "transient"
        and a.provider_job_id is not None
        and not (canceled_dir / a.provider_job_id).exists()
    ]
    after_deadline = [
        a
        for a in every
        if deadlines.get(a.step_id) is not None and a.created_at > float(deadlines[a.step_id])
    ]
    outcomes = Counter(provider.plan(pjid).outcome.value for pjid in referenced)
    out.figures = {
        "attempts_by_state": dict(Counter(a.state for a in every)),
        "transient_codes": dict(
            Counter(a.error_code for a in every if a.error_class == "transient")
        ),
        "failed_jobs_by_reason": dict(failure_reasons),
        "planned_outcomes_of_attempts": dict(outcomes),
        "provider_jobs": len(provider_jobs),
        "orphan_provider_jobs": len(orphans),
        "abandoned_provider_jobs": len(abandoned),
        "attempts_made_after_step_deadline": len(after_deadline),
        "after_deadline_attempts_ended": dict(
            Counter(f"{a.state}:{a.error_code or ''}".rstrip(":") for a in after_deadline)
        ),
    }
    if orphans:
        out.findings.append(
            f"{len(orphans)} provider jobs no attempt knows (submit answer lost, retried "
            f"with a new idempotency key), e.g. {sorted(orphans)[:2]}"
        )
    if abandoned:
        out.findings.append(
            f"{len(abandoned)} attempts failed after repeated poll errors left their provider "
            f"job running (never canceled), e.g. {[a.id for a in abandoned[:2]]}"
        )
    if after_deadline:
        out.findings.append(
            f"{len(after_deadline)} attempts were submitted after their step's deadline, "
            f"e.g. {[a.id for a in after_deadline[:2]]}"
        )
    return out


async def story(runtime: Runtime, provider: SimulatedProvider, job_id: str) -> dict[str, Any]:
    """What happened to one job: its attempts (with their plans) and its events."""
    async with runtime.db.read() as conn:
        tries = [
            Attempt.from_row(r)
            for r in (
                await conn.execute(
                    select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id)
                )
            ).mappings()
        ]
        rows = (
            await conn.execute(
                select(events.c.type, events.c.data, events.c.created_at)
                .where(events.c.job_id == job_id)
                .order_by(events.c.id)
            )
        ).all()
    t0 = min([a.created_at for a in tries] or [0.0])

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 2)

    return {
        "job": job_id,
        "attempts": [
            {
                "n": a.number,
                "state": a.state,
                "class": a.error_class,
                "code": a.error_code,
                "provider_job": a.provider_job_id,
                "planned": provider.plan(a.provider_job_id).outcome.value
                if a.provider_job_id
                else None,
                "planned_latency_s": round(provider.plan(a.provider_job_id).latency_s, 2)
                if a.provider_job_id
                else None,
                "created": rel(a.created_at),
                "submitted": rel(a.submitted_at),
                "finished": rel(a.finished_at),
            }
            for a in tries
        ],
        "events": [[rel(float(at)), str(kind), data] for kind, data, at in rows],
    }


# -- the run ----------------------------------------------------------------------------


def git_state() -> dict[str, Any]:
    """The commit measured, and how many files under src/ differ from it."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        return ""

    changed = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {"head": git("rev-parse", "--short", "HEAD"), "src_files_changed": len(changed)}


async def create_jobs(runtime: Runtime, n: int) -> list[str]:
    async with runtime.db.write() as conn:
        tenant = await tenant_q.ensure_tenant(conn, "chaos", runtime.clock.now())
    ids = []
    for i in range(n):
        created = await runtime.videos.create(
            tenant.id,
            CreateVideo(prompt=f"storm {i}", seconds=1, size="640x360", model="simulated/sim-1"),
        )
        ids.append(created.job.id)
    return ids


async def wait_terminal(
    runtime: Runtime, total: int, limit_s: float, fleet: Fleet
) -> dict[str, int]:
    deadline = time.monotonic() + limit_s
    last_note = 0.0
    while True:
        counts = await statuses(runtime)
        terminal = sum(counts.get(s, 0) for s in TERMINAL)
        if terminal >= total:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not terminal after {limit_s:.0f} s: {counts}")
        if time.monotonic() - last_note > 10:
            last_note = time.monotonic()
            note(f"{terminal}/{total} terminal {counts}; {len(fleet.alive())} workers alive")
        fleet.check()
        await asyncio.sleep(0.5)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    clear_vidpipe_env()
    sim = simulated_config(args.seed)
    with scratch_dir("chaos") as home:
        async with scratch_database("postgres") as database_url:
            assert database_url is not None
            await asyncio.to_thread(migrate.upgrade, database_url)
            settings = Settings(
                home=home,
                database_url=database_url,
                simulated_config=json.dumps(sim),
                retry_policies=RETRIES,
                public_url=PUBLIC_URL,
            )
            env = bench_env(
                home,
                database_url,
                simulated_config=json.dumps(sim),
                retry_policies=json.dumps(RETRIES),
                public_url=PUBLIC_URL,
                lease_s=str(args.lease_s),
                idle_poll_s="0.5",
                step_deadline_s=str(args.deadline_s),
                worker_concurrency=str(args.concurrency),
                validation_mode=args.media,
                derivatives="true" if args.media == "full" else "false",
            )
            runtime = await Runtime.open(settings, run_migrations=False)
            fleet = Fleet(env, home, random.Random(args.seed))
            try:
                return await run(args, runtime, fleet, sim)
            finally:
                fleet.kill_all()
                await runtime.close()
                if args.keep_logs:
                    await asyncio.to_thread(fleet.copy_logs, Path(args.keep_logs))


async def run(
    args: argparse.Namespace, runtime: Runtime, fleet: Fleet, sim: dict[str, Any]
) -> dict[str, Any]:
    provider = runtime.registry.get("simulated")
    assert isinstance(provider, SimulatedProvider)
    t0 = time.monotonic()
    job_ids = await create_jobs(runtime, args.jobs)
    create_s = time.monotonic() - t0
    note(f"created {len(job_ids)} jobs in {create_s:.1f} s; starting {args.workers} workers")

    host = HostCpu()
    started = time.monotonic()
    for _ in range(args.workers):
        fleet.start()
    done = asyncio.Event()
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://vidpipe.internal") as client:
        hooks = Webhooks(provider, client, random.Random(args.seed + 1), args.extra_duplicates, 2.0)
        helpers = [
            asyncio.create_task(killer(fleet, args.kill_every, args.max_kills, done)),
            asyncio.create_task(hooks.run(done)),
        ]
        try:
            counts = await wait_terminal(runtime, len(job_ids), args.timeout, fleet)
        finally:
            done.set()
            for task in helpers:
                with contextlib.suppress(Exception):
                    await task
    wall_s = time.monotonic() - started
    async with runtime.db.read() as conn:
        rows = await conn.execute(select(jobs.c.created_at, jobs.c.completed_at))
        latencies = [float(end) - float(begin) for begin, end in rows if end is not None]
    busy_cores = host.busy_cores()
    exit_codes = await asyncio.to_thread(fleet.stop_all)
    note(f"all {len(job_ids)} terminal after {wall_s:.1f} s: {counts}; auditing")

    policy = policy_for("simulated", RETRIES, RetryPolicy())
    report = await audit(runtime, provider, job_ids, policy)
    checked = await extra_checks(runtime, provider, job_ids, policy)
    problems = [*report.problems, *checked.problems, *hooks.problems()]
    if any(code != 0 for code in exit_codes):
        problems.append(f"workers stopped with SIGTERM exited {exit_codes}")
    errors, error_lines = fleet.log_errors()
    noted = [*problems, *checked.findings]
    named = sorted({m for p in noted for m in re.findall(r"video_[0-9a-z]+", p)})
    attempt_ids = sorted({m for p in noted for m in re.findall(r"att_[0-9a-z]+", p)})
    if attempt_ids:
        async with runtime.db.read() as conn:
            rows = await conn.execute(
                select(attempts.c.job_id).where(attempts.c.id.in_(attempt_ids))
            )
            named = sorted({*named, *(str(r[0]) for r in rows)})
    stories = [await story(runtime, provider, job_id) for job_id in named[:8]]
    return {
        "bench": "chaos",
        "db": "postgres",
        "jobs": report.jobs,
        "completed": report.by_status["completed"],
        "failed": report.by_status["failed"],
        "by_status": dict(report.by_status),
        "attempts": report.attempts,
        "attempts_by_class": dict(report.attempts_by_class),
        **checked.figures,
        "workers": args.workers,
        "worker_concurrency": args.concurrency,
        "kills": fleet.kills,
        "worker_processes_started": fleet.started,
        "worker_exit_codes_on_sigterm": exit_codes,
        "worker_log_error_lines": errors,
        "worker_log_error_examples": error_lines,
        "webhooks": hooks.figures(),
        "problems": problems,
        "problem_count": len(problems),
        "findings": checked.findings,
        "stories": stories,
        "create_s": round(create_s, 2),
        "wall_s": round(wall_s, 1),
        "jobs_per_s": round(len(job_ids) / wall_s, 2),
        "job_latency_s": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "max": round(max(latencies, default=float("nan")), 1),
        },
        "host_busy_cores": busy_cores,
        "simulated": sim,
        "retry_policies": RETRIES,
        "lease_s": args.lease_s,
        "step_deadline_s": args.deadline_s,
        "media": args.media,
        "machine": machine(),
        "git": git_state(),
        "ok": not problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=240)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="per worker process")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--max-kills", type=int, default=12)
    parser.add_argument("--lease-s", type=float, default=3.0)
    parser.add_argument(
        "--deadline-s", type=float, default=120.0, help="VIDPIPE_STEP_DEADLINE_S (ends hangs)"
    )
    parser.add_argument("--extra-duplicates", type=float, default=0.3)
    parser.add_argument(
        "--media",
        choices=("full", "basic"),
        default="full",
        help="full: full validation and derivatives (the defaults); basic: header checks, "
        "no derivatives",
    )
    parser.add_argument("--keep-logs", help="copy the workers' logs to this directory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the run")
    args = parser.parse_args()

    async def guarded() -> dict[str, Any]:
        # SIGTERM ends the run like Ctrl-C: the finally blocks stop the workers and
        # drop the database.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(args)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        note("interrupted: workers stopped, scratch database and directory removed")
        raise SystemExit(2) from None
    emit(result)
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
