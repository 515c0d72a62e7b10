"""``GET /v1/blobs/{key}``: locally stored files behind expiring signed URLs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vidpipe.api.content import blob_response
from vidpipe.blobs.local import LocalBlobStore
from vidpipe.core.runtime import Runtime
from vidpipe.errors import NotFound, Unauthorized

router = APIRouter(tags=["content"])


@router.get("/v1/blobs/{key:path}", include_in_schema=False)
async def signed_blob(key: str, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    blobs = runtime.blobs
    if not isinstance(blobs, LocalBlobStore) or blobs.signer is None:
        raise NotFound("no signed local storage here", code="not_found")
    if not blobs.signer.verify(request.url.path, request.url.query):
        raise Unauthorized("the URL's signature is invalid or expired", code="invalid_signature")
    stat = await blobs.stat(key)
    filename = request.query_params.get("filename") or key.rsplit("/", 1)[-1]
    return await blob_response(
        request,
        blobs,
        key,
        content_type=stat.content_type or "application/octet-stream",
        etag=stat.etag,
        filename=filename,
        cache_control="private, max-age=300",
    )
