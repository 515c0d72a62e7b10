"""Custom plans (POST /v1/jobs) and retry from failed steps, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from tests.integration.conftest import Harness
from vidpipe.media.probe import probe
from vidpipe.shorts.templates import list_templates
from vidpipe.store.schema import attempts, events, jobs, steps

pytestmark = pytest.mark.timeout(120)


def clip(name: str, prompt: str = "a paper boat", **params: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "clip",
        "params": {
            "prompt": prompt,
            "model": "instant/test",
            "seconds": 1,
            "size": "640x360",
            **params,
        },
    }


def merge(name: str, *clips: str) -> dict[str, Any]:
    return {"name": name, "kind": "merge", "params": {"clips": [{"$ref": c} for c in clips]}}


async def _post(h: Harness, body: dict[str, Any]) -> Any:
    return await h.client.post("/v1/jobs", json=body, headers=h.headers())


async def _count(h: Harness, table: Any) -> int:
    async with h.runtime.db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


BAD_PLANS = [
    ({"steps": [{"name": "a", "kind": "teleport", "params": {}}]}, "unknown_step_kind"),
    ({"steps": [clip("a"), clip("a")], "output": "a"}, "duplicate_step_name"),
    ({"steps": [clip("a"), merge("m", "a", "ghost")]}, "dangling_reference"),
    (
        {
            "steps": [
                {"name": "a", "kind": "merge", "params": {"clips": [{"$ref": "b"}]}},
                {"name": "b", "kind": "merge", "params": {"clips": [{"$ref": "a"}]}},
            ],
            "output": "a",
        },
        "plan_cycle",
    ),
    ({"steps": [clip("a", seconds="many")]}, "invalid_step_params"),
    ({"steps": [clip("a", colour="red")]}, "invalid_step_params"),
    ({"steps": [{"name": "a", "kind": "clip", "params": {"prompt": "x"}}]}, "invalid_step_params"),
    # A file input named by storage key instead of a reference: refused (it could name
    # another tenant's file).
    (
        {
            "steps": [
                {
                    "name": "m",
                    "kind": "merge",
                    "params": {"clips": [{"key": "tenants/x/jobs/y/video.mp4"}]},
                }
            ]
        },
        "invalid_step_params",
    ),
    ({"steps": [clip("a"), clip("b")]}, "invalid_plan_output"),
    (
        {"steps": [{"name": "s", "kind": "speech", "params": {"text": "hello"}}]},
        "invalid_plan_output",
    ),
    ({"steps": [clip("a")], "output": "zzz"}, "invalid_plan_output"),
    ({"steps": [clip("Bad Name")]}, "invalid_step_name"),
    ({"steps": [clip("a", _final=False)]}, "invalid_step_params"),
    ({"steps": [clip("a", model="nope/none")]}, "unknown_model"),
    ({"steps": []}, "invalid_request"),
    ({"steps": [clip("a")], "surprise": 1}, "unknown_parameter"),
    ([1, 2], "invalid_body"),
]


@pytest.mark.parametrize(("body", "code"), BAD_PLANS)
async def test_bad_plans_are_refused_before_anything_runs(
    harness: Harness, body: Any, code: str
) -> None:
    response = await _post(harness, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert await _count(harness, jobs) == 0
    assert await _count(harness, steps) == 0


async def test_a_custom_plan_runs_its_dag_and_merges_the_clips(harness: Harness) -> None:
    body = {
        "title": "two boats",
        "steps": [
            clip("one", "a paper boat"),
            clip("two", "a red kite"),
            merge("joined", "one", "two"),
        ],
    }
    response = await _post(harness, body)
    assert response.status_code == 202, response.text
    video = response.json()
    assert video["status"] == "queued"
    assert video["size"] == "640x360"  # the merge takes its clips' size
    by_name = {s["name"]: s for s in video["steps"]}
    # Independent clips are ready at once (they may run in parallel); the merge waits.
    assert by_name["one"]["state"] == by_name["two"]["state"] == "ready"
    assert by_name["joined"]["state"] == "pending"
    assert by_name["joined"]["depends_on"] == ["one", "two"]

    assert await harness.run_until(video["id"]) == "completed"
    listed = await harness.client.get(f"/v1/videos/{video['id']}/steps", headers=harness.headers())
    assert [s["state"] for s in listed.json()["data"]] == ["succeeded"] * 3
    assert all("key" not in (s["output"] or {}) for s in listed.json()["data"])
    got = await harness.client.get(f"/v1/videos/{video['id']}", headers=harness.headers())
    assert got.json()["progress"] == 100
    content = await harness.client.get(
        f"/v1/videos/{video['id']}/content", headers=harness.headers()
    )
    assert content.status_code == 200
    path = harness.runtime.settings.home / "merged.mp4"
    path.write_bytes(content.content)
    info = probe(path)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert info.duration_s == pytest.approx(2.0, abs=0.2)
    # Each clip paid for once, by its own attempt.
    assert await _count(harness, attempts) == 2


async def test_references_reach_into_outputs(harness: Harness) -> None:
    """A clip's prompt taken from a script scene: resolved when the clip becomes ready."""
    body = {
        "steps": [
            {
                "name": "script",
                "kind": "script",
                "params": {"template": "fun_facts", "scenes": ["Octopuses have three hearts."]},
            },
            clip("shot", prompt={"$ref": "script.scenes.0.visual_prompt"}),  # type: ignore[arg-type]
        ]
    }
    response = await _post(harness, body)
    assert response.status_code == 202, response.text
    vid = response.json()["id"]
    assert await harness.run_until(vid) == "completed"
    async with harness.runtime.db.read() as conn:
        row = (
            await conn.execute(
                select(steps.c.params).where(steps.c.job_id == vid, steps.c.name == "shot")
            )
        ).one()
        script_out = (
            await conn.execute(
                select(steps.c.output).where(steps.c.job_id == vid, steps.c.name == "script")
            )
        ).scalar_one()
    assert row.params["prompt"] == script_out["scenes"][0]["visual_prompt"]
    assert isinstance(row.params["prompt"], str)


