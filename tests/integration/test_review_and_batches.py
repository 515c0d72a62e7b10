"""The review gate and batches, through the API with real workers."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest

from tests.integration.conftest import Harness
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q

pytestmark = pytest.mark.timeout(120)


async def _events(harness: Harness, vid: str) -> list[str]:
    async with harness.runtime.db.read() as conn:
        return [e.type for e in await job_q.list_events(conn, vid)]


async def test_review_holds_delivery_until_approved(harness: Harness) -> None:
    video = await harness.create(model="instant/test", review=True)
    vid = str(video["id"])
    assert video["review"] == {"state": "required", "reason": None}

    async def wait_review() -> dict[str, object]:
        async with asyncio.timeout(60):
            while True:
                got = await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())
                body = got.json()
                if body["review"] and body["review"]["state"] == "pending":
                    return body  # type: ignore[no-any-return]
                await asyncio.sleep(0.05)

    stop = asyncio.Event()
    task = asyncio.create_task(harness.runtime.new_worker().run(stop))
    try:
        held = await wait_review()
    finally:
        stop.set()
        await task
        harness.runtime.workers.clear()
    assert held["status"] == "in_progress"  # not announced as completed yet
    assert "video.completed" not in await _events(harness, vid)
    queue = (
        await harness.client.get("/v1/videos?review_state=pending", headers=harness.headers())
    ).json()
    assert [v["id"] for v in queue["data"]] == [vid]
    approved = await harness.client.post(
        f"/v1/videos/{vid}/review", json={"decision": "approve"}, headers=harness.headers()
    )
    assert approved.status_code == 200
    assert approved.json()["status"] == "completed"
    assert approved.json()["review"]["state"] == "approved"
    assert (await _events(harness, vid))[-1] == "video.completed"
    again = await harness.client.post(
        f"/v1/videos/{vid}/review", json={"decision": "approve"}, headers=harness.headers()
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "not_awaiting_review"


async def test_rejected_videos_fail_or_come_back_regenerated(harness: Harness) -> None:
    first = str((await harness.create(model="instant/test", review=True))["id"])
    second = str((await harness.create(model="instant/test", review=True))["id"])

    async def reviewed_state(vid: str) -> str:
        job = await harness.runtime.videos.get(None, vid)
        return str(job.review_state)

    stop = asyncio.Event()
    task = asyncio.create_task(harness.runtime.new_worker().run(stop))
    try:
        async with asyncio.timeout(60):
            while {await reviewed_state(first), await reviewed_state(second)} != {"pending"}:
                await asyncio.sleep(0.05)
        rejected = await harness.client.post(
            f"/v1/videos/{first}/review",
            json={"decision": "reject", "reason": "wrong colours"},
            headers=harness.headers(),
        )
        assert rejected.json()["status"] == "failed"
        assert rejected.json()["error"] == {"code": "review_rejected", "message": "wrong colours"}
        redo = await harness.client.post(
            f"/v1/videos/{second}/review",
            json={"decision": "reject", "reason": "try again", "regenerate": True},
            headers=harness.headers(),
        )
        assert redo.json()["status"] == "in_progress"
        async with asyncio.timeout(60):
            while await reviewed_state(second) != "pending":
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        harness.runtime.workers.clear()
    async with harness.runtime.db.read() as conn:
        tries = await step_q.attempts_of_job(conn, second)
    assert len(tries) == 2  # made twice


async def test_batches_create_report_and_survive_retries(harness: Harness) -> None:
    requests = [
        {"prompt": f"clip {i}", "seconds": 1, "size": "640x360", "model": "instant/test"}
        for i in range(4)
    ] + [{"prompt": "", "size": "640x360"}]
    headers = {**harness.headers(), "Idempotency-Key": "batch-1"}
    made = await harness.client.post("/v1/batches", json={"requests": requests}, headers=headers)
    assert made.status_code == 202
    batch = made.json()
    assert batch["total"] == 5
    assert batch["refused"] == 1
    assert batch["items"][4]["error"]["code"] == "invalid_prompt"
    ids = [i["video_id"] for i in batch["items"][:4]]
    # The same upload again (a client retry) makes no new videos.
    again = (
        await harness.client.post("/v1/batches", json={"requests": requests}, headers=headers)
    ).json()
    assert [i["video_id"] for i in again["items"][:4]] == ids
    for vid in ids:
        await harness.run_until(vid)
    status = (
        await harness.client.get(f"/v1/batches/{batch['id']}", headers=harness.headers())
    ).json()
    assert status["finished"] is True
    assert status["counts"] == {"completed": 4}
    assert status["progress"] == 100
    report = (
        await harness.client.get(f"/v1/batches/{batch['id']}/report", headers=harness.headers())
    ).text
    rows = list(csv.DictReader(io.StringIO(report)))
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["refused"]
    assert rows[4]["error_code"] == "invalid_prompt"
    jsonl = (
        await harness.client.get(
            f"/v1/batches/{batch['id']}/report?format=jsonl", headers=harness.headers()
        )
    ).text
    assert [json.loads(line)["video_id"] for line in jsonl.splitlines()][:4] == ids
    upload = await harness.client.post(
        "/v1/batches",
        files={"file": ("b.jsonl", "\n".join(json.dumps(r) for r in requests[:2]).encode())},
        headers=harness.headers(),
    )
    assert upload.status_code == 202
    assert upload.json()["total"] == 2
    other = await harness.client.get(
        f"/v1/batches/{batch['id']}", headers=harness.headers(harness.other_key)
    )
    assert other.status_code == 404
