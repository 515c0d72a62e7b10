"""A short with the user's own media per scene, fetched over HTTP through the URL guard."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.probe import probe
from vidpipe.plans.shorts import CreateShort, SceneMedia, build_short
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import steps

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    Image.new("RGB", (800, 600), (200, 40, 40)).save(root / "red.png")
    run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30:duration=3", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-preset", "ultrafast", "-y", str(root / "clip.mp4")],
        ffmpeg=find_ffmpeg(), timeout_s=60,
    )  # fmt: skip
    (root / "not-an-image.png").write_text("hello")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _run(runtime: Runtime, job_id: str) -> str:
    stop = asyncio.Event()
    worker = runtime.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(240):
            while True:
                job = await runtime.videos.get(None, job_id)
                if job.status in ("completed", "failed"):
                    return job.status
                assert not task.done(), task.result()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task


async def test_a_short_uses_the_users_own_media(
    sqlite_url: str, make_settings: Callable[..., Settings], media_server: str
) -> None:
    settings = make_settings(sqlite_url, url_allowlist="127.0.0.1/32")
    runtime = await Runtime.open(settings)
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
        body = CreateShort(
            scenes=["A red square, as promised.", "And a test pattern that moves."],
            template="story",
            aspect_ratio="1:1",
            music=False,
            scene_media=[
                SceneMedia(url=f"{media_server}/red.png"),
                SceneMedia(url=f"{media_server}/clip.mp4", kind="video"),
            ],
        )
        created = await runtime.plans.create(
            tenant.id, build_short(body, settings, runtime.registry)
        )
        assert await _run(runtime, created.job.id) == "completed"
        async with runtime.db.read() as conn:
            rows = {
                r.name: r
                for r in await conn.execute(
                    select(steps.c.name, steps.c.kind, steps.c.output).where(
                        steps.c.job_id == created.job.id
                    )
                )
            }
        assert rows["visual_0"].kind == "media"
        assert rows["visual_0"].output["kind"] == "image"
        assert (rows["visual_0"].output["width"], rows["visual_0"].output["height"]) == (800, 600)
        assert rows["visual_1"].output["kind"] == "video"
        asset = await runtime.videos.video_asset(None, created.job.id)
        path = runtime.blobs.local_path(asset.key)
        assert path is not None
        info = probe(path)
        assert info.video is not None
        assert (info.video.width, info.video.height) == (1080, 1080)

        # A file that is not what it claims fails its own step, with a clear code.
        bad = CreateShort(
            scenes=["Not really a picture."],
            template="story",
            aspect_ratio="1:1",
            music=False,
            scene_media=[SceneMedia(url=f"{media_server}/not-an-image.png")],
        )
        failed = await runtime.plans.create(tenant.id, build_short(bad, settings, runtime.registry))
        assert await _run(runtime, failed.job.id) == "failed"
        job = await runtime.videos.get(None, failed.job.id)
        assert job.error_code == "broken_image"
    finally:
        await runtime.close()
