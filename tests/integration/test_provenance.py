"""Provenance with real ffmpeg, real c2pa and the whole pipeline: the visible
watermark, the C2PA manifest signed into the delivered MP4, and what a
misconfiguration does."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.c2pa_chain import Chain, make_chain
from tests.integration.conftest import Harness, open_harness
from vidpipe import __version__
from vidpipe.config import Settings
from vidpipe.core.provenance import Provenance
from vidpipe.errors import ConfigError, ProvenanceError
from vidpipe.media import c2pa_sign
from vidpipe.media.c2pa_sign import (
    TRAINED_ALGORITHMIC_MEDIA,
    VIDPIPE_ASSERTION,
    read_manifest_store,
)
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.probe import probe
from vidpipe.media.watermark import WatermarkSpec, apply_watermark
from vidpipe.store import steps as step_q
from vidpipe.store.schema import assets

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PROMPT = "a red kite over green hills"


# -- helpers ------------------------------------------------------------------------


def _frames(path: Path) -> list[np.ndarray]:
    """Every frame decoded to RGB: the file plays from start to end."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def _box_mask(shape: tuple[int, ...], box: tuple[int, int, int, int], pad: int) -> np.ndarray:
    """True inside ``box`` (x, y, w, h) grown by ``pad`` pixels."""
    mask = np.zeros(shape[:2], dtype=bool)
    x, y, w, h = box
    mask[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad] = True
    return mask


def _diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[mask].mean())


