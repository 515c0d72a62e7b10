"""What a delivery leaves on disk: the stored files, and nothing in the worker's tmp."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.integration.conftest import open_harness
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.providers.base import VideoRequest
from vidpipe.providers.instant import InstantProvider
from vidpipe.store.schema import assets

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("derivatives", [False, True])
async def test_a_delivery_leaves_its_files_stored_and_nothing_in_tmp(
    sqlite_url: str, make_settings: Callable[..., Settings], derivatives: bool
) -> None:
    async with open_harness(sqlite_url, make_settings, derivatives=derivatives) as h:
        vid = str((await h.create(model="instant/test", seconds=2))["id"])
        assert await h.run_until(vid) == "completed"
        url = f"/v1/videos/{vid}/content?variant=manifest"
        manifest = await h.client.get(url, headers=h.headers())
        assert manifest.status_code == 200
        async with h.runtime.db.read() as conn:
            rows = (
                await conn.execute(
                    select(assets.c.name, assets.c.sha256, assets.c.bytes).where(
                        assets.c.job_id == vid
                    )
                )
            ).all()
        home = h.runtime.settings.home
    recorded = {row.name: (row.sha256, row.bytes) for row in rows}
    # The manifest is stored from memory: what is recorded is what is served.
    body = manifest.content
    assert recorded["manifest.json"] == (hashlib.sha256(body).hexdigest(), len(body))
    assert manifest.json()["job_id"] == vid
    assert ("thumbnail.jpg" in recorded) is derivatives
    # The download was moved into storage and the work directory, made only for the
    # derivatives, removed: the worker's tmp holds nothing.
    tmp = home / "tmp"
    assert tmp.is_dir()
    assert list(tmp.iterdir()) == []


async def test_the_instant_provider_logs_calls_only_when_asked(tmp_path: Path) -> None:
    quiet = InstantProvider(tmp_path / "quiet", log_calls=False)
    job = await quiet.submit(_request(), "key-1")
    assert (await quiet.poll(job)).outputs
    assert not (tmp_path / "quiet" / "calls.log").exists()

    talkative = InstantProvider(tmp_path / "talkative")
    job = await talkative.submit(_request(), "key-1")
    await talkative.poll(job)
    log = (tmp_path / "talkative" / "calls.log").read_text().splitlines()
    assert [line.split('"call": "')[1].split('"')[0] for line in log] == ["submit", "poll"]


async def test_settings_reach_the_instant_provider(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    for logged in (True, False):
        settings = make_settings(sqlite_url, instant_provider=True, instant_log_calls=logged)
        runtime = await Runtime.open(settings)
        try:
            provider = runtime.registry.get("instant")
            assert isinstance(provider, InstantProvider)
            assert provider.log_calls is logged
        finally:
            await runtime.close()


def _request() -> VideoRequest:
    return VideoRequest(model="test", prompt="x", seconds=1, width=640, height=360)
