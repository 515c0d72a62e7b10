"""LocalBlobStore on a real directory: the old contract plus stat, ranges, signing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidpipe.blobs.base import (
    BlobNotFound,
    BlobStore,
    RangeNotSatisfiable,
    byte_range,
    content_disposition,
    job_key,
)
from vidpipe.blobs.local import LocalBlobStore
from vidpipe.errors import VidpipeError

pytestmark = pytest.mark.timeout(20)

KEY = job_key("t1", "job_1", "video.mp4")


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", chunk_bytes=1000)


def source(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def collect(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.open_range(key, start, end)])


def test_satisfies_the_protocol(store: LocalBlobStore) -> None:
    blobs: BlobStore = store
    assert blobs.describe().startswith("local directory")


async def test_put_exists_stat_delete(store: LocalBlobStore, tmp_path: Path) -> None:
    data = os.urandom(5000)
    src = source(tmp_path, data)
    assert not await store.exists(KEY)
    await store.put_file(KEY, src, "video/mp4")
    assert not src.exists()  # consumed
    assert await store.exists(KEY)
    path = store.local_path(KEY)
    assert path is not None
    assert path.read_bytes() == data
    assert path == (tmp_path / "blobs" / KEY).resolve()
    stat = await store.stat(KEY)
    assert stat.size == 5000
    assert stat.content_type == "video/mp4"
    assert stat.etag
    await store.delete(KEY)
    await store.delete(KEY)  # already gone: no error
    assert not await store.exists(KEY)
    with pytest.raises(BlobNotFound):
        await store.stat(KEY)


def _other_filesystem(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev:
        return shm
    return None


async def test_a_file_from_another_filesystem_is_copied_in(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    # /dev/shm is a tmpfs: a rename from there into the store fails (EXDEV), so the
    # store copies beside the blob and renames; the source is consumed either way.
    shm = _other_filesystem(tmp_path)
    if shm is None:
        pytest.skip("needs a second filesystem at /dev/shm")
    data = os.urandom(3000)
    src = source(shm, data, f"vidpipe-test-{os.getpid()}.bin")
    try:
        await store.put_file(KEY, src, "video/mp4")
        assert not src.exists()  # consumed
    finally:
        src.unlink(missing_ok=True)
    path = store.local_path(KEY)
    assert path is not None
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["video.mp4"]


async def test_put_bytes_stores_a_document_whole(store: LocalBlobStore) -> None:
    key = job_key("t1", "job_1", "manifest.json")
    await store.put_bytes(key, b'{"a": 1}', "application/json")
    assert await collect(store, key) == b'{"a": 1}'
    await store.put_bytes(key, b"{}", "application/json")  # replaced whole
    assert await collect(store, key) == b"{}"
    assert (await store.stat(key)).content_type == "application/json"
    # Nothing but the blob: no temporary file is left beside it.
    path = store.local_path(key)
    assert path is not None
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


async def test_etag_changes_when_the_blob_is_replaced(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    await store.put_file(KEY, source(tmp_path, b"one"), "video/mp4")
    first = (await store.stat(KEY)).etag
    await store.put_file(KEY, source(tmp_path, b"three"), "video/mp4")
    assert (await store.stat(KEY)).etag != first


async def test_ranges(store: LocalBlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 20  # 5120 bytes, several read chunks
    await store.put_file(KEY, source(tmp_path, data), "video/mp4")
    assert await collect(store, KEY) == data
    assert await collect(store, KEY, 0, 0) == data[:1]
    assert await collect(store, KEY, 10, 19) == data[10:20]
    assert await collect(store, KEY, 1000, None) == data[1000:]
    assert await collect(store, KEY, 5000, 99999) == data[5000:]  # clamped to the end
    chunks = [c async for c in store.open_range(KEY, 0, 2499)]
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    with pytest.raises(RangeNotSatisfiable):
        await collect(store, KEY, 5120, None)
    with pytest.raises(RangeNotSatisfiable):
        await collect(store, KEY, 20, 10)


async def test_empty_blob_reads_as_empty(store: LocalBlobStore, tmp_path: Path) -> None:
    await store.put_file(KEY, source(tmp_path, b""), "video/mp4")
    assert await collect(store, KEY) == b""
    assert (await store.stat(KEY)).size == 0


async def test_missing_blob(store: LocalBlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await collect(store, KEY)
    assert not await store.exists(KEY)


@pytest.mark.parametrize("key", ["../escape.mp4", "tenants/../../x", "/etc/passwd"])
async def test_keys_cannot_escape_the_root(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(VidpipeError, match="escapes"):
        await store.exists(key)
    with pytest.raises(VidpipeError, match="escapes"):
        store.signed_url(key, 60)


@pytest.mark.parametrize(
    ("size", "start", "end", "expected"),
    [
        (100, 0, None, (0, 100)),
        (100, 0, 0, (0, 1)),
        (100, 10, 19, (10, 20)),
        (100, 99, None, (99, 100)),
        (100, 50, 1000, (50, 100)),
        (0, 0, None, (0, 0)),
        (100, 100, None, None),
        (100, 100, 200, None),
        (100, -1, None, None),
        (100, 20, 10, None),
        (0, 0, 0, None),
    ],
)
def test_byte_range(
    size: int, start: int, end: int | None, expected: tuple[int, int] | None
) -> None:
    if expected is None:
        with pytest.raises(RangeNotSatisfiable):
            byte_range(size, start, end)
    else:
        assert byte_range(size, start, end) == expected


@pytest.mark.parametrize(
    ("name", "disposition", "fallback", "encoded"),
    [
        ("v.mp4", "attachment", "v.mp4", "v.mp4"),
        ("my clip.mp4", "inline", "my_clip.mp4", "my%20clip.mp4"),
        ('a"b\r\n.mp4', "attachment", "a_b_.mp4", "a%22b%0D%0A.mp4"),
        ("été.mp4", "attachment", "t_.mp4", "%C3%A9t%C3%A9.mp4"),
        ("...", "attachment", "download", "..."),
    ],
)
def test_content_disposition(name: str, disposition: str, fallback: str, encoded: str) -> None:
    header = content_disposition(name, disposition)  # type: ignore[arg-type]
    assert header == f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