def _active(store: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = store["manifests"][store["active_manifest"]]
    return manifest


def _assertion(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    found = [a["data"] for a in manifest["assertions"] if a["label"] == label]
    assert len(found) == 1, [a["label"] for a in manifest["assertions"]]
    data: dict[str, Any] = found[0]
    return data


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """Two seconds of a busy test pattern with a tone: 640x360, 25 fps, H.264 + AAC."""
    out = tmp_path / "clip.mp4"
    args = [
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
    ]  # fmt: skip
    run_ffmpeg(args, ffmpeg=find_ffmpeg(), timeout_s=60)
    return out


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return make_chain(tmp_path / "c2pa")


# -- the media layer ------------------------------------------------------------------


def test_the_watermark_changes_its_box_and_nothing_else(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "marked.mp4"
    spec = WatermarkSpec(text="Made with AI", position="bottom-right", opacity=0.8, size=0.08)
    placed = apply_watermark(
        clip, out, spec, width=640, height=360, audio=True,
        ffmpeg=find_ffmpeg(), work_dir=tmp_path / "work", timeout_s=60,
    )  # fmt: skip
    before, after = probe(clip), probe(out)
    assert after.video is not None
    assert before.video is not None
    assert (after.video.width, after.video.height) == (640, 360)
    assert after.video.codec == "h264"
    assert abs(after.duration_s - before.duration_s) < 0.05
    # The sound is copied, not re-encoded: the very same packets.
    assert _audio_packets(out) == _audio_packets(clip)
    original, marked = _frames(clip), _frames(out)
    assert len(marked) == len(original) == 50
    box = (placed.x, placed.y, placed.width, placed.height)
    inside = _box_mask(original[0].shape, box, pad=0)
    # The 4:2:0 re-encode smears a few pixels around the mark's edges.
    outside = ~_box_mask(original[0].shape, box, pad=8)
    for a, b in zip(original[::10], marked[::10], strict=True):
        assert _diff(a, b, inside) > 25
        assert _diff(a, b, outside) < 3


def test_a_signed_file_reads_back_and_still_plays(clip: Path, tmp_path: Path, chain: Chain) -> None:
    credentials = c2pa_sign.C2paCredentials.load(chain.cert_path, chain.key_path)
    signed = tmp_path / "signed.mp4"
    c2pa_sign.sign_video(
        clip, signed, credentials, title="video.mp4", generator_version="9.9.9",
        software_agent="instant/test", provenance={"job_id": "video_1"},
    )  # fmt: skip
    assert read_manifest_store(clip) is None
    store = read_manifest_store(signed, trust_anchors=chain.ca_pem)
    assert store is not None
    assert store["validation_state"] == "Trusted"
    # Untrusted is all a reader without our CA can say; the signature still holds.
    assert read_manifest_store(signed)["validation_state"] == "Valid"  # type: ignore[index]
    manifest = _active(store)
    assert manifest["claim_generator_info"][0]["name"] == "vidpipe"
    assert manifest["claim_generator_info"][0]["version"] == "9.9.9"
    assert _assertion(manifest, VIDPIPE_ASSERTION) == {"job_id": "video_1"}
    assert len(_frames(signed)) == len(_frames(clip))
    assert _audio_packets(signed) == _audio_packets(clip)


# -- the pipeline ---------------------------------------------------------------------


def _harness(
    sqlite_url: str, make_settings: Callable[..., Settings], **settings: object
) -> contextlib.AbstractAsyncContextManager[Harness]:
    return open_harness(sqlite_url, make_settings, idle_poll_s=0.1, **settings)


async def _deliver(h: Harness, tmp_path: Path) -> tuple[str, Path, dict[str, Any]]:
    """One instant video made and downloaded: (id, the file, its manifest.json)."""
    vid = str((await h.create(model="instant/test", prompt=PROMPT, seconds=2))["id"])
    assert await h.run_until(vid) == "completed"
    content = await h.client.get(f"/v1/videos/{vid}/content", headers=h.headers())
    assert content.status_code == 200
    path = tmp_path / f"{vid}.mp4"
    path.write_bytes(content.content)
    manifest = await h.client.get(f"/v1/videos/{vid}/content?variant=manifest", headers=h.headers())
    document: dict[str, Any] = manifest.json()
    return vid, path, document


async def _stored_video(h: Harness, vid: str) -> tuple[str, int]:
    async with h.runtime.db.read() as conn:
        row = (
            await conn.execute(
                select(assets.c.sha256, assets.c.bytes).where(
                    assets.c.job_id == vid,
                    assets.c.name == "video.mp4",
                    assets.c.deleted_at.is_(None),
                )
            )
        ).one()
    return str(row.sha256), int(row.bytes)


async def _poster(h: Harness, vid: str) -> np.ndarray:
    response = await h.client.get(f"/v1/videos/{vid}/content?variant=poster", headers=h.headers())
    assert response.status_code == 200
    path = Path(h.runtime.settings.home) / f"{vid}-poster.jpg"
    path.write_bytes(response.content)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


async def test_a_signed_manifest_travels_with_the_delivered_video(
    sqlite_url: str, make_settings: Callable[..., Settings], chain: Chain, tmp_path: Path
) -> None:
    async with _harness(
        sqlite_url, make_settings, c2pa_cert_path=chain.cert_path, c2pa_key_path=chain.key_path
    ) as h:
        vid, video, document = await _deliver(h, tmp_path)
        stored_sha, stored_bytes = await _stored_video(h, vid)
    data = video.read_bytes()
    # What is stored, recorded and served is the signed file.
    assert stored_sha == document["output"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored_bytes == document["output"]["bytes"] == len(data)
    assert document["provider_output"]["sha256"] != stored_sha
    assert document["c2pa"] == {
        "embedded": True,
        "claim_generator": f"vidpipe/{__version__}",
        "alg": "es256",
        "timestamped": False,
        "assertion": VIDPIPE_ASSERTION,
    }
    assert document["watermark"] is None
    store = read_manifest_store(video, trust_anchors=chain.ca_pem)
    assert store is not None
    assert store["validation_state"] == "Trusted", store.get("validation_status")
    manifest = _active(store)
    assert manifest["claim_generator_info"][0] | {"org.contentauth.c2pa_rs": None} == {
        "name": "vidpipe",
        "version": __version__,
        "org.contentauth.c2pa_rs": None,
    }
    actions = _assertion(manifest, "c2pa.actions.v2")["actions"]
    assert actions == [
        {
            "action": "c2pa.created",
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": {"name": "instant/test"},
        }
    ]
    ours = _assertion(manifest, VIDPIPE_ASSERTION)
    assert ours["job_id"] == vid
    assert (ours["provider"], ours["model"]) == ("instant", "test")
    assert ours["provider_job_id"] == document["provider_job_id"]
    assert ours["attempts"] == 1
    assert ours["vidpipe_version"] == __version__
    assert ours["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert ours["provider_output_sha256"] == document["provider_output"]["sha256"]
    assert ours["watermarked"] is False
    # The prompt itself does not travel with the file, nor does the tenant.
    assert PROMPT not in json.dumps(store)
    assert document["tenant_id"] not in json.dumps(store)
    # Still a video that probes and plays to the end.
    info = probe(video)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert abs(info.duration_s - 2.0) < 0.1
    assert len(_frames(video)) == info.video.frames
    assert document["output"]["media"]["size_bytes"] == len(data)


async def test_the_watermark_is_in_the_video_and_its_stills_and_is_signed(
    sqlite_url: str, make_settings: Callable[..., Settings], chain: Chain, tmp_path: Path
) -> None:
    async with _harness(
        sqlite_url, make_settings, c2pa_cert_path=chain.cert_path, c2pa_key_path=chain.key_path
    ) as h:
        plain, plain_video, _ = await _deliver(h, tmp_path)
        plain_poster = await _poster(h, plain)
        # Settings are read when a worker starts; run_until starts a new one.
        h.runtime.settings.watermark_text = "Made with AI"
        h.runtime.settings.watermark_position = "top-left"
        h.runtime.settings.watermark_size = 0.1
        h.runtime.settings.watermark_opacity = 1.0
        marked, marked_video, document = await _deliver(h, tmp_path)
        marked_poster = await _poster(h, marked)
        stored_sha, _ = await _stored_video(h, marked)
    assert document["watermark"] == {"text": "Made with AI", "image": None, "position": "top-left"}
    assert stored_sha == hashlib.sha256(marked_video.read_bytes()).hexdigest()
    store = read_manifest_store(marked_video, trust_anchors=chain.ca_pem)
    assert store is not None
    assert store["validation_state"] == "Trusted"
    assert _assertion(_active(store), VIDPIPE_ASSERTION)["watermarked"] is True
    # Top-left, 10 % of the 360 px side high, 3 % margins: well inside 300x60 px.
    box = (0, 0, 300, 60)
    pairs = [(_frames(plain_video)[30], _frames(marked_video)[30]), (plain_poster, marked_poster)]
    for a, b in pairs:
        inside = _box_mask(a.shape, (12, 12, 100, 30), pad=0)
        outside = ~_box_mask(a.shape, box, pad=0)
        assert _diff(a, b, inside) > 25
        assert _diff(a, b, outside) < 4
    before, after = probe(plain_video), probe(marked_video)
    assert after.video is not None
    assert before.video is not None
    assert (after.video.width, after.video.height) == (before.video.width, before.video.height)
    assert abs(after.duration_s - before.duration_s) < 0.05
    assert (after.audio is None) == (before.audio is None)


async def test_a_misconfigured_key_stops_a_worker_at_start(
    sqlite_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    chain = make_chain(tmp_path / "c2pa", wrong_key=True)
    async with _harness(
        sqlite_url, make_settings, c2pa_cert_path=chain.cert_path, c2pa_key_path=chain.key_path
    ) as h:
        with pytest.raises(ConfigError) as refused:
            h.runtime.new_worker()
    assert refused.value.code == "c2pa_config"
    assert "does not belong to the signing certificate" in refused.value.message


@pytest.fixture
def refusing_tsa() -> Iterator[tuple[str, list[str]]]:
    """A time-stamp authority on loopback that answers every request with 503."""
    calls: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/tsa", calls
    finally:
        server.shutdown()
        server.server_close()


async def test_a_signing_failure_fails_the_job_with_its_code(
    sqlite_url: str,
    make_settings: Callable[..., Settings],
    chain: Chain,
    tmp_path: Path,
    refusing_tsa: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, calls = refusing_tsa
    monkeypatch.setattr(c2pa_sign, "_TSA_RETRY_DELAYS_S", (0.0, 0.0))
    async with _harness(
        sqlite_url,
        make_settings,
        c2pa_cert_path=chain.cert_path,
        c2pa_key_path=chain.key_path,
        c2pa_tsa_url=url,
    ) as h:
        vid = str((await h.create(model="instant/test"))["id"])
        assert await h.run_until(vid) == "failed"
        job = await h.runtime.videos.get(None, vid)
        async with h.runtime.db.read() as conn:
            tries = await step_q.attempts_of_job(conn, vid)
        content = await h.client.get(f"/v1/videos/{vid}/content", headers=h.headers())
    assert job.error_code == "c2pa_signing_failed"
    assert "C2PA signing failed" in (job.error_message or "")
    assert len(calls) == 3  # the time-stamp authority was tried three times
    # Failed once, for good: no regeneration, no fallback would sign any better.
    assert [(a.error_class, a.error_code) for a in tries] == [("permanent", "c2pa_signing_failed")]
    assert content.status_code == 409


async def test_a_watermark_that_breaks_after_start_is_a_provenance_error(
    clip: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (64, 32), (255, 255, 255, 200)).save(logo)
    provenance = Provenance(make_settings(watermark_image=logo))  # checked: it is fine
    logo.write_bytes(b"replaced by something that is not an image")
    with pytest.raises(ProvenanceError) as failed:
        await provenance.watermark(clip, tmp_path / "work")
    assert failed.value.code == "watermark_failed"
    assert "unreadable" in failed.value.message