async def test_retry_resumes_from_the_failed_step_only(harness: Harness, tmp_path: Any) -> None:
    library = tmp_path / "music"
    library.mkdir()
    harness.runtime.settings.music_dir = library
    body = {
        "steps": [
            clip("shot"),
            {
                "name": "bed",
                "kind": "music",
                "params": {"source": "library", "name": "bed.wav", "seconds": 2},
            },
            {
                "name": "final",
                "kind": "merge",
                "params": {"clips": [{"$ref": "shot"}], "audio": {"$ref": "bed"}},
            },
        ]
    }
    response = await _post(harness, body)
    assert response.status_code == 202, response.text
    vid = response.json()["id"]
    assert await harness.run_until(vid) == "failed"
    got = (await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())).json()
    assert got["error"]["code"] == "music_not_found"
    listed = (await harness.client.get(f"/v1/videos/{vid}/steps", headers=harness.headers())).json()
    states = {s["name"]: s["state"] for s in listed["data"]}
    assert states["bed"] == "failed"
    assert states["final"] == "canceled"

    # Not retryable while it is not failed; retry of an unknown video is a 404.
    missing = await harness.client.post("/v1/videos/video_nope/retry", headers=harness.headers())
    assert missing.status_code == 404
    other = await harness.client.post(
        f"/v1/videos/{vid}/retry", headers=harness.headers(harness.other_key)
    )
    assert other.status_code == 404

    # Fix the cause (the file appears in the library) and retry.
    from vidpipe.media.ffmpeg import find_ffmpeg
    from vidpipe.plans.music import generate_music

    generate_music(library / "bed.wav", seconds=2, mood="calm", seed=1, ffmpeg=find_ffmpeg())
    retried = await harness.client.post(f"/v1/videos/{vid}/retry", headers=harness.headers())
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    again = await harness.client.post(f"/v1/videos/{vid}/retry", headers=harness.headers())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "video_not_retryable"
    assert await harness.run_until(vid) == "completed"

    async with harness.runtime.db.read() as conn:
        started = (
            await conn.execute(
                select(events.c.data).where(events.c.job_id == vid, events.c.type == "step.started")
            )
        ).all()
        shot_attempts = await conn.scalar(
            select(func.count()).select_from(attempts).where(attempts.c.job_id == vid)
        )
    runs = [row.data["step"] for row in started]
    # The clip was made (and paid for) once; the music and merge steps ran again.
    assert shot_attempts == 1
    assert runs.count("bed") == 2
    assert runs.count("final") == 1
    retried_events = await harness.client.get(f"/v1/videos/{vid}/events", headers=harness.headers())
    assert retried_events.status_code in (200, 404)


