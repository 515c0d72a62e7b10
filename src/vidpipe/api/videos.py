"""``/v1/videos``: create, read, list, cancel, delete, and download content."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from vidpipe.api.auth import Principal, principal
from vidpipe.api.body import read_object
from vidpipe.api.content import blob_response
from vidpipe.api.schemas import ContentUrl, VideoDeleted, VideoList, VideoObject
from vidpipe.core.requests import CreateVideo, parse_create_video
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.core.views import video_object
from vidpipe.errors import Conflict, InvalidRequest, NotFound

router = APIRouter(prefix="/v1/videos", tags=["videos"])

Caller = Annotated[Principal, Depends(principal)]
POLL_AFTER_MS = "1000"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


_CREATE_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Same key and body: the same job again (kept 24 h or more).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {
            "name": "dry_run",
            "in": "query",
            "required": False,
            "description": "Only price and check the request (200), create nothing.",
            "schema": {"type": "boolean", "default": False},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": CreateVideo.model_json_schema()},
            "multipart/form-data": {"schema": CreateVideo.model_json_schema()},
        },
    },
}


@router.post(
    "",
    status_code=202,
    response_model=VideoObject,
    openapi_extra=_CREATE_DOC,
    responses={
        400: {"description": "bad Idempotency-Key"},
        409: {"description": "conflict"},
        413: {"description": "body too large"},
        415: {"description": "unsupported content type"},
        422: {"description": "invalid request"},
    },
)
async def create_video(request: Request, caller: Caller) -> JSONResponse:
    """Queue a video; returns at once with the job (202). Accepts JSON or multipart."""
    runtime = _runtime(request)
    # Read by hand, not as declared parameters: FastAPI's parameter solving was ~5 % of
    # the CPU of this, the hottest route (bench/README.md). Documented in _CREATE_DOC.
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 255):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 characters",
            code="invalid_idempotency_key",
            param="Idempotency-Key",
            http_status=400,
        )
    dry_run = _query_flag(request, "dry_run")
    data = await read_object(request, runtime.settings.max_body_bytes)
    if dry_run:
        estimate = await runtime.videos.dry_run(caller.tenant_id, parse_create_video(data))
        return JSONResponse(estimate, status_code=200)
    created = await runtime.videos.create(
        caller.tenant_id, parse_create_video(data), idempotency_key
    )
    headers = {"openai-poll-after-ms": POLL_AFTER_MS, "Location": f"/v1/videos/{created.job.id}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    money = created.money
    if money is None:
        money = (await runtime.videos.costs([created.job.id])).get(created.job.id, (0, 0))
    # The dict VideoObject validates (core.views.video_object): already JSON-shaped.
    return JSONResponse(video_object(created.job, money), status_code=202, headers=headers)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequest(
        f"{name}: must be true or false, not {raw[:40]!r}", code=f"invalid_{name}", param=name
    )


@router.get("", response_model=VideoList)
async def list_videos(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
    order: Literal["asc", "desc"] = "desc",
    status: JobStatus | None = None,
    review_state: Literal["pending", "approved", "rejected", "required"] | None = None,
) -> VideoList:
    """The caller's videos, newest first by default; page on with ``after=last_id``."""
    jobs, has_more = await _runtime(request).videos.list(
        caller.tenant_id,
        limit=limit,
        after=after,
        newest_first=order == "desc",
        status=status.value if status else None,
        review_state=review_state,
    )
    money = await _runtime(request).videos.costs([j.id for j in jobs])
    data = [VideoObject.from_job(j, money.get(j.id, (0, 0))) for j in jobs]
    return VideoList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )


@router.get("/{video_id}", response_model=VideoObject)
async def get_video(
    video_id: str, request: Request, caller: Caller, response: Response
) -> VideoObject:
    videos = _runtime(request).videos
    job = await videos.get(caller.tenant_id, video_id)
    if not JobStatus(job.status).terminal:
        response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return VideoObject.from_job(job, (await videos.costs([job.id])).get(job.id, (0, 0)))


@router.post("/{video_id}/cancel", response_model=VideoObject)
async def cancel_video(video_id: str, request: Request, caller: Caller) -> VideoObject:
    videos = _runtime(request).videos
    job = await videos.cancel(caller.tenant_id, video_id)
    return VideoObject.from_job(job, (await videos.costs([job.id])).get(job.id, (0, 0)))


class ReviewDecision(BaseModel):
    model_config = {"extra": "forbid"}

    decision: Literal["approve", "reject"]
    reason: str | None = Field(default=None, max_length=2000)
    regenerate: bool = False


