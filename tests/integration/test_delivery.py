"""Delivery end to end: full validation in the pipeline, derivatives served as
variants, the provenance manifest, per-request validation thresholds."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import Harness
from vidpipe.api.app import create_app
from vidpipe.config import RetryPolicySetting, Settings
from vidpipe.core.runtime import Runtime
from vidpipe.media.derivatives import parse_master_playlist
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q

pytestmark = pytest.mark.timeout(120)


async def test_variants_and_manifest(harness: Harness) -> None:
    video = await harness.create(
        model="local/procedural", seconds=2, size="1280x720", derivatives=["spritesheet", "hls"]
    )
    vid = str(video["id"])
    assert await harness.run_until(vid) == "completed"
    get = harness.client.get
    headers = harness.headers()
    thumb = await get(f"/v1/videos/{vid}/content?variant=thumbnail", headers=headers)
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 320
    poster = await get(f"/v1/videos/{vid}/content?variant=poster", headers=headers)
    assert Image.open(io.BytesIO(poster.content)).size == (1280, 720)
    preview = await get(f"/v1/videos/{vid}/content?variant=preview", headers=headers)
    assert getattr(Image.open(io.BytesIO(preview.content)), "n_frames", 1) > 1
    sprite = await get(f"/v1/videos/{vid}/content?variant=spritesheet", headers=headers)
    assert sprite.status_code == 200
    vtt = await get(f"/v1/videos/{vid}/content?variant=spritesheet_vtt", headers=headers)
    assert vtt.text.startswith("WEBVTT")
    assert "#xywh=" in vtt.text
    hls = await get(f"/v1/videos/{vid}/content?variant=hls", headers=headers)
    assert hls.status_code == 307
    master = await get(hls.headers["location"], headers=headers)
    variants = parse_master_playlist(master.text)
    assert len(variants) >= 3
    for _attrs, uri in variants:
        playlist = await get(f"/v1/videos/{vid}/hls/{uri}", headers=headers)
        assert playlist.status_code == 200
        segment = next(line for line in playlist.text.splitlines() if line.endswith(".ts"))
        base = uri.rsplit("/", 1)[0]
        ts = await get(f"/v1/videos/{vid}/hls/{base}/{segment}", headers=headers)
        assert ts.status_code == 200
        assert ts.content[:1] == b"G"  # MPEG-TS sync byte
    manifest = (await get(f"/v1/videos/{vid}/content?variant=manifest", headers=headers)).json()
    full = await get(f"/v1/videos/{vid}/content", headers=headers)
    assert manifest["output"]["sha256"] == hashlib.sha256(full.content).hexdigest()
    assert manifest["provider"] == "local"
    assert manifest["attempts"] == [
        {
            "number": 1,
            "provider": "local",
            "model": "procedural",
            "provider_job_id": manifest["provider_job_id"],
            "state": "succeeded",
            "error_class": None,
            "error_code": None,
        }
    ]
    assert manifest["request"]["prompt"] == "a red kite over green hills"
    assert {d["name"] for d in manifest["derivatives"]} >= {"thumbnail.jpg", "sprite.jpg"}
    other = await get(
        f"/v1/videos/{vid}/content?variant=thumbnail", headers=harness.headers(harness.other_key)
    )
    assert other.status_code == 404
    bad = await get(f"/v1/videos/{vid}/content?variant=nope", headers=headers)
    assert bad.status_code == 422


async def test_a_request_can_tighten_validation(harness: Harness) -> None:
    bad = await harness.client.post(
        "/v1/videos",
        json={"prompt": "x", "size": "640x360", "seconds": 1, "validation": {"nope": 1}},
        headers=harness.headers(),
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_validation"
    assert "nope" in bad.json()["error"]["message"]
    # A floor no clip of this size can reach: every regeneration fails quality.
    strict = await harness.create(model="instant/test", validation={"min_size_bytes": 50_000_000})
    vid = str(strict["id"])
    assert await harness.run_until(vid) == "failed"
    job = await harness.runtime.videos.get(None, vid)
    assert job.error_code == "validation_failed"
    assert "size" in (job.error_message or "")
    async with harness.runtime.db.read() as conn:
        tries = await step_q.attempts_of_job(conn, vid)
    assert [a.error_class for a in tries] == ["quality"] * 4  # 1 + 3 regenerations


@pytest.fixture
async def simulated(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Harness]:
    config = {
        "seed": 1,
        "latency_median_s": 0.2,
        "latency_min_s": 0.05,
        "latency_max_s": 0.5,
        "corrupt_rate": 1.0,
    }
    settings = make_settings(
        sqlite_url,
        simulated_config=json.dumps(config),
        idle_poll_s=0.1,
        retry_policies={"*": {"quality_regenerations": 1, "resubmit_delay_s": 0.05}},
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    now = runtime.clock.now()
    async with runtime.db.write() as conn:
        t = await tenant_q.create_tenant(conn, "acme", now)
        _, key = await tenant_q.create_api_key(conn, t.id, scope="user", name=None, now=now)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://t"
    ) as client:
        yield Harness(runtime, client, key, key, t.id, t.id)
    await runtime.close()


async def test_corrupt_outputs_are_never_delivered(simulated: Harness) -> None:
    video = await simulated.create(model="simulated/sim-1")
    vid = str(video["id"])
    assert await simulated.run_until(vid) == "failed"
    job = await simulated.runtime.videos.get(None, vid)
    assert job.error_code == "unplayable"
    content = await simulated.client.get(f"/v1/videos/{vid}/content", headers=simulated.headers())
    assert content.status_code == 409
    async with simulated.runtime.db.read() as conn:
        tries = await step_q.attempts_of_job(conn, vid)
    assert [(a.error_class, a.error_code) for a in tries] == [("quality", "unplayable")] * 2


async def test_the_content_safety_hook_sees_every_output(harness: Harness) -> None:
    from tests.integration import safety_hook

    safety_hook.SEEN.clear()
    harness.runtime.settings.content_safety_hook = "tests.integration.safety_hook:check"
    harness.runtime.settings.retry_policies = {  # type: ignore[assignment]
        "*": RetryPolicySetting(quality_regenerations=1, resubmit_delay_s=0.05)
    }
    fine = str((await harness.create(model="instant/test", prompt="a calm lake"))["id"])
    bad = str((await harness.create(model="instant/test", prompt="something unsafe"))["id"])
    assert await harness.run_until(fine) == "completed"
    assert await harness.run_until(bad) == "failed"
    job = await harness.runtime.videos.get(None, bad)
    assert job.error_code == "content_safety"
    assert "unsafe imagery" in (job.error_message or "")
    assert len(safety_hook.SEEN) == 3  # one pass, then the refused one twice
