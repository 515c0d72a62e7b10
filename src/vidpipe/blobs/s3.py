"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph, …) through boto3.

boto3 is synchronous and its clients are thread-safe, so each call runs in a worker
thread (``asyncio.to_thread``). Uploads use boto3's managed transfer: one PUT below
``multipart_threshold_bytes``, a parallel multipart upload above it. Every request is
retried by botocore ("standard" mode: throttling, 5xx, connection errors) before an
error reaches vidpipe, where it becomes one StorageError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from vidpipe.blobs.base import (
    BlobNotFound,
    BlobStat,
    RangeNotSatisfiable,
    StorageError,
    check_key,
    content_disposition,
)
from vidpipe.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")

MIB = 1024 * 1024
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3BlobStore:
    """Blobs under ``{prefix}/{key}`` in ``bucket``.

    ``access_key``/``secret_key`` may both be omitted to use boto3's default credential
    chain (environment, instance role). ``cdn_base_url``, when the bucket is published
    through a CDN, gives ``public_url``.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        cdn_base_url: str | None = None,
        multipart_threshold_bytes: int = 64 * MIB,
        multipart_chunk_bytes: int = 16 * MIB,
        max_concurrency: int = 4,
        max_attempts: int = 5,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        read_chunk_bytes: int = 256 * 1024,
    ) -> None:
        if not bucket:
            raise ConfigError("an S3 bucket name is required (VIDPIPE_S3_BUCKET)")
        if bool(access_key) != bool(secret_key):
            raise ConfigError(
                "give both VIDPIPE_S3_ACCESS_KEY_ID and VIDPIPE_S3_SECRET_ACCESS_KEY, or neither"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = prefix.strip("/")
        self.cdn_base_url = cdn_base_url.rstrip("/") if cdn_base_url else None
        self.read_chunk_bytes = read_chunk_bytes
        config = Config(
            region_name=region,
            signature_version="s3v4",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=max(10, max_concurrency * 2),
            # Custom endpoints rarely have wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Newer botocore adds CRC checksums to every upload by default, which several
            # S3-compatible servers reject; send them only where the API requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: boto3's default session is shared global state.
        session = boto3.session.Session()
        self._client: S3Client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=multipart_chunk_bytes,
            max_concurrency=max_concurrency,
            use_threads=True,
        )

    def object_key(self, key: str) -> str:
        """The bucket key of blob ``key`` (with the prefix)."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, key: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one boto3 call in a thread; translate its errors once, here."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            raise _translate(exc, key) from exc
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise StorageError(f"S3 request for {key!r} failed: {exc}") from exc

    async def put_file(self, key: str, source: Path, content_type: str) -> None:
        await self._call(
            key,
            self._client.upload_file,
            str(source),
            self.bucket,
            self.object_key(key),
            ExtraArgs={"ContentType": content_type},
            Config=self._transfer,
        )
        # Same contract as the local store: the source is consumed.
        await asyncio.to_thread(source.unlink, missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            key,
            self._client.put_object,
            Bucket=self.bucket,
            Key=self.object_key(key),
            Body=data,
            ContentType=content_type,
        )

    async def delete(self, key: str) -> None:
        # DeleteObject succeeds whether or not the key exists.
        await self._call(
            key, self._client.delete_object, Bucket=self.bucket, Key=self.object_key(key)
        )

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except BlobNotFound:
            return False
        return True

    async def stat(self, key: str) -> BlobStat:
        head = await self._call(
            key, self._client.head_object, Bucket=self.bucket, Key=self.object_key(key)
        )
        return BlobStat(
            size=head["ContentLength"],
            etag=head.get("ETag", "").strip('"'),
            content_type=head.get("ContentType"),
        )

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start):
            raise RangeNotSatisfiable(f"invalid byte range {start}-{end}")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if start or end is not None:
            # Without a Range header an empty object reads as empty, not as a 416.
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = await self._call(key, self._client.get_object, **params)
        body = response["Body"]
        try:
            while True:
                chunk = await self._call(key, body.read, self.read_chunk_bytes)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def presigned_url(
        self,
        key: str,
        expires_s: int,
        filename: str | None = None,
        *,
        disposition: Literal["inline", "attachment"] = "attachment",
    ) -> str:
        """A SigV4 presigned GET of ``key``, valid ``expires_s`` (1 s … 7 days).

        With ``filename``, S3 answers with that Content-Disposition. Signing is local
        computation: no request is made.
        """
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be within 1..{MAX_PRESIGN_S}")
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename, disposition)
        try:
            return self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_s, HttpMethod="GET"
            )
        except botocore.exceptions.BotoCoreError as exc:  # e.g. no credentials found
            raise StorageError(f"cannot presign S3 URL for {key!r}: {exc}") from exc

    def signed_url(self, key: str, expires_s: int, *, filename: str | None = None) -> str | None:
        return self.presigned_url(key, expires_s, filename)

    def public_url(self, key: str) -> str | None:
        """``{cdn_base_url}/{object key}`` when the bucket is published through a CDN."""
        if self.cdn_base_url is None:
            return None
        return f"{self.cdn_base_url}/{self.object_key(key)}"

    def local_path(self, key: str) -> Path | None:
        return None

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region}"
        prefix = f"/{self.prefix}" if self.prefix else ""
        return f"S3 bucket s3://{self.bucket}{prefix} at {where}"

    def close(self) -> None:
        """Release the client's connection pool."""
        self._client.close()


def _translate(exc: botocore.exceptions.ClientError, key: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _NOT_FOUND_CODES or status == 404:
        return BlobNotFound(f"no blob {key!r}")
    if code == "InvalidRange" or status == 416:
        return RangeNotSatisfiable(f"byte range not satisfiable for {key!r}")
    return StorageError(f"S3 refused the request for {key!r}: {code or status}: {exc}")
