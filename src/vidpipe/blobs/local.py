"""Blobs in a local directory (the embedded default)."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from stat import S_ISREG

from vidpipe.blobs.base import BlobNotFound, BlobStat, byte_range
from vidpipe.blobs.signing import UrlSigner
from vidpipe.errors import VidpipeError

READ_CHUNK_BYTES = 256 * 1024


class LocalBlobStore:
    """Blobs as files under ``root``.

    With a ``signer``, ``signed_url`` gives expiring URLs of the API route that serves
    blobs (``UrlSigner.path_prefix``); that route checks them with ``signer.verify``.
    """

    def __init__(
        self,
        root: Path,
        *,
        signer: UrlSigner | None = None,
        chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        self.root = root
        self.signer = signer
        self.chunk_bytes = chunk_bytes
        # Resolved once: resolving walks every component of the path (a syscall each).
        self._resolved_root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self._resolved_root):
            raise VidpipeError(f"storage key escapes the store: {key!r}", code="invalid_key")
        return path

    async def put_file(self, key: str, source: Path, content_type: str) -> None:
        await asyncio.to_thread(self._put_file, key, source)

    def _put_file(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            # The source is complete: one rename puts it in place atomically.
            os.replace(source, dest)
            return
        except OSError:  # another filesystem: copy beside the blob, then rename
            pass
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        source.unlink(missing_ok=True)
        # Readers only ever see a complete file under the final name.
        os.replace(tmp, dest)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put_bytes, key, data)

    def _put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            tmp.write_bytes(data)
            # Readers only ever see a complete file under the final name.
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def stat(self, key: str) -> BlobStat:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no blob {key!r}") from exc
        if not S_ISREG(st.st_mode):
            raise BlobNotFound(f"no blob {key!r}")
        return BlobStat(
            size=st.st_size,
            # Changes whenever the file is replaced (put_file renames a new file in).
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
            content_type=mimetypes.guess_type(path.name)[0],
        )

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BlobNotFound(f"no blob {key!r}") from exc
        try:
            size = os.fstat(handle.fileno()).st_size
            first, stop = byte_range(size, start, end)
            await asyncio.to_thread(handle.seek, first)
            remaining = stop - first
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(self.chunk_bytes, remaining))
                if not chunk:  # truncated under us; the caller sees a short body
                    return
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def signed_url(self, key: str, expires_s: int, *, filename: str | None = None) -> str | None:
        self._path(key)  # refuse a key that escapes the store, signer or not
        if self.signer is None:
            return None
        return self.signer.url_for(key, expires_s, filename=filename)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def describe(self) -> str:
        return f"local directory {self.root}"
