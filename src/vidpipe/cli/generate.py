"""``vidpipe generate``: one video through the job system, with a live progress bar.

Without ``--api-url`` it runs an embedded worker against the local database (the same
jobs, steps and storage as ``vidpipe serve``); with it, it drives a running server
over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vidpipe.config import Settings
from vidpipe.core.requests import parse_create_video
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.errors import VidpipeError
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import Job

console = Console(stderr=True)
CLI_TENANT = "default"


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: str
    error: str | None
    output: Path | None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        refresh_per_second=4,
    )


async def generate_embedded(
    settings: Settings, body: dict[str, Any], output: Path, *, timeout_s: float
) -> Outcome:
    request = parse_create_video(body)

    async def create(runtime: Runtime, tenant_id: str) -> Job:
        return (await runtime.videos.create(tenant_id, request)).job

    return await run_embedded(settings, create, output, timeout_s=timeout_s)


async def short_embedded(
    settings: Settings, body: dict[str, Any], output: Path, *, timeout_s: float
) -> Outcome:
    """``vidpipe short``: the same plan ``POST /v1/shorts`` makes, run here."""
    from vidpipe.api.plans import parse_body
    from vidpipe.media import speech
    from vidpipe.plans.shorts import CreateShort, build_short
    from vidpipe.shorts.templates import get_template

    request: CreateShort = parse_body(CreateShort, body)
    with contextlib.suppress(VidpipeError):  # an unknown template is reported below
        # The local voice loads (seconds of one core) while the database opens and the
        # script is written, not when the first speech step needs it.
        if request.speech_engine in ("auto", "piper"):  # local engines only
            voice = request.voice or get_template(request.template).defaults.voice
            speech.warm_up(voice, "piper" if request.speech_engine == "piper" else "auto")

    async def create(runtime: Runtime, tenant_id: str) -> Job:
        plan = build_short(request, runtime.settings, runtime.registry)
        return (await runtime.plans.create(tenant_id, plan)).job

    return await run_embedded(settings, create, output, timeout_s=timeout_s, show_step=True)


async def run_embedded(
    settings: Settings,
    create: Callable[[Runtime, str], Awaitable[Job]],
    output: Path,
    *,
    timeout_s: float,
    show_step: bool = False,
) -> Outcome:
    """Create a job, run a worker here until it ends, and copy its video to ``output``."""
    runtime = await Runtime.open(settings)
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, CLI_TENANT, runtime.clock.now())
        job = await create(runtime, tenant.id)
        stop = asyncio.Event()
        worker_task = asyncio.create_task(runtime.new_worker().run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            with _progress() as bar:
                task = bar.add_task(job.id, total=100, status=job.status)
                while not JobStatus(job.status).terminal and time.monotonic() < deadline:
                    # Twice a second is enough for a bar, and leaves the CPU to the work.
                    await asyncio.sleep(0.5)
                    if worker_task.done():
                        worker_task.result()  # surface the worker's crash
                    job = await runtime.videos.get(None, job.id)
                    status = job.status
                    if show_step and not JobStatus(status).terminal:
                        status = await _current_steps(runtime, job.id) or status
                    bar.update(task, completed=job.progress, status=status)
        finally:
            stop.set()
            await worker_task
        if job.status != JobStatus.COMPLETED.value:
            reason = job.error_message or (
                "timed out waiting; the job stays queued for `vidpipe worker`"
                if not JobStatus(job.status).terminal
                else job.status
            )
            return Outcome(job.id, job.status, reason, None)
        asset = await runtime.videos.video_asset(None, job.id)
        source = runtime.blobs.local_path(asset.key)
        if source is None:
            raise VidpipeError("storage backend has no local files", code="not_local")
        output.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, source, output)
        return Outcome(job.id, job.status, None, output)
    finally:
        await runtime.close()


async def _current_steps(runtime: Runtime, job_id: str) -> str:
    """The steps running now, for the progress line (e.g. ``speech_2, visual_3``)."""
    async with runtime.db.read() as conn:
        plan = await step_q.steps_of_job(conn, job_id)
    running = [s.name for s in plan if s.state in ("ready", "active") and s.lease_owner]
    return ", ".join(running[:3])


def generate_remote(
    api_url: str,
    api_key: str | None,
    body: dict[str, Any],
    output: Path,
    *,
    timeout_s: float,
    path: str = "/v1/videos",
) -> Outcome:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=30) as client:
        response = client.post(path, json=body)
        if response.status_code >= 400:
            error = response.json().get("error", {})
            raise VidpipeError(error.get("message", response.text), code=error.get("code"))
        video = response.json()
        deadline = time.monotonic() + timeout_s
        with _progress() as bar:
            task = bar.add_task(video["id"], total=100, status=video["status"])
            while video["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
                time.sleep(0.5)
                video = client.get(f"/v1/videos/{video['id']}").raise_for_status().json()
                bar.update(task, completed=video["progress"], status=video["status"])
        if video["status"] != "completed":
            message = (video.get("error") or {}).get("message") or video["status"]
            return Outcome(video["id"], video["status"], message, None)
        output.parent.mkdir(parents=True, exist_ok=True)
        with (
            client.stream("GET", f"/v1/videos/{video['id']}/content") as stream,
            output.open("wb") as handle,
        ):
            stream.raise_for_status()
            for chunk in stream.iter_bytes():
                handle.write(chunk)
        return Outcome(video["id"], video["status"], None, output)