@router.post("/{video_id}/review", response_model=VideoObject)
async def review_video(
    video_id: str, body: ReviewDecision, request: Request, caller: Caller
) -> VideoObject:
    """Approve a video held for review (it completes now), or reject it: it fails with
    the reason, or with ``regenerate`` it is made again and comes back for review."""
    videos = _runtime(request).videos
    job = await videos.review(
        caller.tenant_id,
        video_id,
        approve=body.decision == "approve",
        reason=body.reason,
        regenerate=body.regenerate,
    )
    return VideoObject.from_job(job, (await videos.costs([job.id])).get(job.id, (0, 0)))


@router.delete("/{video_id}", response_model=VideoDeleted)
async def delete_video(video_id: str, request: Request, caller: Caller) -> VideoDeleted:
    await _runtime(request).videos.delete(caller.tenant_id, video_id)
    return VideoDeleted(id=video_id, deleted=True)


VARIANTS = {
    "video": "video.mp4",
    "thumbnail": "thumbnail.jpg",
    "poster": "poster.jpg",
    "preview": "preview.",
    "spritesheet": "sprite.jpg",
    "spritesheet_vtt": "sprite.vtt",
    "manifest": "manifest.json",
}
Variant = Literal[
    "video",
    "thumbnail",
    "poster",
    "preview",
    "spritesheet",
    "spritesheet_vtt",
    "manifest",
    "hls",
]


@router.get(
    "/{video_id}/content",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}, "application/json": {}}},
        206: {"description": "partial content"},
        307: {"description": "variant=hls: the master playlist"},
        409: {"description": "not completed yet"},
        410: {"description": "expired"},
    },
)
async def video_content(
    video_id: str,
    request: Request,
    caller: Caller,
    variant: Variant = "video",
) -> Response:
    """The MP4 (or a derivative) from vidpipe's storage; HTTP Range is honoured.

    ``hls`` redirects to the master playlist under ``/v1/videos/{id}/hls/``.
    """
    runtime = _runtime(request)
    if variant == "hls":
        await runtime.videos.video_asset(caller.tenant_id, video_id, "hls__master.m3u8")
        return RedirectResponse(f"/v1/videos/{video_id}/hls/master.m3u8", status_code=307)
    name = VARIANTS[variant]
    if name.endswith("."):  # the preview is WebP or GIF, whichever ffmpeg could make
        await runtime.videos.get(caller.tenant_id, video_id)
        found = [n for n in await runtime.videos.asset_names(video_id) if n.startswith(name)]
        name = found[0] if found else name + "webp"
    asset = await runtime.videos.video_asset(caller.tenant_id, video_id, name)
    return await blob_response(
        request,
        runtime.blobs,
        asset.key,
        content_type=asset.content_type,
        etag=asset.sha256,
        filename=f"{video_id}.mp4" if variant == "video" else f"{video_id}-{name}",
    )


@router.get("/{video_id}/hls/{path:path}")
async def video_hls(video_id: str, path: str, request: Request, caller: Caller) -> Response:
    """HLS playlists and segments of a video packaged on request (``derivatives: ["hls"]``)."""
    runtime = _runtime(request)
    if not path or ".." in path.split("/"):
        raise NotFound("no such HLS file", code="content_missing")
    asset = await runtime.videos.video_asset(
        caller.tenant_id, video_id, "hls__" + path.replace("/", "__")
    )
    return await blob_response(
        request,
        runtime.blobs,
        asset.key,
        content_type=asset.content_type,
        etag=asset.sha256,
        filename=path.rsplit("/", 1)[-1],
    )


@router.get("/{video_id}/url", response_model=ContentUrl)
async def video_content_url(video_id: str, request: Request, caller: Caller) -> ContentUrl:
    """A URL that serves the MP4 without credentials until it expires (S3 presigned,
    or signed by this server for local storage), for players and CDNs."""
    runtime = _runtime(request)
    asset = await runtime.videos.video_asset(caller.tenant_id, video_id)
    ttl = runtime.settings.signed_url_ttl_s
    url = runtime.blobs.signed_url(asset.key, ttl, filename=f"{video_id}.mp4")
    if url is None:
        raise Conflict(
            "signed URLs need VIDPIPE_SIGNING_SECRET with local storage",
            code="signed_urls_disabled",
        )
    return ContentUrl(url=url, expires_at=int(runtime.clock.now()) + ttl)