async def test_a_completed_video_cannot_be_retried(harness: Harness) -> None:
    vid = str((await harness.create(model="instant/test"))["id"])
    assert await harness.run_until(vid) == "completed"
    response = await harness.client.post(f"/v1/videos/{vid}/retry", headers=harness.headers())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "video_not_retryable"


async def test_templates_and_step_kinds_are_listed(harness: Harness) -> None:
    response = await harness.client.get("/v1/templates", headers=harness.headers())
    assert response.status_code == 200
    names = {t["name"] for t in response.json()["data"]}
    assert len(names) >= 10
    assert {"fun_facts", "story", "would_you_rather", "text_chat"} <= names
    one = await harness.client.get("/v1/templates/fun_facts", headers=harness.headers())
    assert one.json()["name"] == "fun_facts"
    missing = await harness.client.get("/v1/templates/nope", headers=harness.headers())
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_template"
    kinds = await harness.client.get("/v1/step-kinds", headers=harness.headers())
    assert {k["kind"] for k in kinds.json()["data"]} >= {"clip", "speech", "compose", "merge"}


BAD_SHORTS = [
    ({}, "missing_parameter"),
    ({"topic": "octopuses", "template": "nope"}, "unknown_template"),
    ({"topic": "octopuses", "target_seconds": 1}, "invalid_request"),
    ({"topic": "octopuses", "aspect_ratio": "4:3"}, "invalid_request"),
    ({"topic": "octopuses", "visual_model": "nope/none"}, "unknown_model"),
    ({"topic": "octopuses", "llm": True}, "llm_not_configured"),
    ({"topic": "octopuses", "colour": "red"}, "unknown_parameter"),
    # The user's own media is fetched through the URL guard: private addresses refused.
    (
        {"scenes": ["One.", "Two."], "scene_media": [{"url": "http://127.0.0.1/a.png"}]},
        "unsafe_url",
    ),
    (
        {"scenes": ["One."], "scene_media": [None, {"url": "https://example.com/a.png"}]},
        "invalid_request",
    ),
]


