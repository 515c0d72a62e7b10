"""vidpipe.client's plans, shorts, steps, retry and templates against the real app, on
SQLite and PostgreSQL: the async client in-process (ASGITransport), the blocking client
over loopback HTTP; a real worker runs the plan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Harness
from vidpipe.api.app import create_app
from vidpipe.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    Plan,
    VideoWithSteps,
)
from vidpipe.testing.fakes._common_rfm import serve_on_loopback

pytestmark = pytest.mark.timeout(120)

BASE = "http://vidpipe.test"
CLIP: dict[str, Any] = {"model": "instant/test", "seconds": 1, "size": "640x360"}


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(harness.runtime))
    async with AsyncClient(BASE, harness.key, transport=transport) as client:
        yield client


def two_clips_merged() -> Plan:
    plan = Plan(title="two boats", metadata={"order": "42"})
    one = plan.step("one", "clip", prompt="a paper boat", **CLIP)
    two = plan.step("two", "clip", prompt="a red kite", **CLIP)
    plan.output = plan.step("joined", "merge", clips=[one, two])
    return plan


async def test_a_plan_built_in_python_runs_its_steps(harness: Harness, client: AsyncClient) -> None:
    plan = two_clips_merged()
    video = await client.create_job(plan, idempotency_key="plan-1")
    assert isinstance(video, VideoWithSteps)
    assert (video.status, video.metadata) == ("queued", {"order": "42"})
    by_name = {s.name: s for s in video.steps}
    assert list(by_name) == ["one", "two", "joined"]
    assert by_name["one"].state == by_name["two"].state == "ready"
    assert (by_name["joined"].state, by_name["joined"].depends_on) == ("pending", ["one", "two"])
    assert by_name["one"].kind == "clip"
    assert by_name["one"].model == "instant/test"
    # The same key and plan: the same video, not a second one.
    assert (await client.create_job(plan, idempotency_key="plan-1")).id == video.id

    assert await harness.run_until(video.id) == "completed"
    done = await client.videos.get(video.id)
    assert (done.status, done.progress) == ("completed", 100)
    steps = await client.steps(video.id)
    assert [(s.name, s.state, s.terminal) for s in steps] == [
        ("one", "succeeded", True),
        ("two", "succeeded", True),
        ("joined", "succeeded", True),
    ]
    assert [s.attempts for s in steps[:2]] == [1, 1]
    assert all(s.output is not None and s.error is None for s in steps)

    # Retry is for failed videos only.
    with pytest.raises(Conflict) as caught:
        await client.retry(video.id)
    assert (caught.value.status, caught.value.code) == (409, "video_not_retryable")


async def test_a_bad_plan_raises_the_typed_error(harness: Harness, client: AsyncClient) -> None:
    # Refs only point back to steps already made; ``after`` by name can close a loop.
    plan = Plan()
    shot = plan.step("shot", "clip", prompt="a paper boat", **CLIP)
    plan.step("a", "merge", clips=[shot], after=["b"])
    plan.output = plan.step("b", "merge", clips=[{"$ref": "a"}])
    with pytest.raises(InvalidRequest) as caught:
        await client.create_job(plan)
    assert (caught.value.status, caught.value.code) == (422, "plan_cycle")
    assert "a -> b -> a" in caught.value.message

    # A ready mapping is checked by the server just the same.
    with pytest.raises(InvalidRequest) as caught:
        await client.create_job({"steps": [{"name": "a", "kind": "teleport"}]})
    assert caught.value.code == "unknown_step_kind"
    assert (await client.videos.list()).data == []

    with pytest.raises(NotFound) as missing:
        await client.steps("video_nope")
    assert missing.value.code == "video_not_found"


async def test_templates_and_shorts(client: AsyncClient) -> None:
    templates = await client.templates()
    names = {t.name for t in templates}
    assert len(names) >= 10
    assert {"fun_facts", "story"} <= names
    one = await client.template("fun_facts")
    assert one.name == "fun_facts"
    assert one.scenes["min"] <= one.scenes["max"]
    with pytest.raises(NotFound) as caught:
        await client.template("nope")
    assert caught.value.code == "unknown_template"

    short = await client.create_short(
        topic="octopuses", template="fun_facts", target_seconds=40, idempotency_key="short-1"
    )
    assert short.status == "queued"
    names_of_steps = {s.name for s in short.steps}
    assert {"script", "captions", "music", "compose"} <= names_of_steps
    again = await client.create_short(
        topic="octopuses", template="fun_facts", target_seconds=40, idempotency_key="short-1"
    )
    assert again.id == short.id
    with pytest.raises(InvalidRequest) as refused:
        await client.create_short(topic="octopuses", template="nope")
    assert refused.value.code == "unknown_template"


async def test_the_blocking_client_mirrors_it(harness: Harness) -> None:
    async with serve_on_loopback(create_app(harness.runtime)) as base:

        def scenario() -> tuple[str, list[str], int]:
            with Client(base, harness.key, timeout=10) as client:
                video = client.create_job(two_clips_merged())
                states = [s.state for s in client.steps(video.id)]
                # Queued, not failed: nothing to retry.
                with pytest.raises(Conflict) as caught:
                    client.retry(video.id)
                assert caught.value.code == "video_not_retryable"
                assert client.template("fun_facts").name == "fun_facts"
                return video.id, states, len(client.templates())

        video_id, states, template_count = await asyncio.to_thread(scenario)
    assert states == ["ready", "ready", "pending"]
    assert template_count >= 10
    assert video_id.startswith("video_")
