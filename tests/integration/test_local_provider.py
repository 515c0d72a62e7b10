"""LocalProvider end to end: real runner processes, real ffmpeg, real files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vidpipe.errors import PermanentProviderError
from vidpipe.media.probe import probe
from vidpipe.providers.base import OutputRef, PollResult, ProviderStatus, VideoRequest
from vidpipe.providers.local import LocalProvider

pytestmark = pytest.mark.slow

REQUEST = VideoRequest(
    model="procedural", prompt="a paper boat sails a rainy street", seconds=1, width=640, height=360
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "local"
    yield state
    # Runners are detached on purpose; a test must not leave any behind.
    for status_path in state.glob("loc_*/status.json"):
        pid = json.loads(status_path.read_text()).get("pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


async def wait_for(
    provider: LocalProvider,
    job_id: str,
    statuses: set[ProviderStatus],
    *,
    timeout_s: float = 30.0,
) -> PollResult:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await provider.poll(job_id)
        if result.status in statuses:
            return result
        assert time.monotonic() < deadline, f"still {result} after {timeout_s} s"
        await asyncio.sleep(0.05)


def status_of(state_dir: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / job_id / "status.json").read_text())
    return data


async def wait_until_gone(pid: int, *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process {pid} still alive"
        await asyncio.sleep(0.05)


def submissions(state_dir: Path) -> list[str]:
    return (state_dir / "submissions.log").read_text().splitlines()


async def test_submit_poll_fetch(state_dir: Path) -> None:
    provider = LocalProvider(state_dir)

    job_id = await provider.submit(REQUEST, "key-1")
    result = await wait_for(provider, job_id, {ProviderStatus.SUCCEEDED, ProviderStatus.FAILED})

    assert result.status is ProviderStatus.SUCCEEDED, result
    assert result.progress == 100
    (output,) = result.outputs
    path = provider.state_dir / job_id / "out.mp4"
    assert output.url == path.as_uri()
    received = bytearray()

    async def sink(chunk: bytes) -> None:
        received.extend(chunk)

    await provider.fetch_output(output, sink)
    assert bytes(received) == path.read_bytes()
    info = probe(path)
    assert info.video is not None
    assert (info.video.width, info.video.height, info.video.codec) == (640, 360, "h264")


async def test_same_key_gives_the_same_job_once(state_dir: Path) -> None:
    provider = LocalProvider(state_dir)

    ids = await asyncio.gather(*(provider.submit(REQUEST, "same-key") for _ in range(5)))
    again = await LocalProvider(state_dir).submit(REQUEST, "same-key")

    assert set(ids) == {again}
    assert again.startswith("loc_")
    assert len(submissions(state_dir)) == 1
    await wait_for(provider, again, {ProviderStatus.SUCCEEDED})
    assert await provider.submit(REQUEST, "same-key") == again
    assert len(submissions(state_dir)) == 1
    other = await provider.submit(REQUEST, "other-key")
    assert other != again
    assert len(submissions(state_dir)) == 2


async def test_progress_moves_through_the_latency_window(state_dir: Path) -> None:
    provider = LocalProvider(state_dir, min_latency_s=1.5)
    job_id = await provider.submit(REQUEST, "slow")

    seen: list[int] = []
    while (result := await provider.poll(job_id)).status is not ProviderStatus.SUCCEEDED:
        assert result.status in (ProviderStatus.QUEUED, ProviderStatus.RUNNING), result
        assert result.progress is not None
        seen.append(result.progress)
        await asyncio.sleep(0.1)

    assert seen == sorted(seen)
    assert 0 <= seen[0] < 30
    assert max(seen) >= 60
    assert all(p <= 99 for p in seen)
    request = json.loads((state_dir / job_id / "request.json").read_text())
    done = status_of(state_dir, job_id)["finished_at"]
    assert done - request["submitted_at"] >= 1.5


async def test_cancel_stops_a_running_job(state_dir: Path) -> None:
    provider = LocalProvider(state_dir, min_latency_s=60)
    job_id = await provider.submit(REQUEST, "to-cancel")
    await wait_for(provider, job_id, {ProviderStatus.RUNNING})
    pid = status_of(state_dir, job_id)["pid"]

    await provider.cancel(job_id)

    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED
    await wait_until_gone(pid)
    assert not (state_dir / job_id / "out.mp4").exists()
    await provider.cancel(job_id)  # idempotent
    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED


async def test_cancel_before_the_runner_starts(state_dir: Path) -> None:
    provider = LocalProvider(state_dir, min_latency_s=60)
    job_id = await provider.submit(REQUEST, "cancel-early")

    await provider.cancel(job_id)

    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED
    # Whenever the runner got going, it saw the marker and stopped.
    await asyncio.sleep(1.0)
    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED
    assert status_of(state_dir, job_id)["status"] == "canceled"


async def test_cancel_after_success_changes_nothing(state_dir: Path) -> None:
    provider = LocalProvider(state_dir)
    job_id = await provider.submit(REQUEST, "done")
    await wait_for(provider, job_id, {ProviderStatus.SUCCEEDED})

    await provider.cancel(job_id)

    assert (await provider.poll(job_id)).status is ProviderStatus.SUCCEEDED


async def test_killed_runner_is_reported_failed(state_dir: Path) -> None:
    provider = LocalProvider(state_dir, min_latency_s=60)
    job_id = await provider.submit(REQUEST, "doomed")
    await wait_for(provider, job_id, {ProviderStatus.RUNNING})
    pid = status_of(state_dir, job_id)["pid"]

    os.kill(pid, signal.SIGKILL)
    result = await wait_for(provider, job_id, {ProviderStatus.FAILED}, timeout_s=10)

    assert result.error_code == "runner_crashed"
    assert result.error_message == "renderer exited unexpectedly"
    # The verdict is recorded: it does not depend on the pid staying unused.
    assert status_of(state_dir, job_id)["status"] == "failed"


async def test_job_outlives_the_process_that_submitted_it(state_dir: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from vidpipe.providers.base import VideoRequest\n"
        "from vidpipe.providers.local import LocalProvider\n"
        "request = VideoRequest(model='procedural', prompt='orphan', seconds=1,"
        " width=640, height=360)\n"
        "provider = LocalProvider(Path(sys.argv[1]), min_latency_s=1.0)\n"
        "print(asyncio.run(provider.submit(request, 'orphan')))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(state_dir), stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    job_id = stdout.decode().strip()

    # The submitter has exited; a new provider instance picks the job up.
    result = await wait_for(
        LocalProvider(state_dir), job_id, {ProviderStatus.SUCCEEDED, ProviderStatus.FAILED}
    )

    assert result.status is ProviderStatus.SUCCEEDED, result


async def test_unknown_ids_are_not_found(state_dir: Path) -> None:
    provider = LocalProvider(state_dir)
    await provider.submit(REQUEST, "exists")

    for job_id in ("loc_" + "0" * 24, "../../etc", "loc_", ""):
        with pytest.raises(PermanentProviderError) as excinfo:
            await provider.poll(job_id)
        assert excinfo.value.code == "not_found"
    with pytest.raises(PermanentProviderError) as canceled:
        await provider.cancel("loc_" + "0" * 24)
    assert canceled.value.code == "not_found"


async def test_fetch_output_refuses_files_outside_the_state_dir(state_dir: Path) -> None:
    provider = LocalProvider(state_dir)

    async def sink(chunk: bytes) -> None:
        raise AssertionError("nothing may be read")

    for url in ("file:///etc/passwd", (state_dir / ".." / "x.mp4").as_uri(), "http://x/y.mp4"):
        with pytest.raises(PermanentProviderError) as excinfo:
            await provider.fetch_output(OutputRef(url), sink)
        assert excinfo.value.code == "output_forbidden"
    with pytest.raises(PermanentProviderError) as missing:
        await provider.fetch_output(OutputRef((state_dir / "gone.mp4").as_uri()), sink)
    assert missing.value.code == "output_unavailable"


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(VideoRequest("procedural", "x", 1, 320, 240), id="size"),
        pytest.param(VideoRequest("procedural", "x", 21, 640, 360), id="too-long"),
        pytest.param(VideoRequest("sora-2", "x", 1, 640, 360), id="model"),
    ],
)
async def test_invalid_requests_start_nothing(state_dir: Path, request_: VideoRequest) -> None:
    with pytest.raises(PermanentProviderError) as excinfo:
        await LocalProvider(state_dir).submit(request_, "bad")

    assert excinfo.value.code == "invalid_request"
    assert not (state_dir / "submissions.log").exists()


def test_capabilities() -> None:
    provider = LocalProvider(Path("unused"))

    (model,) = provider.models()
    assert provider.name == "local"
    assert provider.accepts_idempotency_key is True
    assert model.id == "procedural"
    assert {"640x360", "720x1280", "1080x1920", "1024x1024"} <= set(model.sizes)
    assert (model.min_seconds, model.max_seconds, model.fps) == (1, 20, 30)
    assert (
        LocalProvider.job_id_for("k")
        == LocalProvider.job_id_for("k")
        != (LocalProvider.job_id_for("k2"))
    )
