"""SimulatedProvider end to end: real rendered clips, real files, another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from vidpipe.errors import MediaError, PermanentProviderError
from vidpipe.media.probe import probe
from vidpipe.providers.base import OutputRef, ProviderStatus, VideoRequest
from vidpipe.providers.simulated import SimulatedConfig, SimulatedProvider

pytestmark = pytest.mark.slow

REQUEST = VideoRequest(model="sim-1", prompt="a red kite", seconds=1, width=640, height=360)
# Jobs end at once: these tests are about outputs, not latency.
INSTANT = {"latency_min_s": 0.0, "latency_max_s": 0.0}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the module's tests, so each clip is rendered once.
    return tmp_path_factory.mktemp("simulated")


async def finished_output(
    state_dir: Path, key: str, **rates: float
) -> tuple[SimulatedProvider, str]:
    provider = SimulatedProvider(state_dir, SimulatedConfig(**INSTANT, **rates))
    result = await provider.poll(await provider.submit(REQUEST, key))
    assert result.status is ProviderStatus.SUCCEEDED
    return provider, result.outputs[0].url


async def download(provider: SimulatedProvider, url: str, path: Path) -> Path:
    with path.open("wb") as handle:

        async def sink(chunk: bytes) -> None:
            handle.write(chunk)

        await provider.fetch_output(OutputRef(url), sink)
    return path


async def test_clean_output_is_the_asked_clip(state_dir: Path, tmp_path: Path) -> None:
    provider, url = await finished_output(state_dir, "ok")
    info = probe(await download(provider, url, tmp_path / "out.mp4"))
    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert info.duration_s == pytest.approx(1.0, abs=0.1)

    # The clip is cached: a second download renders nothing new.
    await download(provider, url, tmp_path / "again.mp4")
    assert sorted(p.name for p in (state_dir / "clips").iterdir()) == ["640x360x1.mp4"]


async def test_truncated_output_is_a_shorter_valid_mp4(state_dir: Path, tmp_path: Path) -> None:
    provider, url = await finished_output(state_dir, "short", truncated_rate=1.0)
    info = probe(await download(provider, url, tmp_path / "out.mp4"))
    assert info.duration_s < 0.8


async def test_wrong_resolution_output(state_dir: Path, tmp_path: Path) -> None:
    provider, url = await finished_output(state_dir, "small", wrong_resolution_rate=1.0)
    info = probe(await download(provider, url, tmp_path / "out.mp4"))
    assert info.video is not None
    assert (info.video.width, info.video.height) == (320, 180)


async def test_corrupt_output_is_not_playable(state_dir: Path, tmp_path: Path) -> None:
    provider, url = await finished_output(state_dir, "junk", corrupt_rate=1.0)
    path = await download(provider, url, tmp_path / "out.mp4")
    assert path.stat().st_size > 60_000
    with pytest.raises(MediaError):
        probe(path)


async def test_expired_output_is_unavailable(state_dir: Path, tmp_path: Path) -> None:
    provider, url = await finished_output(state_dir, "gone", expired_rate=1.0)
    with pytest.raises(PermanentProviderError) as info:
        await download(provider, url, tmp_path / "out.mp4")
    assert info.value.code == "output_unavailable"


async def test_foreign_output_urls_are_refused(state_dir: Path, tmp_path: Path) -> None:
    provider = SimulatedProvider(state_dir, SimulatedConfig())
    with pytest.raises(PermanentProviderError) as info:
        await download(provider, "file:///etc/passwd", tmp_path / "out.mp4")
    assert info.value.code == "output_forbidden"


async def test_a_job_submitted_here_is_polled_and_canceled_from_another_process(
    tmp_path: Path,
) -> None:
    config = SimulatedConfig(seed=4, latency_min_s=3600.0, latency_max_s=3600.0)
    provider = SimulatedProvider(tmp_path / "sim", config)
    job_id = await provider.submit(REQUEST, "key-1")
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from vidpipe.providers.simulated import SimulatedConfig, SimulatedProvider\n"
        "p = SimulatedProvider(Path(sys.argv[1]), SimulatedConfig.from_json(sys.argv[2]))\n"
        "before = asyncio.run(p.poll(sys.argv[3]))\n"
        "asyncio.run(p.cancel(sys.argv[3]))\n"
        "print(before.status.value)\n"
    )
    # A thread, so the event loop stays free while the other process runs.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(tmp_path / "sim"), config.to_json(), job_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "queued"
    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED
