"""A short whose worker dies in the middle of the compose step.

The worker process (and its ffmpeg children: one process group, as a container or
machine dies) is SIGKILLed once the compose step has committed at least one scene
segment under ``<home>/work/<job>/compose/segments/<key>/``. A new worker takes the
step over when the lease runs out and must reuse what was committed: the job completes
with ``segments_reused >= 1``, one finished compose run, and a playable MP4 of the
planned size and length.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.e2e.conftest import VIDPIPE, vidpipe_env
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.media.compose_plan import SEGMENT_FILE
from vidpipe.media.probe import probe
from vidpipe.plans.shorts import CreateShort, build_short
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import Step
from vidpipe.store.schema import events

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

# 25 s of product promo is 6 scenes; square frames are the cheapest of the three aspects.
SHORT = CreateShort(
    topic="a pocket espresso maker",
    template="product_promo",
    target_seconds=25,
    aspect_ratio="1:1",
)
SIZE = (1080, 1080)
# Bounds for hangs, not expectations: a loaded two-core machine is several times slower
# than an idle one.
PREPARE_S = 150.0  # script, images, speech, captions and music
FINISH_S = 200.0


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers started in their own process groups; the whole group is killed at the end,
    so no ffmpeg child outlives the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*VIDPIPE, "worker"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _logs(directory: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
        for path in sorted(directory.glob("*.log"))
    )


def _committed_segments(segments: Path) -> list[Path]:
    """Scene segments renamed into place (a ``.tmp-`` directory is a piece in progress;
    each holds its one file)."""
    if not segments.is_dir():
        return []
    return [
        entry
        for entry in segments.iterdir()
        if not entry.name.startswith(".") and (entry / SEGMENT_FILE).is_file()
    ]


async def _poll(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str, logs: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{_logs(logs)}"
        await asyncio.sleep(0.05)


async def test_a_worker_killed_mid_compose_is_replaced_and_its_segments_reused(
    sqlite_url: str, tmp_path: Path, groups: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = vidpipe_env(
        home,
        VIDPIPE_DATABASE_URL=sqlite_url,
        # The killed worker's compose step comes back when its lease expires.
        VIDPIPE_LEASE_S="3",
        VIDPIPE_IDLE_POLL_S="0.2",
    )
    settings = Settings(home=home, database_url=sqlite_url)
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
        plan = build_short(SHORT, settings, runtime.registry)
        job_id = (await runtime.plans.create(tenant.id, plan)).job.id
        scene_steps = [s for s in plan.steps if s.kind == "speech"]
        assert len(scene_steps) >= 4, "the short must have enough scenes to kill mid-compose"
        segments = home / "work" / job_id / "compose" / "segments"

        async def compose_step() -> Step:
            async with runtime.db.read() as conn:
                found = [s for s in await step_q.steps_of_job(conn, job_id) if s.name == "compose"]
            return found[0]

        first = _start_worker(env, logs / "worker1.log")
        groups.append(first)

        async def mid_compose() -> bool:
            assert first.poll() is None, f"the first worker exited\n{_logs(logs)}"
            return bool(_committed_segments(segments))

        await _poll(
            mid_compose, timeout_s=PREPARE_S + FINISH_S, what="a committed segment", logs=logs
        )
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        step = await compose_step()
        assert step.state != "succeeded", "compose finished before the kill: nothing to test"
        assert step.lease_owner is not None, "the dead worker still holds the compose step"
        committed_at_kill = {p.name for p in _committed_segments(segments)}

        second = _start_worker(env, logs / "worker2.log")
        groups.append(second)

        async def finished() -> bool:
            assert second.poll() is None, f"the second worker exited\n{_logs(logs)}"
            job = await runtime.videos.get(None, job_id)
            return JobStatus(job.status).terminal

        await _poll(finished, timeout_s=FINISH_S, what="the job to finish", logs=logs)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, _logs(logs)

        job = await runtime.videos.get(None, job_id)
        assert job.status == JobStatus.COMPLETED.value, f"{job.error_message}\n{_logs(logs)}"
        step = await compose_step()
        asset = await runtime.videos.video_asset(None, job_id)
        video = runtime.blobs.local_path(asset.key)
        async with runtime.db.read() as conn:
            rows = await conn.execute(
                select(events.c.type, events.c.data)
                .where(events.c.job_id == job_id)
                .order_by(events.c.id)
            )
            compose_events = [row.type for row in rows if (row.data or {}).get("step") == "compose"]
    finally:
        await runtime.close()

    output = step.output or {}
    scenes = len(scene_steps)
    # What the dead worker committed was reused, the rest was rendered by the new one.
    assert output["segments_reused"] >= 1, output
    assert output["segments_reused"] >= len(committed_at_kill), (output, committed_at_kill)
    assert output["segments_reused"] + output["segments_rendered"] == scenes, output
    # Two runs of the step started (the killed one, the replacement), one finished.
    assert compose_events.count("step.started") == 2, compose_events
    assert compose_events.count("step.succeeded") == 1, compose_events
    assert "step.failed" not in compose_events, compose_events

    assert video is not None
    info = await asyncio.to_thread(probe, video)
    assert info.video is not None
    assert info.audio is not None
    assert (info.video.width, info.video.height) == SIZE
    assert info.video.codec == "h264"
    assert abs(info.duration_s - float(output["duration_s"])) <= 0.1, (info, output)
    # The checkpoints go once the step has succeeded.
    assert not (home / "work" / job_id / "compose").exists()
