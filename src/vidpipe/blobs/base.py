"""The storage interface every backend implements, the key scheme and its errors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

from vidpipe.errors import NotFound, VidpipeError

_SAFE_PART = re.compile(r"^[A-Za-z0-9._-]+$")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def job_key(tenant_id: str, job_id: str, name: str) -> str:
    """``tenants/{tenant}/jobs/{job}/{name}``: one prefix per tenant and job."""
    for part in (tenant_id, job_id, name):
        if not _SAFE_PART.match(part) or part in (".", ".."):
            raise VidpipeError(f"unsafe storage key part {part!r}", code="invalid_key")
    return f"tenants/{tenant_id}/jobs/{job_id}/{name}"


def check_key(key: str) -> str:
    """``key`` if it is a relative path of safe parts (what ``job_key`` builds)."""
    parts = key.split("/")
    if not key or any(not _SAFE_PART.match(p) or p in (".", "..") for p in parts):
        raise VidpipeError(f"unsafe storage key {key!r}", code="invalid_key")
    return key


class BlobNotFound(NotFound):
    code = "blob_not_found"


class RangeNotSatisfiable(VidpipeError):
    code = "range_not_satisfiable"
    http_status = 416


class StorageError(VidpipeError):
    """The storage backend failed or could not be reached (after its own retries)."""

    code = "storage_unavailable"
    http_status = 503


@dataclass(frozen=True)
class BlobStat:
    size: int
    # Opaque, without quotes: S3's ETag, or mtime-size for local files.
    etag: str
    content_type: str | None = None


def byte_range(size: int, start: int, end: int | None) -> tuple[int, int]:
    """Clamp a request for bytes ``start..end`` (inclusive; None: to the last byte)
    of a ``size``-byte blob to ``(first, last_exclusive)``.

    Raises RangeNotSatisfiable when no byte of the blob is in it. Reading all of an
    empty blob (``start=0, end=None``) is allowed and yields nothing.
    """
    if start < 0 or (end is not None and end < start):
        raise RangeNotSatisfiable(f"invalid byte range {start}-{end}")
    if start >= size and not (start == 0 and end is None):
        raise RangeNotSatisfiable(f"byte range starts at {start}, blob has {size} bytes")
    stop = size if end is None else min(end + 1, size)
    return start, stop


def content_disposition(
    filename: str, disposition: Literal["inline", "attachment"] = "attachment"
) -> str:
    """A Content-Disposition header value with an ASCII fallback name (RFC 6266)."""
    fallback = _UNSAFE_FILENAME_CHARS.sub("_", filename).strip("._") or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class BlobStore(Protocol):
    async def put_file(self, key: str, source: Path, content_type: str) -> None:
        """Store ``source`` under ``key``; the source file may be consumed."""
        ...

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` (a small document made in memory: no file of
        it is written first and read back)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def stat(self, key: str) -> BlobStat:
        """Size and ETag of ``key``; raises BlobNotFound."""
        ...

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``start..end`` (inclusive, as in an HTTP Range; None: to the end).

        Errors (BlobNotFound, RangeNotSatisfiable, StorageError) surface on the first
        iteration: call ``stat`` first to answer 404/416 before sending headers.
        """
        ...

    def signed_url(self, key: str, expires_s: int, *, filename: str | None = None) -> str | None:
        """A URL that serves ``key`` without other credentials until ``expires_s`` from
        now, or None when the backend cannot make one (local store without a secret)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the backend is local, else None."""
        ...

    def describe(self) -> str:
        """Where blobs go, for ``vidpipe doctor``."""
        ...
