"""Worker processes: killed mid-job, and several at once on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.e2e.conftest import VIDPIPE, vidpipe_env
from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import AttemptState
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def _open(settings: Settings) -> tuple[Runtime, str]:
    runtime = await Runtime.open(settings, run_migrations=False)
    async with runtime.db.write() as conn:
        tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
    return runtime, tenant.id


async def _wait_for(predicate: Callable[[], object], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():  # type: ignore[misc]
            await asyncio.sleep(0.05)


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*VIDPIPE, "worker"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


async def test_sigkilled_worker_is_replaced_and_the_provider_sees_one_submission(
    db_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    extra = {
        "VIDPIPE_DATABASE_URL": db_url,
        "VIDPIPE_LOCAL_MIN_LATENCY_S": "3",
        "VIDPIPE_LEASE_S": "3",
        "VIDPIPE_IDLE_POLL_S": "0.2",
    }
    env = vidpipe_env(home, **extra)
    settings = Settings(home=home, database_url=db_url, local_min_latency_s=3)
    runtime, tenant = await _open(settings)
    try:
        job = (
            await runtime.videos.create(
                tenant, CreateVideo(prompt="survive", seconds=2, size="640x360")
            )
        ).job
        first = _start_worker(env, tmp_path / "worker1.log")
        processes.append(first)

        async def submitted() -> bool:
            async with runtime.db.read() as conn:
                state = await conn.scalar(
                    select(attempts.c.state).where(attempts.c.job_id == job.id)
                )
            return state == AttemptState.SUBMITTED.value

        await _wait_for(submitted, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert (await runtime.videos.get(None, job.id)).status == "in_progress"

        second = _start_worker(env, tmp_path / "worker2.log")
        processes.append(second)

        async def finished() -> bool:
            return (await runtime.videos.get(None, job.id)).status in ("completed", "failed")

        await _wait_for(finished, 90)
        done = await runtime.videos.get(None, job.id)
        assert done.status == "completed", (tmp_path / "worker2.log").read_text()
        async with runtime.db.read() as conn:
            tries = await step_q.attempts_of_job(conn, job.id)
        assert [(a.number, a.state) for a in tries] == [(1, "succeeded")]
        submissions = (home / "local-provider" / "submissions.log").read_text().splitlines()
        assert len(submissions) == 1
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        await runtime.close()


async def test_a_worker_that_died_while_submitting_resubmits_with_the_same_key(
    db_url: str, tmp_path: Path
) -> None:
    """The worst moment: the provider got the job, the worker died before recording its id."""
    home = tmp_path / "home"
    runtime, tenant = await _open(Settings(home=home, database_url=db_url, lease_s=2))
    try:
        job = (
            await runtime.videos.create(tenant, CreateVideo(prompt="x", seconds=1, size="640x360"))
        ).job
        now = runtime.clock.now()
        (step,) = await step_q.claim_steps(
            runtime.db, worker_id="doomed", limit=1, now=now, lease_s=2, max_in_flight={}
        )
        # What the doomed worker got done: the attempt recorded, the provider called.
        executor = runtime.new_worker().executor
        attempt = await executor._new_attempt(step, None)
        provider = runtime.registry.get("local")
        assert provider is not None
        await provider.submit(executor._request(step), attempt.idempotency_key)
        runtime.workers.clear()
        # ...and then it died. Its lease runs out; a new worker takes over.
        stop = asyncio.Event()
        worker = runtime.new_worker()
        task = asyncio.create_task(worker.run(stop))

        async def finished() -> bool:
            return (await runtime.videos.get(None, job.id)).status == "completed"

        await _wait_for(finished, 60)
        stop.set()
        await task
        submissions = (home / "local-provider" / "submissions.log").read_text().splitlines()
        assert len(submissions) == 1
        async with runtime.db.read() as conn:
            tries = await step_q.attempts_of_job(conn, job.id)
        assert [(a.number, a.state) for a in tries] == [(1, "succeeded")]
    finally:
        await runtime.close()


@pytest.mark.parametrize("n_workers", [2, 4])
async def test_workers_on_postgres_never_run_one_step_at_once(
    n_workers: int, pg_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    extra = {
        "VIDPIPE_DATABASE_URL": pg_url,
        "VIDPIPE_INSTANT_PROVIDER": "true",
        "VIDPIPE_INSTANT_LATENCY_S": "0.3",
        "VIDPIPE_INSTANT_CALL_DELAY_S": "0.03",
        "VIDPIPE_IDLE_POLL_S": "0.5",
        "VIDPIPE_WORKER_CONCURRENCY": "4",
    }
    env = vidpipe_env(home, **extra)
    runtime, tenant = await _open(Settings(home=home, database_url=pg_url, instant_provider=True))
    try:
        for i in range(n_workers):
            processes.append(_start_worker(env, tmp_path / f"worker{i}.log"))
        ids = [
            (
                await runtime.videos.create(
                    tenant,
                    CreateVideo(prompt=f"job {i}", seconds=1, size="640x360", model="instant/test"),
                )
            ).job.id
            for i in range(40)
        ]

        async def all_done() -> bool:
            jobs, _ = await runtime.videos.list(None, limit=100)
            return all(j.status in ("completed", "failed") for j in jobs)

        await _wait_for(all_done, 120)
        jobs, _ = await runtime.videos.list(None, limit=100)
        assert sorted(j.id for j in jobs) == sorted(ids)
        assert {j.status for j in jobs} == {"completed"}
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            assert proc.wait(timeout=30) == 0
    finally:
        await runtime.close()

    calls = [
        json.loads(line)
        for line in (home / "instant-provider" / "calls.log").read_text().splitlines()
    ]
    submits = [c["id"] for c in calls if c["call"] == "submit"]
    assert len(submits) == 40
    assert len(set(submits)) == 40  # one submission per attempt key
    assert len({c["pid"] for c in calls}) > 1  # the work really was shared
    polls: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in calls:
        if c["call"] == "poll":
            polls[c["id"]].append((c["start"], c["end"]))
    for job_id, spans in polls.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two workers polled {job_id} at once"
