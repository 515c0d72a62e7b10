"""Serving stored blobs over HTTP: Range, ETag, caching, from any backend."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from vidpipe.blobs.base import BlobStore, byte_range, content_disposition

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str | None, size: int) -> tuple[int, int | None] | None:
    """(start, end-inclusive) of a single-range header; None to send everything.

    Multi-range and malformed headers are ignored (the whole body is a valid answer).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        return max(size - int(last), 0), None
    return int(first), int(last) if last else None


async def blob_response(
    request: Request,
    blobs: BlobStore,
    key: str,
    *,
    content_type: str,
    etag: str,
    filename: str,
    cache_control: str = "private, max-age=3600",
) -> Response:
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": cache_control,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(filename, "inline"),
    }
    if request.headers.get("if-none-match", "").strip() == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    path: Path | None = blobs.local_path(key)
    if path is not None:
        # Starlette serves files with Range support and sendfile.
        return FileResponse(path, media_type=content_type, headers=headers)
    stat = await blobs.stat(key)
    wanted = _parse_range(request.headers.get("range"), stat.size)
    if wanted is None:
        headers["Content-Length"] = str(stat.size)
        return StreamingResponse(blobs.open_range(key), media_type=content_type, headers=headers)
    first, stop = byte_range(stat.size, wanted[0], wanted[1])
    headers["Content-Range"] = f"bytes {first}-{stop - 1}/{stat.size}"
    headers["Content-Length"] = str(stop - first)
    return StreamingResponse(
        blobs.open_range(key, first, stop - 1),
        status_code=206,
        media_type=content_type,
        headers=headers,
    )
