"""The detached process that renders one local-provider job, and its on-disk protocol.

``LocalProvider.submit`` starts ``python -m vidpipe.providers.local_runner <job_dir>``
in a session of its own, so the job outlives whoever submitted it, as a cloud job
would. Everything the provider and the runner share is a file in the job directory:

- ``request.json``: the job spec, written before the directory becomes visible;
- ``status.json``: written by the runner (and by cancel/poll for verdicts the runner
  can no longer give), always atomically, so a reader never sees half a file;
- ``cancel``: a marker; the runner checks it before it starts and before it finishes;
- ``progress.txt``: ffmpeg's ``-progress`` output; ``out.mp4``: the finished video.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vidpipe.errors import MediaError
from vidpipe.media.render import render_prompt_video

__all__ = ["JobDir", "JobSpec", "main", "run_job"]

log = logging.getLogger("vidpipe.providers.local_runner")

_LATENCY_STEP_S = 0.1


@dataclass(frozen=True)
class JobSpec:
    """What to render, plus when it was submitted and how long it must appear to take."""

    prompt: str
    seconds: int
    width: int
    height: int
    fps: int
    seed: int | None
    # Wall-clock epoch seconds: provider and runner are different processes, and a
    # monotonic clock is not comparable across them.
    submitted_at: float
    min_latency_s: float
    ffmpeg: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**data)


@dataclass(frozen=True)
class JobDir:
    """Paths and atomic reads/writes of one job's directory."""

    path: Path

    @property
    def request_path(self) -> Path:
        return self.path / "request.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def cancel_path(self) -> Path:
        return self.path / "cancel"

    @property
    def progress_path(self) -> Path:
        return self.path / "progress.txt"

    @property
    def partial_path(self) -> Path:
        return self.path / "out.partial.mp4"

    @property
    def out_path(self) -> Path:
        return self.path / "out.mp4"

    @property
    def work_dir(self) -> Path:
        return self.path / "work"

    @property
    def log_path(self) -> Path:
        return self.path / "runner.log"

    def write_request(self, spec: JobSpec) -> None:
        _write_json_atomic(self.request_path, asdict(spec))

    def read_request(self) -> JobSpec:
        return JobSpec.from_dict(json.loads(self.request_path.read_text(encoding="utf-8")))

    def write_status(self, status: str, **fields: Any) -> None:
        _write_json_atomic(self.status_path, {"status": status, **fields})

    def read_status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data

    def request_cancel(self) -> None:
        self.cancel_path.touch(exist_ok=True)

    def cancel_requested(self) -> bool:
        return self.cancel_path.exists()


def run_job(job: JobDir) -> int:
    """Render the job in ``job``, recording each state in ``status.json``; exit code."""
    spec = job.read_request()
    if job.cancel_requested():
        job.write_status("canceled", finished_at=time.time())
        return 0
    started_at = time.time()
    job.write_status("running", pid=os.getpid(), started_at=started_at)
    # Checked again after announcing ourselves: a cancel that read no status before
    # we wrote "running" has left its marker by now (see LocalProvider.cancel).
    if job.cancel_requested():
        job.write_status("canceled", finished_at=time.time())
        return 0
    try:
        render_prompt_video(
            spec.prompt,
            seconds=spec.seconds,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            seed=spec.seed,
            out_path=job.partial_path,
            work_dir=job.work_dir,
            progress_path=job.progress_path,
            ffmpeg=Path(spec.ffmpeg),
            timeout_s=max(60.0, spec.seconds * 20.0),
        )
    except MediaError as exc:
        log.error("render failed: %s", exc)
        job.write_status(
            "failed", pid=os.getpid(), started_at=started_at, finished_at=time.time(),
            error_code="render_failed", error_message=exc.message,
        )  # fmt: skip
        return 1
    if not _wait_out_latency(job, spec):
        job.write_status("canceled", finished_at=time.time())
        return 0
    # The rename is what makes the output exist: a reader never sees a partial file.
    os.replace(job.partial_path, job.out_path)
    job.write_status("succeeded", pid=os.getpid(), started_at=started_at, finished_at=time.time())
    return 0


def _wait_out_latency(job: JobDir, spec: JobSpec) -> bool:
    """Sleep until ``min_latency_s`` has passed since submission; False if canceled."""
    deadline = spec.submitted_at + spec.min_latency_s
    while True:
        if job.cancel_requested():
            return False
        remaining = deadline - time.time()
        if remaining <= 0:
            return True
        time.sleep(min(_LATENCY_STEP_S, remaining))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    # A per-writer temporary name: the runner and a canceling provider (in any
    # thread) may write the same file at once, and each must replace it whole.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vidpipe.providers.local_runner JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    job = JobDir(Path(args[0]))
    try:
        return run_job(job)
    except Exception as exc:
        # Anything unexpected still ends in a verdict a poller can read.
        log.exception("runner crashed")
        job.write_status(
            "failed", finished_at=time.time(), error_code="runner_error",
            error_message=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
