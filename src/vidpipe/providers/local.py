"""The offline provider: renders prompt videos on this machine, like a cloud would.

Each job is a directory under ``state_dir`` and a detached runner process
(``vidpipe.providers.local_runner``), so jobs survive the death of the worker that
submitted them, and a worker that resumes polls the same job. Submitting twice with
one idempotency key gives the same job, never a second render.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import vidpipe
from vidpipe.errors import MediaError, PermanentProviderError
from vidpipe.media.ffmpeg import find_ffmpeg, read_progress_out_time_s
from vidpipe.providers.base import (
    ByteSink,
    ModelInfo,
    OutputRef,
    PollResult,
    Provider,
    ProviderStatus,
    VideoRequest,
)
from vidpipe.providers.local_runner import JobDir, JobSpec

__all__ = ["LocalProvider"]

log = logging.getLogger("vidpipe.providers.local")

MODEL = ModelInfo(
    id="procedural",
    sizes=(
        "640x360", "360x640", "1280x720", "720x1280",
        "1920x1080", "1080x1920", "720x720", "1024x1024",
    ),
    min_seconds=1,
    max_seconds=20,
    fps=30,
    description="Offline renderer: a moving gradient with the prompt's words, for "
    "development and tests.",
)  # fmt: skip

_JOB_ID = re.compile(r"loc_[0-9a-f]{24}")
_CHUNK_BYTES = 1024 * 1024
# A job with no status this long after submission has no runner: the submitting
# process died between creating the job and starting its runner.
_START_GRACE_S = 30.0


class LocalProvider(Provider):
    """Provider "local", model "procedural": see the module docstring."""

    name = "local"
    accepts_idempotency_key = True
    # Procedural clips compress to a few kilobytes a second: a size floor meant for
    # generated footage would reject them.
    validation_overrides = {"min_size_bytes": 1000}
    typical_latency_s = 2.0

    def __init__(
        self, state_dir: Path, *, ffmpeg: Path | None = None, min_latency_s: float = 0.0
    ) -> None:
        super().__init__(http=None)
        # Resolved once: runner command lines and output URLs carry this exact path.
        self.state_dir = state_dir.resolve()
        self.min_latency_s = min_latency_s
        self._ffmpeg = ffmpeg

    def models(self) -> tuple[ModelInfo, ...]:
        return (MODEL,)

    @staticmethod
    def job_id_for(idempotency_key: str) -> str:
        """The job id a key maps to: the same key always names the same job."""
        return "loc_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        return await asyncio.to_thread(self._submit, request, idempotency_key)

    async def poll(self, provider_job_id: str) -> PollResult:
        return await asyncio.to_thread(self._poll, provider_job_id)

    async def cancel(self, provider_job_id: str) -> None:
        await asyncio.to_thread(self._cancel, provider_job_id)

    async def fetch_output(self, output: OutputRef, sink: ByteSink) -> None:
        path = self._output_path(output)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise PermanentProviderError(
                f"output {output.url} no longer exists", code="output_unavailable"
            ) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK_BYTES):
                await sink(chunk)
        finally:
            handle.close()

    # --- submit -----------------------------------------------------------------

    def _submit(self, request: VideoRequest, idempotency_key: str) -> str:
        _check_request(request)
        job_id = self.job_id_for(idempotency_key)
        job = JobDir(self.state_dir / job_id)
        if job.path.exists():
            return job_id
        self.state_dir.mkdir(parents=True, exist_ok=True)
        spec = JobSpec(
            prompt=request.prompt,
            seconds=request.seconds,
            width=request.width,
            height=request.height,
            fps=request.fps,
            seed=request.seed,
            submitted_at=time.time(),
            min_latency_s=self.min_latency_s,
            ffmpeg=str(self._find_ffmpeg()),
        )
        if not self._create_job_dir(job, spec):
            return job_id
        # One line per job ever started: an audit trail, and what tests count.
        size = f"{request.width}x{request.height}"
        line = f"{spec.submitted_at:.3f} {job_id} {size} {request.seconds}s\n"
        with (self.state_dir / "submissions.log").open("a", encoding="utf-8") as log_file:
            log_file.write(line)
        self._spawn_runner(job)
        return job_id

    def _create_job_dir(self, job: JobDir, spec: JobSpec) -> bool:
        """Create the job directory with its request in one atomic step.

        The directory is filled under a temporary name and renamed into place, so a
        job directory never exists without its request; renaming onto an existing
        (non-empty) job directory fails, so of two concurrent submits exactly one
        wins. False when another submit won.
        """
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.state_dir))
        try:
            JobDir(staging).write_request(spec)
            os.rename(staging, job.path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if job.request_path.exists():
                return False
            raise
        return True

    def _spawn_runner(self, job: JobDir) -> None:
        env = dict(os.environ)
        # The runner must import this very vidpipe, installed or not.
        package_root = str(Path(vidpipe.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "vidpipe.providers.local_runner", str(job.path)]
        try:
            with job.log_path.open("ab") as runner_log:
                process = subprocess.Popen(
                    argv,
                    cwd=job.path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=runner_log,
                    stderr=subprocess.STDOUT,
                    # Own session: no signal aimed at the submitter (Ctrl-C, a
                    # worker's shutdown) reaches the job, and cancel can kill the
                    # runner with its ffmpeg as one process group.
                    start_new_session=True,
                )
        except OSError as exc:
            log.error("could not start runner for %s: %s", job.path.name, exc)
            job.write_status(
                ProviderStatus.FAILED, finished_at=time.time(), error_code="runner_spawn_failed",
                error_message=f"could not start the renderer: {exc}",
            )  # fmt: skip
            return
        # Reap the child when it exits, so it never lingers as a zombie that looks
        # alive to poll(); if this process dies first, init adopts and reaps it.
        threading.Thread(target=process.wait, name=f"reap-{job.path.name}", daemon=True).start()
        log.info("started runner pid %d for %s", process.pid, job.path.name)

    # --- poll -------------------------------------------------------------------

    def _poll(self, job_id: str) -> PollResult:
        job = self._job(job_id)
        status = job.read_status()
        state = None if status is None else ProviderStatus(status["status"])
        if job.cancel_requested() and (state is None or not state.terminal):
            return PollResult(ProviderStatus.CANCELED)
        if status is None or state is None:
            return self._poll_queued(job)
        if state is ProviderStatus.RUNNING:
            return self._poll_running(job, status)
        if state is ProviderStatus.SUCCEEDED:
            return PollResult(
                ProviderStatus.SUCCEEDED, progress=100, outputs=(OutputRef(job.out_path.as_uri()),)
            )
        if state is ProviderStatus.FAILED:
            return PollResult(
                ProviderStatus.FAILED,
                error_code=status.get("error_code", "render_failed"),
                error_message=status.get("error_message", "render failed"),
            )
        return PollResult(state)

    def _poll_queued(self, job: JobDir) -> PollResult:
        spec = job.read_request()
        if time.time() - spec.submitted_at > _START_GRACE_S:
            return self._declare_failed(
                job, "runner_lost", "the renderer never started for this job"
            )
        return PollResult(ProviderStatus.QUEUED, progress=0, next_poll_s=0.5)

    def _poll_running(self, job: JobDir, status: dict[str, Any]) -> PollResult:
        pid = int(status["pid"])
        runner = _runner_state(pid, job.path)
        if runner != "alive":
            # It may have written its verdict and exited since we read the status.
            latest = job.read_status()
            if latest is not None and latest["status"] != ProviderStatus.RUNNING:
                return self._poll(job.path.name)
            if runner == "dead":
                _kill_orphans(pid)
            return self._declare_failed(job, "runner_crashed", "renderer exited unexpectedly")
        spec = job.read_request()
        out_s = read_progress_out_time_s(job.progress_path) or 0.0
        share = min(1.0, out_s / spec.seconds)
        if spec.min_latency_s > 0:
            # Simulated cloud latency: the job is only as far along as the latency
            # window, however fast the render itself was.
            elapsed_share = (time.time() - spec.submitted_at) / spec.min_latency_s
            share = min(share, max(0.0, elapsed_share))
        # 100 is reserved for a finished job with its output in place.
        return PollResult(ProviderStatus.RUNNING, progress=int(share * 99), next_poll_s=1.0)

    def _declare_failed(self, job: JobDir, code: str, message: str) -> PollResult:
        # Recorded, so every later poll gives the same verdict.
        job.write_status(
            ProviderStatus.FAILED, finished_at=time.time(), error_code=code, error_message=message
        )
        return PollResult(ProviderStatus.FAILED, error_code=code, error_message=message)

    # --- cancel -----------------------------------------------------------------

    def _cancel(self, job_id: str) -> None:
        job = self._job(job_id)
        status = job.read_status()
        if status is not None and ProviderStatus(status["status"]).terminal:
            return
        # Marker first, status second: a runner that writes "running" after we read
        # no status checks the marker next and cancels itself (see run_job).
        job.request_cancel()
        status = job.read_status()
        if status is not None and status["status"] == ProviderStatus.RUNNING:
            pid = int(status["pid"])
            if _runner_state(pid, job.path) != "reused":
                with contextlib.suppress(ProcessLookupError):
                    # The runner leads its own process group: this stops its ffmpeg too.
                    os.killpg(pid, signal.SIGKILL)
        if status is None or not ProviderStatus(status["status"]).terminal:
            job.write_status(ProviderStatus.CANCELED, finished_at=time.time())
        log.info("canceled %s", job_id)

    # --- helpers ----------------------------------------------------------------

    def _find_ffmpeg(self) -> Path:
        if self._ffmpeg is not None:
            return self._ffmpeg
        try:
            return find_ffmpeg()
        except MediaError as exc:
            raise PermanentProviderError(exc.message, code=exc.code) from exc

    def _job(self, job_id: str) -> JobDir:
        # The id becomes a path: only ids this provider could have made are looked up.
        job = JobDir(self.state_dir / job_id)
        if not _JOB_ID.fullmatch(job_id) or not job.request_path.exists():
            raise PermanentProviderError(
                f"no local job {job_id!r}", code="not_found", provider_job_id=job_id
            )
        return job

    def _output_path(self, output: OutputRef) -> Path:
        parsed = urlparse(output.url)
        path = Path(url2pathname(parsed.path)).resolve()
        if parsed.scheme != "file" or not path.is_relative_to(self.state_dir):
            raise PermanentProviderError(
                f"refusing to read {output.url}: not an output of this provider",
                code="output_forbidden",
            )
        return path


def _check_request(request: VideoRequest) -> None:
    problems = []
    if request.model != MODEL.id:
        problems.append(f"unknown model {request.model!r}")
    if f"{request.width}x{request.height}" not in MODEL.sizes:
        problems.append(f"size {request.width}x{request.height} not in {', '.join(MODEL.sizes)}")
    if not MODEL.min_seconds <= request.seconds <= MODEL.max_seconds:
        problems.append(
            f"seconds {request.seconds} not in {MODEL.min_seconds}..{MODEL.max_seconds}"
        )
    if not 1 <= request.fps <= 60:
        problems.append(f"fps {request.fps} not in 1..60")
    if problems:
        raise PermanentProviderError("; ".join(problems), code="invalid_request")


def _runner_state(pid: int, job_path: Path) -> Literal["alive", "dead", "reused"]:
    """Whether ``pid`` is still this job's runner, has died, or is now another program."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "reused"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # No /proc (not Linux): the signal check above is all we have.
        return "alive"
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return "dead"
    return "alive" if os.fsencode(job_path) in cmdline.split(b"\0") else "reused"


def _kill_orphans(pid: int) -> None:
    """Kill what is left of a dead runner's process group (its ffmpeg)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Safe once the leader is dead: Linux does not reuse a pid while it is still
        # a process group's id, so this group can only hold the runner's children.
        os.killpg(pid, signal.SIGKILL)
