"""Delivering stored videos: S3 (a real S3-compatible server) and signed local URLs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from vidpipe.api.app import create_app
from vidpipe.blobs.local import LocalBlobStore
from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q

pytestmark = pytest.mark.timeout(90)


async def _completed_video(runtime: Runtime) -> tuple[str, httpx.AsyncClient]:
    async with runtime.db.write() as conn:
        tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
    job = (
        await runtime.videos.create(
            tenant.id, CreateVideo(prompt="x", seconds=1, size="640x360", model="instant/test")
        )
    ).job
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.new_worker().run(stop))
    async with asyncio.timeout(60):
        while (await runtime.videos.get(None, job.id)).status != "completed":
            await asyncio.sleep(0.05)
    stop.set()
    await task
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime, open_tenant_id=tenant.id)),
        base_url="http://vidpipe.test",
    )
    return job.id, client


@pytest.fixture
async def s3_runtime(
    sqlite_url: str, s3_endpoint: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Runtime]:
    bucket = "delivery"
    admin = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    admin.create_bucket(Bucket=bucket)
    settings = make_settings(
        sqlite_url,
        instant_provider=True,
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        idle_poll_s=0.1,
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    yield runtime
    await runtime.close()


async def test_s3_content_streams_with_ranges_and_etags(
    s3_runtime: Runtime, s3_endpoint: str
) -> None:
    job_id, client = await _completed_video(s3_runtime)
    async with client:
        full = await client.get(f"/v1/videos/{job_id}/content")
        assert full.status_code == 200
        assert full.headers["content-type"] == "video/mp4"
        assert full.content[4:8] == b"ftyp"
        sha = hashlib.sha256(full.content).hexdigest()
        assert full.headers["etag"] == f'"{sha}"'
        part = await client.get(f"/v1/videos/{job_id}/content", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == full.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(full.content)}"
        tail = await client.get(f"/v1/videos/{job_id}/content", headers={"Range": "bytes=-5"})
        assert tail.content == full.content[-5:]
        beyond = await client.get(
            f"/v1/videos/{job_id}/content", headers={"Range": f"bytes={len(full.content)}-"}
        )
        assert beyond.status_code == 416
        cached = await client.get(
            f"/v1/videos/{job_id}/content", headers={"If-None-Match": f'"{sha}"'}
        )
        assert cached.status_code == 304
        signed = (await client.get(f"/v1/videos/{job_id}/url")).json()
        assert signed["url"].startswith(s3_endpoint)
        assert "X-Amz-Signature" in signed["url"]
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(signed["url"])
    assert fetched.content == full.content
    # The stored object follows the key scheme, under the tenant and job.
    listing = (
        boto3.session.Session()
        .client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        .list_objects_v2(Bucket="delivery")
    )
    keys = [o["Key"] for o in listing["Contents"]]
    assert all(k.startswith("tenants/ten_") and f"/jobs/{job_id}/" in k for k in keys)
    assert {k.rsplit("/", 1)[1] for k in keys} == {
        "video.mp4",
        "thumbnail.jpg",
        "poster.jpg",
        "preview.webp",
        "manifest.json",
    }


async def test_local_signed_urls_expire_and_refuse_tampering(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        sqlite_url,
        instant_provider=True,
        signing_secret="s" * 32,
        idle_poll_s=0.1,
        signed_url_ttl_s=60,
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        job_id, client = await _completed_video(runtime)
        async with client:
            full = await client.get(f"/v1/videos/{job_id}/content")
            signed = (await client.get(f"/v1/videos/{job_id}/url")).json()
            parts = urlsplit(signed["url"])
            path = f"{parts.path}?{parts.query}"
            anon = await client.get(path)  # no API key needed: the URL is the key
            assert anon.status_code == 200
            assert anon.content == full.content
            ranged = await client.get(path, headers={"Range": "bytes=0-9"})
            assert ranged.status_code == 206
            assert ranged.content == full.content[:10]
            forged = await client.get(path.replace("video.mp4", "other.mp4"))
            assert forged.status_code == 401
            tampered = await client.get(path[:-1] + ("0" if path[-1] != "0" else "1"))
            assert tampered.status_code == 401
            store = runtime.blobs
            assert isinstance(store, LocalBlobStore)
            assert store.signer is not None
            store.signer = dataclasses.replace(store.signer, clock=lambda: 10.0**11)
            expired = await client.get(path)
            assert expired.status_code == 401
            assert expired.json()["error"]["code"] == "invalid_signature"
    finally:
        await runtime.close()


async def test_signed_urls_need_a_secret_with_local_storage(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    runtime = await Runtime.open(
        make_settings(sqlite_url, instant_provider=True, idle_poll_s=0.1), run_migrations=False
    )
    try:
        job_id, client = await _completed_video(runtime)
        async with client:
            response = await client.get(f"/v1/videos/{job_id}/url")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "signed_urls_disabled"
    finally:
        await runtime.close()
