"""A zero-work provider for tests and benchmarks (off by default).

Jobs finish ``latency_s`` after submission; outputs are one small real MP4 per
(size, seconds), rendered once by the local renderer and reused (its bytes kept in
memory once read, as a server would cache a hot file). Every call is
appended to ``calls.log`` in the state directory (process id, call, key or job id,
start and end times), so a test can see from the provider's side what all worker
processes did: submissions per idempotency key, overlapping polls of one job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from vidpipe.errors import PermanentProviderError
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.render import render_prompt_video
from vidpipe.providers.base import (
    ByteSink,
    ModelInfo,
    OutputRef,
    PollResult,
    Provider,
    ProviderStatus,
    VideoRequest,
)

MODEL = ModelInfo(
    id="test",
    sizes=("640x360", "360x640", "1280x720", "720x1280"),
    min_seconds=1,
    max_seconds=20,
    description="Finishes at once with a stock clip: for tests and benchmarks.",
)


class InstantProvider(Provider):
    name = "instant"
    accepts_idempotency_key = True
    # Procedural clips compress to a few kilobytes a second: a size floor meant for
    # generated footage would reject them.
    validation_overrides = {"min_size_bytes": 1000}
    typical_latency_s = 0.0

    def __init__(
        self,
        state_dir: Path,
        *,
        latency_s: float = 0.0,
        call_delay_s: float = 0.0,
        log_calls: bool = True,
    ) -> None:
        super().__init__(http=None)
        self.state_dir = state_dir
        self.latency_s = latency_s
        self.call_delay_s = call_delay_s
        self.log_calls = log_calls
        self._bytes: dict[str, bytes] = {}
        state_dir.mkdir(parents=True, exist_ok=True)

    def models(self) -> tuple[ModelInfo, ...]:
        return (MODEL,)

    def _log(self, call: str, ident: str, start: float) -> None:
        if not self.log_calls:
            return
        line = json.dumps(
            {"pid": os.getpid(), "call": call, "id": ident, "start": start, "end": time.time()}
        )
        # One write() of a short line in append mode: lines from many processes do not
        # interleave.
        with (self.state_dir / "calls.log").open("a") as handle:
            handle.write(line + "\n")

    async def _call_delay(self) -> None:
        if self.call_delay_s > 0:
            await asyncio.sleep(self.call_delay_s)

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        start = time.time()
        await self._call_delay()
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        spec = f"{request.width}x{request.height}x{request.seconds}"
        job_id = f"inst_{digest}_{spec}_{int(start * 1000)}"
        self._log("submit", idempotency_key, start)
        return job_id

    async def poll(self, provider_job_id: str) -> PollResult:
        start = time.time()
        await self._call_delay()
        try:
            _, _, spec, submitted_ms = provider_job_id.split("_")
        except ValueError:
            raise PermanentProviderError("unknown job", code="not_found") from None
        self._log("poll", provider_job_id, start)
        if time.time() * 1000 - int(submitted_ms) < self.latency_s * 1000:
            return PollResult(ProviderStatus.RUNNING, progress=50)
        return PollResult(ProviderStatus.SUCCEEDED, progress=100, outputs=(OutputRef(spec),))

    async def cancel(self, provider_job_id: str) -> None:
        self._log("cancel", provider_job_id, time.time())

    async def fetch_output(self, output: OutputRef, sink: ByteSink) -> None:
        data = self._bytes.get(output.url)
        if data is None:
            path = await asyncio.to_thread(self._clip, output.url)
            data = self._bytes[output.url] = await asyncio.to_thread(path.read_bytes)
        await sink(data)

    def _clip(self, spec: str) -> Path:
        width, height, seconds = (int(v) for v in spec.split("x"))
        path = self.state_dir / f"clip-{spec}.mp4"
        if not path.exists():
            # Each render in its own directory: concurrent first fetches in this and
            # other processes must not write one file; the last rename wins, and every
            # rename moves a complete clip.
            work = Path(tempfile.mkdtemp(prefix=f"work-{spec}-", dir=self.state_dir))
            tmp = work / "clip.mp4"
            render_prompt_video(
                "instant provider",
                seconds=seconds,
                width=width,
                height=height,
                fps=30,
                seed=1,
                out_path=tmp,
                work_dir=work,
                progress_path=work / "progress.txt",
                ffmpeg=find_ffmpeg(),
            )
            os.replace(tmp, path)
            shutil.rmtree(work, ignore_errors=True)
        return path
