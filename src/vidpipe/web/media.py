"""Signed media links: how ``<video>``, ``<img>`` and download links reach content.

A browser cannot add an ``Authorization`` header to a media element's requests, and
reading a whole video through ``fetch()`` into memory would lose streaming and Range.
So the job page's JSON (read with the key) carries links signed for one video and
variant that expire after ``VIDPIPE_SIGNED_URL_TTL_S``; this route checks the signature
(HMAC-SHA256 over method, path, variant and expiry) and serves the stored file with
Range and ETag like ``/v1/videos/{id}/content``.

The signing key is derived from ``VIDPIPE_SIGNING_SECRET`` when it is set, so every
API process accepts every other's links; without it each process draws its own key,
which is right for one ``vidpipe serve`` but means links made by one API process fail
on another (set the secret when running several).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from vidpipe.api.content import blob_response
from vidpipe.blobs.signing import sign, verify
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.errors import Forbidden, NotFound
from vidpipe.store.records import Asset, Job
from vidpipe.store.schema import assets

router = APIRouter(prefix="/ui/media")

# Variant → stored asset name (the names ``/v1/videos/{id}/content`` serves).
VARIANTS = {
    "video": "video.mp4",
    "thumbnail": "thumbnail.jpg",
    "poster": "poster.jpg",
    "manifest": "manifest.json",
}
_KEY_LABEL = b"vidpipe.web.media-links.v1"


def _key(request: Request) -> bytes:
    state = request.app.state
    key: bytes | None = getattr(state, "web_media_key", None)
    if key is None:
        runtime: Runtime = state.runtime
        secret = runtime.settings.signing_secret
        key = (
            hmac.new(secret.get_secret_value().encode(), _KEY_LABEL, hashlib.sha256).digest()
            if secret is not None
            else secrets.token_bytes(32)
        )
        state.web_media_key = key
    return key


def _path(video_id: str, variant: str) -> str:
    return f"/ui/media/{video_id}/{variant}"


def _awaiting_review(job: Job) -> bool:
    """Its work is done and stored, but a person has to approve it before it completes."""
    return job.status == JobStatus.IN_PROGRESS.value and job.review_state == "pending"


async def links(request: Request, job: Job) -> dict[str, str]:
    """Signed links to the stored files of a completed ``job``, or of one waiting for
    review (the reviewer has to watch it); none otherwise."""
    if job.status != JobStatus.COMPLETED.value and not _awaiting_review(job):
        return {}
    runtime: Runtime = request.app.state.runtime
    stored = set(await runtime.videos.asset_names(job.id))
    expires_at = int(runtime.clock.now()) + runtime.settings.signed_url_ttl_s
    key = _key(request)
    return {
        variant: sign(_path(job.id, variant), expires_at, key)
        for variant, name in VARIANTS.items()
        if name in stored
    }


@router.get("/{video_id}/{variant}")
async def media(video_id: str, variant: str, request: Request) -> Response:
    """A stored file of a video, for a link from :func:`links` that has not expired."""
    runtime: Runtime = request.app.state.runtime
    if variant not in VARIANTS or not verify(
        _path(video_id, variant), request.url.query, runtime.clock.now(), _key(request)
    ):
        raise Forbidden(
            "this media link is invalid or has expired; reload the page for a new one",
            code="invalid_media_link",
        )
    # The signature names the video, so its owner is whoever the job belongs to.
    job = await runtime.videos.get(None, video_id)
    if _awaiting_review(job):
        asset = await _stored_asset(runtime, video_id, VARIANTS[variant])
    else:
        asset = await runtime.videos.video_asset(job.tenant_id, video_id, VARIANTS[variant])
    return await blob_response(
        request,
        runtime.blobs,
        asset.key,
        content_type=asset.content_type,
        etag=asset.sha256,
        filename=f"{video_id}.mp4" if variant == "video" else f"{video_id}-{asset.name}",
    )


async def _stored_asset(runtime: Runtime, video_id: str, name: str) -> Asset:
    """A stored file of a video still waiting for review (``video_asset`` serves only
    completed videos)."""
    async with runtime.db.read() as conn:
        row = (
            (
                await conn.execute(
                    select(assets).where(
                        assets.c.job_id == video_id,
                        assets.c.name == name,
                        assets.c.deleted_at.is_(None),
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"video {video_id} has no stored {name}", code="content_missing")
    return Asset.from_row(row)