@pytest.mark.parametrize(("body", "code"), BAD_SHORTS)
async def test_bad_shorts_are_refused(harness: Harness, body: dict[str, Any], code: str) -> None:
    response = await harness.client.post("/v1/shorts", json=body, headers=harness.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert await _count(harness, jobs) == 0


async def test_a_short_plan_shows_its_per_scene_steps(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/shorts",
        json={"topic": "octopuses", "template": "fun_facts", "target_seconds": 40},
        headers=harness.headers(),
    )
    assert response.status_code == 202, response.text
    video = response.json()
    names = [s["name"] for s in video["steps"]]
    scenes = sum(n.startswith("speech_") for n in names)
    assert scenes >= 3
    assert sum(n.startswith("visual_") for n in names) == scenes
    assert {"script", "captions", "music", "compose"} <= set(names)
    compose = next(s for s in video["steps"] if s["name"] == "compose")
    assert set(compose["depends_on"]) >= {"captions", "music", "visual_0", "speech_0"}
    # The same request with one Idempotency-Key makes one job.
    headers = {**harness.headers(), "Idempotency-Key": "short-1"}
    first = await harness.client.post("/v1/shorts", json={"topic": "owls"}, headers=headers)
    second = await harness.client.post("/v1/shorts", json={"topic": "owls"}, headers=headers)
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"


async def _script_step(h: Harness, vid: str) -> Any:
    async with h.runtime.db.read() as conn:
        return (
            await conn.execute(
                select(
                    steps.c.state, steps.c.output, steps.c.error_code, steps.c.poll_errors
                ).where(steps.c.job_id == vid, steps.c.name == "script")
            )
        ).one()


async def _run_script_step(h: Harness, vid: str, until: set[str]) -> Any:
    """Run a worker until the script step reaches one of ``until`` (the rest of the
    short is not needed here), then cancel the job."""
    import asyncio

    stop = asyncio.Event()
    worker = h.runtime.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while (row := await _script_step(h, vid)).state not in until:
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        h.runtime.workers.remove(worker)
    await h.client.post(f"/v1/videos/{vid}/cancel", headers=h.headers())
    return row


async def test_a_short_scripted_by_an_llm(harness: Harness) -> None:
    import httpx

    from vidpipe.testing.fakes.llm import FakeLLMFault, FakeLLMState, create_fake_llm

    state = FakeLLMState(retry_after_s=0.2)
    harness.runtime.settings.llm_base_url = "http://llm.test/v1"
    harness.runtime.settings.llm_api_key = SecretStr("llm-test-key")
    await harness.runtime.operator_http.aclose()
    harness.runtime.operator_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_fake_llm(state))
    )
    state.fail_next(FakeLLMFault.RATE_LIMIT)
    response = await harness.client.post(
        "/v1/shorts",
        json={"topic": "barn owls", "template": "fun_facts", "target_seconds": 40},
        headers=harness.headers(),
    )
    assert response.status_code == 202, response.text
    video = response.json()
    scenes = sum(s["name"].startswith("speech_") for s in video["steps"])
    row = await _run_script_step(harness, video["id"], {"succeeded", "failed"})
    assert row.state == "succeeded", row
    # The 429 was retried (after its Retry-After), then the script came back fitted to
    # the plan's scene count.
    assert row.poll_errors == 1
    assert len(row.output["scenes"]) == scenes
    assert "barn owls" in row.output["title"]
    sent = state.requests[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert state.headers[-1]["authorization"] == "Bearer llm-test-key"


async def test_an_llm_that_keeps_refusing_fails_the_short_clearly(harness: Harness) -> None:
    import httpx

    from vidpipe.testing.fakes.llm import FakeLLMFault, FakeLLMState, create_fake_llm

    state = FakeLLMState(api_key=None)
    harness.runtime.settings.llm_base_url = "http://llm.test/v1"
    await harness.runtime.operator_http.aclose()
    harness.runtime.operator_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_fake_llm(state))
    )
    state.fail_next(FakeLLMFault.REFUSAL)
    response = await harness.client.post(
        "/v1/shorts", json={"topic": "owls", "llm": True}, headers=harness.headers()
    )
    assert response.status_code == 202, response.text
    vid = response.json()["id"]
    assert await harness.run_until(vid) == "failed"
    row = await _script_step(harness, vid)
    assert row.state == "failed"
    assert row.error_code == "llm_refused"
    got = (await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())).json()
    assert got["error"]["code"] == "llm_refused"


async def test_work_directories_of_finished_jobs_are_swept(harness: Harness) -> None:
    import os

    from vidpipe.plans.workdirs import sweep_work_dirs

    done = str((await harness.create(model="instant/test"))["id"])
    assert await harness.run_until(done) == "completed"
    failed = str((await harness.create(model="instant/test"))["id"])
    async with harness.runtime.db.write() as conn:
        await conn.execute(jobs.update().where(jobs.c.id == failed).values(status="failed"))
    work = harness.runtime.settings.home / "work"
    for name in (done, failed, "video_unknown", "video_recent"):
        (work / name / "compose" / "segments").mkdir(parents=True)
    for name in (done, failed, "video_unknown"):
        os.utime(work / name, (1, 1))  # old
    removed = await sweep_work_dirs(harness.runtime.db, harness.runtime.settings.home)
    assert removed == 2
    left = sorted(p.name for p in work.iterdir())
    # A failed job keeps its checkpoints for a retry; a recent directory may belong
    # to a job being created.
    assert left == sorted([failed, "video_recent"])


