"""What the Replicate, fal and MiniMax fakes share.

Jobs move by polls, not by time, so tests are deterministic: a new job answers
``queued_polls`` status reads as queued, then ``running_polls`` as running, then ends
as its outcome says. Knobs on the state script the provider's bad days (throttling,
5xx, failures, content policy, expiring outputs), and every create is counted so tests
can prove nothing was submitted twice. Outputs are real MP4 bytes served by the fake
itself under ``/files/{token}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.render import render_prompt_video
from vidpipe.providers.base import PollResult, Provider

__all__ = [
    "FakeJob",
    "FakeProviderState",
    "Outcome",
    "Phase",
    "poll_to_end",
    "sample_mp4",
    "serve_on_loopback",
]


class Outcome(StrEnum):
    """How a fake job ends (when nobody cancels it)."""

    SUCCEED = "succeed"
    FAIL = "fail"
    CONTENT_POLICY = "content_policy"
    # Never leaves running.
    HANG = "hang"
    # Replicate only: the deadline passed before the job started.
    ABORTED = "aborted"


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELED = "canceled"


@dataclass
class FakeJob:
    id: str
    model: str
    input: dict[str, Any]
    created_at: float
    outcome: Outcome
    queued_polls: int
    running_polls: int
    webhook_url: str | None = None
    polls: int = 0
    canceled: bool = False
    # Token of the output under /files/, made when the job first reads as done.
    file_token: str | None = None

    def phase(self) -> Phase:
        """Where the job is now, without moving it."""
        if self.canceled:
            return Phase.CANCELED
        if self.polls <= self.queued_polls:
            return Phase.QUEUED
        if self.outcome is Outcome.ABORTED:
            return Phase.DONE
        if self.outcome is Outcome.HANG or self.polls <= self.queued_polls + self.running_polls:
            return Phase.RUNNING
        return Phase.DONE

    def advance(self) -> Phase:
        """One status read: the job moves one step and says where it is."""
        self.polls += 1
        return self.phase()

    @property
    def running_share(self) -> float:
        """How far through its running stretch the job is, 0..1."""
        done = self.polls - self.queued_polls
        return max(0.0, min(1.0, done / max(self.running_polls, 1)))


@dataclass
class FakeFile:
    data: bytes
    expires_at: float
    content_type: str = "video/mp4"


@dataclass
class FakeProviderState:
    """A fake provider's memory and knobs. Tests set knobs, then read the counters."""

    video: bytes
    api_key: str = "test-key"
    # The next N creates are throttled the provider's way (Retry-After: retry_after_s).
    rate_limited_creates: int = 0
    retry_after_s: int = 1
    # The next N API requests of any kind answer 503 from the edge.
    server_errors: int = 0
    queued_polls: int = 1
    running_polls: int = 2
    # Outcomes of the next creates, first in first out; then SUCCEED.
    outcomes: list[Outcome] = field(default_factory=list)
    output_ttl_s: float = 3600.0
    clock: Callable[[], float] = time.time
    # Every create request that reached the app, and the ones that made a job.
    create_attempts: int = 0
    creates: int = 0
    cancels: int = 0
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    files: dict[str, FakeFile] = field(default_factory=dict)

    def take_server_error(self) -> bool:
        if self.server_errors > 0:
            self.server_errors -= 1
            return True
        return False

    def take_rate_limit(self) -> bool:
        if self.rate_limited_creates > 0:
            self.rate_limited_creates -= 1
            return True
        return False

    def new_job(
        self, job_id: str, model: str, input: dict[str, Any], webhook_url: str | None = None
    ) -> FakeJob:
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.SUCCEED
        job = FakeJob(
            id=job_id,
            model=model,
            input=input,
            created_at=self.clock(),
            outcome=outcome,
            queued_polls=self.queued_polls,
            running_polls=self.running_polls,
            webhook_url=webhook_url,
        )
        self.jobs[job_id] = job
        self.creates += 1
        return job

    def output_token(self, job: FakeJob) -> str:
        """The job's output file, published on first use with the current TTL."""
        if job.file_token is None:
            job.file_token = secrets.token_urlsafe(12)
            self.files[job.file_token] = FakeFile(self.video, self.clock() + self.output_ttl_s)
        return job.file_token

    def expire_outputs(self) -> None:
        """Every output published so far is past its time."""
        for file in self.files.values():
            file.expires_at = self.clock() - 1

    def serve_file(self, token: str, expired: Callable[[], Response]) -> Response:
        file = self.files.get(token)
        if file is None or self.clock() >= file.expires_at:
            return expired()
        return Response(file.data, media_type=file.content_type)


def external_base(request: Request) -> str:
    """The scheme and host the client used, for URLs the fake hands out."""
    return str(request.base_url).rstrip("/")


@functools.cache
def sample_mp4() -> bytes:
    """A real 640x360, 1 s H.264 MP4, rendered once per process."""
    with tempfile.TemporaryDirectory(prefix="vidpipe-fake-") as tmp:
        work = Path(tmp)
        render_prompt_video(
            "a fake provider's output",
            seconds=1,
            width=640,
            height=360,
            fps=30,
            seed=1,
            out_path=work / "out.mp4",
            work_dir=work / "work",
            progress_path=work / "progress.txt",
            ffmpeg=find_ffmpeg(),
        )
        return (work / "out.mp4").read_bytes()


async def poll_to_end(
    provider: Provider, job_id: str, *, max_polls: int = 50
) -> tuple[PollResult, list[PollResult]]:
    """Poll until terminal (fakes move per poll, so no sleeping); the last and all results."""
    seen: list[PollResult] = []
    for _ in range(max_polls):
        result = await provider.poll(job_id)
        seen.append(result)
        if result.status.terminal:
            return result, seen
    raise AssertionError(f"{job_id} not terminal after {max_polls} polls: {seen[-1]}")


@contextlib.asynccontextmanager
async def serve_on_loopback(app: ASGIApp) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) for the block; yield its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
