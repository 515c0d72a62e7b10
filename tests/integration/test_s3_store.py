"""S3BlobStore against a real S3-compatible server: moto's, on loopback.

The server runs in this process (``ThreadedMotoServer``) but speaks HTTP on
127.0.0.1; the store reaches it through boto3 exactly as it would reach AWS or MinIO.
"""

from __future__ import annotations

import calendar
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from vidpipe.blobs.base import (
    BlobNotFound,
    BlobStore,
    RangeNotSatisfiable,
    StorageError,
    job_key,
)
from vidpipe.blobs.s3 import MAX_PRESIGN_S, S3BlobStore
from vidpipe.errors import ConfigError, VidpipeError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key"
KEY = job_key("tenant_a", "job_1", "video.mp4")


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture(scope="module")
def admin(endpoint: str) -> S3Client:
    """A plain boto3 client, to look at the bucket behind the store's back."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(admin: S3Client, request: pytest.FixtureRequest) -> str:
    name = f"vidpipe-{abs(hash(request.node.nodeid)) % 10**10}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(endpoint: str, bucket: str) -> Iterator[S3BlobStore]:
    s3 = S3BlobStore(
        bucket,
        endpoint_url=endpoint,
        region=REGION,
        prefix="media/",
        cdn_base_url="https://cdn.example.com/",
        read_chunk_bytes=1000,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )
    yield s3
    s3.close()


def source(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def collect(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.open_range(key, start, end)])


def test_satisfies_the_protocol(store: S3BlobStore, bucket: str) -> None:
    blobs: BlobStore = store
    assert blobs.local_path(KEY) is None
    assert blobs.describe() == f"S3 bucket s3://{bucket}/media at {store.endpoint_url}"
    assert SECRET_KEY not in blobs.describe()


async def test_put_stat_exists_delete(
    store: S3BlobStore, admin: S3Client, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    src = source(tmp_path, data)
    assert not await store.exists(KEY)
    await store.put_file(KEY, src, "video/mp4")
    assert not src.exists()  # consumed, like the local store
    assert await store.exists(KEY)

    # The key scheme, under the prefix, as any S3 client sees it.
    listed = admin.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["media/tenants/tenant_a/jobs/job_1/video.mp4"]
    head = admin.head_object(Bucket=bucket, Key="media/" + KEY)
    assert head["ContentType"] == "video/mp4"

    stat = await store.stat(KEY)
    assert (stat.size, stat.content_type) == (5000, "video/mp4")
    assert stat.etag == head["ETag"].strip('"')
    assert await collect(store, KEY) == data

    await store.delete(KEY)
    await store.delete(KEY)  # already gone: no error
    assert not await store.exists(KEY)
    with pytest.raises(BlobNotFound):
        await store.stat(KEY)


async def test_multipart_upload_above_the_threshold(
    endpoint: str, bucket: str, admin: S3Client, tmp_path: Path
) -> None:
    store = S3BlobStore(
        bucket,
        endpoint_url=endpoint,
        region=REGION,
        multipart_threshold_bytes=5 * MIB,
        multipart_chunk_bytes=5 * MIB,  # S3's smallest part
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )
    data = os.urandom(11 * MIB)
    await store.put_file(KEY, source(tmp_path, data), "video/mp4")
    etag = admin.head_object(Bucket=bucket, Key=KEY)["ETag"].strip('"')
    assert etag.endswith("-3")  # an S3 multipart ETag names its part count
    assert (await store.stat(KEY)).size == len(data)
    assert await collect(store, KEY) == data
    # Below the threshold: a single PUT (a plain MD5 ETag).
    await store.put_file("small.bin", source(tmp_path, b"tiny"), "application/octet-stream")
    assert "-" not in (await store.stat("small.bin")).etag
    store.close()


async def test_put_bytes_stores_a_document_whole(
    store: S3BlobStore, admin: S3Client, bucket: str
) -> None:
    await store.put_bytes("doc.json", b'{"a": 1}', "application/json")
    head = admin.head_object(Bucket=bucket, Key="media/doc.json")
    assert head["ContentType"] == "application/json"
    assert await collect(store, "doc.json") == b'{"a": 1}'
    await store.put_bytes("doc.json", b"{}", "application/json")
    assert await collect(store, "doc.json") == b"{}"


async def test_ranges(store: S3BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 20  # 5120 bytes
    await store.put_file(KEY, source(tmp_path, data), "video/mp4")
    assert await collect(store, KEY, 0, 0) == data[:1]
    assert await collect(store, KEY, 10, 19) == data[10:20]
    assert await collect(store, KEY, 1000, None) == data[1000:]
    assert await collect(store, KEY, 5000, 99999) == data[5000:]  # clamped to the end
    chunks = [c async for c in store.open_range(KEY, 0, 2499)]
    assert b"".join(chunks) == data[:2500]
    assert max(len(c) for c in chunks) <= 1000
    with pytest.raises(RangeNotSatisfiable):
        await collect(store, KEY, 5120, None)
    with pytest.raises(RangeNotSatisfiable):
        await collect(store, KEY, 20, 10)


async def test_empty_blob_reads_as_empty(store: S3BlobStore, tmp_path: Path) -> None:
    await store.put_file(KEY, source(tmp_path, b""), "video/mp4")
    assert await collect(store, KEY) == b""


async def test_missing_blob(store: S3BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await collect(store, KEY)
    with pytest.raises(BlobNotFound):
        await collect(store, KEY, 5, 10)


async def test_presigned_url_serves_the_bytes_to_plain_http(
    store: S3BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    await store.put_file(KEY, source(tmp_path, data), "video/mp4")
    url = store.presigned_url(KEY, 300, filename="clip one.mp4")
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-disposition"] == (
            "attachment; filename=\"clip_one.mp4\"; filename*=UTF-8''clip%20one.mp4"
        )
        ranged = await http.get(url, headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206
        assert ranged.content == data[100:200]
        assert (await http.get(store.signed_url(KEY, 60) or "")).content == data


async def test_presigned_url_names_its_expiry(store: S3BlobStore) -> None:
    # moto's server does not enforce the expiry of presigned URLs (AWS, MinIO and the
    # other servers do, answering 403 "Request has expired"); what the store controls,
    # and what is checked here, is that the URL is SigV4-signed over that expiry.
    before = time.time()
    url = store.presigned_url(KEY, 90)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["90"]
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    assert abs(signed_at - before) < 5
    assert len(query["X-Amz-Signature"][0]) == 64
    assert urlsplit(url).path == f"/{store.bucket}/media/{KEY}"
    assert url != store.presigned_url(KEY, 91)


@pytest.mark.parametrize("expires_s", [0, -1, MAX_PRESIGN_S + 1])
def test_presigned_url_lifetime_is_bounded(store: S3BlobStore, expires_s: int) -> None:
    with pytest.raises(ValueError, match="expires_s"):
        store.presigned_url(KEY, expires_s)


def test_public_url_through_the_cdn(store: S3BlobStore, endpoint: str, bucket: str) -> None:
    assert store.public_url(KEY) == f"https://cdn.example.com/media/{KEY}"
    plain = S3BlobStore(bucket, endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert plain.public_url(KEY) is None
    plain.close()


@pytest.mark.parametrize("key", ["../x", "a//b", "/abs", "a/./b", "", "a b"])
async def test_unsafe_keys_are_refused(store: S3BlobStore, key: str) -> None:
    with pytest.raises(VidpipeError, match="unsafe storage key"):
        await store.exists(key)


async def test_missing_bucket_is_a_storage_error(endpoint: str, tmp_path: Path) -> None:
    store = S3BlobStore(
        "no-such-bucket", endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    with pytest.raises(StorageError):
        await store.put_file(KEY, source(tmp_path, b"x"), "video/mp4")
    store.close()


async def test_unreachable_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    store = S3BlobStore(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{closed}",
        max_attempts=2,
        connect_timeout_s=1,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )
    with pytest.raises(StorageError):
        await store.stat(KEY)
    store.close()


@pytest.mark.parametrize(
    ("bucket", "keys"),
    [
        ("", {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}),
        ("b", {"access_key": "only-the-id"}),
        ("b", {"secret_key": "only-the-secret"}),
    ],
)
def test_refuses_incomplete_configuration(bucket: str, keys: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        S3BlobStore(bucket, endpoint_url="http://127.0.0.1:9", **keys)  # type: ignore[arg-type]