@pytest.mark.timeout(200)
async def test_canceling_stops_a_running_compose(harness: Harness) -> None:
    import asyncio

    scenes = 4
    body = {
        "steps": [
            *[
                {
                    "name": f"img_{i}",
                    "kind": "image",
                    "params": {"prompt": f"scene {i}", "size": "1080x1920"},
                }
                for i in range(scenes)
            ],
            {
                "name": "compose",
                "kind": "compose",
                "params": {
                    "scenes": [
                        {"visual": {"$ref": f"img_{i}"}, "motion": "zoom_in", "duration_s": 10}
                        for i in range(scenes)
                    ],
                    "size": "540x960",
                },
            },
        ]
    }
    response = await _post(harness, body)
    assert response.status_code == 202, response.text
    vid = response.json()["id"]

    async def compose_state() -> Any:
        async with harness.runtime.db.read() as conn:
            return (
                await conn.execute(
                    select(steps.c.state, steps.c.lease_owner).where(
                        steps.c.job_id == vid, steps.c.name == "compose"
                    )
                )
            ).one()

    stop = asyncio.Event()
    worker = harness.runtime.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(150):
            while (await compose_state()).lease_owner is None:
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)
            canceled = await harness.client.post(
                f"/v1/videos/{vid}/cancel", headers=harness.headers()
            )
            assert canceled.status_code == 200, canceled.text
            # The worker notices at the compose's next progress report and lets go.
            while (await compose_state()).lease_owner is not None:
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        harness.runtime.workers.remove(worker)
    assert (await compose_state()).state == "canceled"
    segments = harness.runtime.settings.home / "work" / vid / "compose" / "segments"
    finished = (
        [p for p in segments.iterdir() if (p / "body.mp4").exists()] if segments.exists() else []
    )
    assert len(finished) < scenes
    async with harness.runtime.db.read() as conn:
        names = [
            r[0] for r in await conn.execute(select(steps.c.name).where(steps.c.job_id == vid))
        ]
        final = await conn.scalar(
            select(func.count())
            .select_from(events)
            .where(events.c.job_id == vid, events.c.type == "video.completed")
        )
    assert "compose" in names
    assert final == 0


async def test_a_chat_short_draws_the_thread_so_far_per_scene(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/shorts",
        json={"topic": "pizza toppings", "template": "text_chat"},
        headers=harness.headers(),
    )
    assert response.status_code == 202, response.text
    vid = response.json()["id"]
    async with harness.runtime.db.read() as conn:
        rows = {
            r.name: r
            for r in await conn.execute(
                select(steps.c.name, steps.c.kind, steps.c.params).where(steps.c.job_id == vid)
            )
        }
    visuals = sorted(
        (n for n in rows if n.startswith("visual_")), key=lambda n: int(n.split("_")[1])
    )
    assert visuals
    assert {rows[n].kind for n in visuals} == {"chat_image"}
    # Scene i shows messages 0..i.
    assert [len(rows[n].params["messages"]) for n in visuals] == list(range(1, len(visuals) + 1))
    # text_chat shows its words in the bubbles: no burned captions step.
    assert "captions" not in rows


async def test_a_still_held_without_motion_is_a_valid_composition(harness: Harness) -> None:
    """A chat screenshot or a quote card may stand still on purpose: the full
    validation reports the frozen frames without failing the video."""
    harness.runtime.settings.validation_mode = "full"
    body = {
        "steps": [
            {
                "name": "card",
                "kind": "image",
                "params": {"prompt": "a quote card", "size": "540x960"},
            },
            {
                "name": "compose",
                "kind": "compose",
                "params": {
                    "scenes": [{"visual": {"$ref": "card"}, "motion": "none", "duration_s": 3}],
                    "size": "540x960",
                },
            },
        ]
    }
    response = await _post(harness, body)
    assert response.status_code == 202, response.text
    vid = response.json()["id"]
    assert await harness.run_until(vid) == "completed"
    asset = await harness.runtime.videos.video_asset(None, vid)
    assert asset.validation is not None
    assert asset.validation["ok"] is True


@pytest.mark.parametrize(
    "template",
    [t.name for t in list_templates()],
)
async def test_every_template_makes_a_valid_short_plan(harness: Harness, template: str) -> None:
    for aspect in ("9:16", "16:9", "1:1"):
        response = await harness.client.post(
            "/v1/shorts",
            json={"topic": "the history of tea", "template": template, "aspect_ratio": aspect},
            headers=harness.headers(),
        )
        assert response.status_code == 202, response.text
        names = [s["name"] for s in response.json()["steps"]]
        assert names[0] == "script"
        assert names[-1] == "compose"
