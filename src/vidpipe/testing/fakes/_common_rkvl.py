"""What the Runway, Luma, Veo and Kling fakes share.

A scripted job lifecycle driven by polls (so tests are deterministic, not timed),
failure knobs, output URLs served by the fake itself that can expire, Standard Webhooks
signing, a sample MP4, and a loopback server for tests that want real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from vidpipe.providers.base import OutputRef, PollResult, Provider, ProviderStatus

__all__ = [
    "FakeFailure",
    "FakeJob",
    "FakeOutput",
    "FakeProviderState",
    "Phase",
    "download",
    "iso_utc",
    "poll_until_terminal",
    "render_sample_mp4",
    "serve_on_loopback",
    "sign_standard_webhook",
    "statuses",
]


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELED)


@dataclass(frozen=True)
class FakeFailure:
    """How a job ends when it fails: the provider's code (if it has codes) and text."""

    message: str
    code: str | None = None
    content_policy: bool = False


@dataclass
class FakeJob:
    id: str
    body: dict[str, Any]
    created_at: float
    queued_polls: int
    running_polls: int
    failure: FakeFailure | None = None
    polls: int = 0
    canceled: bool = False
    deleted: bool = False

    def observe(self) -> Phase:
        """One status read: the job moves along its script by one poll."""
        if self.canceled:
            return Phase.CANCELED
        self.polls = min(self.polls + 1, self.queued_polls + self.running_polls + 1)
        return self.phase

    @property
    def phase(self) -> Phase:
        if self.canceled:
            return Phase.CANCELED
        if self.polls <= self.queued_polls:
            return Phase.QUEUED
        if self.polls <= self.queued_polls + self.running_polls:
            return Phase.RUNNING
        return Phase.FAILED if self.failure is not None else Phase.SUCCEEDED

    @property
    def progress(self) -> float:
        """Share done, 0..1: grows during the running stretch."""
        if self.phase is Phase.SUCCEEDED:
            return 1.0
        ran = max(0, self.polls - self.queued_polls)
        return ran / (self.running_polls + 1)


@dataclass
class FakeOutput:
    job_id: str
    issued_at: float
    fetches: int = 0
    expired: bool = False


@dataclass
class FakeProviderState:
    """Jobs, outputs and failure knobs of one fake; tests hold it and turn the knobs."""

    # The MP4 every successful job serves (see render_sample_mp4).
    video: bytes = b""
    clock: Callable[[], float] = time.time
    # The next N create requests answer 429 (with Retry-After), then 5xx.
    rate_limit_creates: int = 0
    retry_after_s: int = 1
    server_error_creates: int = 0
    # The next create is refused with 400 and this reason (e.g. an unreachable image).
    refuse_next_create: str | None = None
    # Each new job stays queued for this many polls, then runs for this many.
    queued_polls: int = 0
    running_polls: int = 1
    # The next job created ends with this failure instead of an output.
    fail_next: FakeFailure | None = None
    # Outputs stop being served this long after their URL was issued…
    output_ttl_s: float | None = None
    # …or after their first download.
    output_single_use: bool = False
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    outputs: dict[str, FakeOutput] = field(default_factory=dict)
    # Every create request that got past authentication, accepted or refused.
    create_attempts: int = 0
    # What a download of an expired output answers (signed URLs: 403; removed files: 404).
    expired_status: int = 404

    @property
    def creates(self) -> int:
        """Jobs actually created (what a provider would bill)."""
        return len(self.jobs)

    def take_create_fault(self) -> int | None:
        """The HTTP status a knob makes this create answer, if any (429 first, then 5xx)."""
        if self.rate_limit_creates > 0:
            self.rate_limit_creates -= 1
            return 429
        if self.server_error_creates > 0:
            self.server_error_creates -= 1
            return 503
        return None

    def take_refusal(self) -> str | None:
        reason, self.refuse_next_create = self.refuse_next_create, None
        return reason

    def new_job(self, job_id: str, body: dict[str, Any]) -> FakeJob:
        job = FakeJob(
            id=job_id,
            body=body,
            created_at=self.clock(),
            queued_polls=self.queued_polls,
            running_polls=self.running_polls,
            failure=self.fail_next,
        )
        self.fail_next = None
        self.jobs[job_id] = job
        return job

    def issue_output(self, job_id: str) -> str:
        """A fresh token naming this job's video; each status read issues a new one."""
        token = secrets.token_hex(12)
        self.outputs[token] = FakeOutput(job_id=job_id, issued_at=self.clock())
        return token

    def expire_outputs(self) -> None:
        """Make every URL issued so far stop working, as if its TTL had passed."""
        for output in self.outputs.values():
            output.expired = True

    def read_output(self, token: str) -> bytes | int:
        """The video behind ``token``, or the HTTP status a download gets instead."""
        output = self.outputs.get(token)
        if output is None:
            return 404
        too_old = self.output_ttl_s is not None and (
            self.clock() - output.issued_at >= self.output_ttl_s
        )
        used_up = self.output_single_use and output.fetches > 0
        job = self.jobs.get(output.job_id)
        if output.expired or too_old or used_up or job is None or job.deleted:
            return self.expired_status
        output.fetches += 1
        return self.video


def iso_utc(epoch_s: float) -> str:
    """RFC 3339 UTC time with a Z, as the providers write timestamps."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat().replace("+00:00", "Z")


def sign_standard_webhook(
    secret: str, body: bytes, *, msg_id: str, timestamp: int
) -> dict[str, str]:
    """Headers of a Standard Webhooks delivery: HMAC-SHA256 over ``id.timestamp.body``,
    keyed with the base64 part of a ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


@functools.cache
def render_sample_mp4() -> bytes:
    """A real 640x360, 1 s H.264 MP4, rendered once per process by the local renderer."""
    # Imported here: the fakes themselves work without ffmpeg when given other bytes.
    from vidpipe.media.ffmpeg import find_ffmpeg
    from vidpipe.media.render import render_prompt_video

    with tempfile.TemporaryDirectory(prefix="vidpipe-sample-") as tmp:
        work = Path(tmp)
        out = work / "sample.mp4"
        render_prompt_video(
            "a fake provider's video",
            seconds=1,
            width=640,
            height=360,
            fps=30,
            seed=1,
            out_path=out,
            work_dir=work / "cards",
            progress_path=work / "progress.txt",
            ffmpeg=find_ffmpeg(),
        )
        return out.read_bytes()


@contextlib.asynccontextmanager
async def serve_on_loopback(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in this event loop.

    Yields the base URL (``http://127.0.0.1:PORT``); stops the server on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", ws="none", http="h11", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def poll_until_terminal(
    provider: Provider, job_id: str, *, max_polls: int = 50
) -> tuple[PollResult, Sequence[PollResult]]:
    """Poll without sleeping (fakes move per poll) until the job ends.

    Returns the final result and every result seen, in order.
    """
    seen: list[PollResult] = []
    for _ in range(max_polls):
        result = await provider.poll(job_id)
        seen.append(result)
        if result.status.terminal:
            return result, seen
    raise AssertionError(f"{job_id} still {seen[-1].status} after {max_polls} polls")


async def download(provider: Provider, output: OutputRef) -> bytes:
    """An output's bytes through the adapter's own fetch_output."""
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await provider.fetch_output(output, sink)
    return b"".join(chunks)


def statuses(results: Sequence[PollResult]) -> list[ProviderStatus]:
    """The distinct statuses in order of first appearance."""
    return list(dict.fromkeys(r.status for r in results))
