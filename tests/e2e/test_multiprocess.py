"""The scale-out shape for real: one API process and three worker processes on one
PostgreSQL database and one S3 bucket (moto's server on loopback), a hundred videos over
HTTP, one worker SIGKILLed midway and a new one started in its place.

Every video completes; each has one ``video.mp4`` in the bucket under its own prefix and
nothing else is there (the bucket is versioned: a worker that takes a step over may
upload again, to the same key, and must upload the same video); the provider saw one
submission per attempt (a second one only with the same idempotency key, for an
attempt the killed worker was submitting); and what the API streams is byte for byte
what the bucket holds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import boto3
import httpx
import pytest

from tests.e2e.conftest import VIDPIPE, free_port, run_vidpipe, vidpipe_env, wait_http

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

JOBS = 100
KILL_AFTER_COMPLETED = 10  # of the first half: the workers are busy, most work is ahead
WORKER_CONCURRENCY = 4
DEADLINE_S = 180.0  # a bound for hangs: ~30 s on an idle two-core machine, 2 min loaded


def _s3(endpoint: str) -> S3Client:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([*VIDPIPE, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def _logs(directory: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
        for path in sorted(directory.glob("*.log"))
    )


async def _status_counts(pg: asyncpg.Connection) -> Counter[str]:
    rows = await pg.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    return Counter({str(r["status"]): int(r["n"]) for r in rows})


async def _worker_id(pg: asyncpg.Connection, pid: int, started: float) -> str:
    """The id a worker process registered with, once it has."""
    while True:
        found = await pg.fetchval("SELECT id FROM workers WHERE pid = $1", pid)
        if found is not None:
            return str(found)
        assert time.monotonic() - started < DEADLINE_S, f"worker {pid} never registered"
        await asyncio.sleep(0.05)


async def test_api_and_three_workers_share_postgres_and_s3_through_a_killed_worker(
    pg_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    started = time.monotonic()
    # One VIDPIPE_HOME for every process: the instant provider's calls.log is the
    # provider's view of all of them. Nothing else is shared on disk: database and
    # stored files are PostgreSQL and the bucket.
    home = tmp_path / "home"
    logs = tmp_path / "logs"
    logs.mkdir()
    bucket = f"multiprocess-{secrets.token_hex(4)}"
    s3 = _s3(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = vidpipe_env(
        home,
        VIDPIPE_DATABASE_URL=pg_url,
        VIDPIPE_STORAGE_BACKEND="s3",
        VIDPIPE_S3_BUCKET=bucket,
        VIDPIPE_S3_ENDPOINT_URL=s3_endpoint,
        VIDPIPE_S3_REGION="us-east-1",
        VIDPIPE_S3_ACCESS_KEY_ID="test",
        VIDPIPE_S3_SECRET_ACCESS_KEY="test",
        VIDPIPE_URL_ALLOWLIST="127.0.0.1",
        VIDPIPE_INSTANT_PROVIDER="true",
        VIDPIPE_INSTANT_LATENCY_S="0.5",
        VIDPIPE_WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
        # The killed worker's steps come back after its lease: keep that short.
        VIDPIPE_LEASE_S="5",
        VIDPIPE_IDLE_POLL_S="0.2",
        # Two cores run four processes: headers-only checks and no derivatives keep
        # the test about orchestration, not ffmpeg throughput.
        VIDPIPE_VALIDATION_MODE="basic",
        VIDPIPE_DERIVATIVES="false",
    )
    key = run_vidpipe("keys", "create", "--tenant", "t", env=env).stdout.strip().splitlines()[-1]

    api = _start(["api", "--host", "127.0.0.1", "--port", str(port)], env, logs / "api.log")
    processes.append(api)
    workers = [_start(["worker"], env, logs / f"worker{i}.log") for i in range(3)]
    processes.extend(workers)
    wait_http(f"{base}/healthz", timeout_s=DEADLINE_S)
    wait_http(f"{base}/readyz", timeout_s=DEADLINE_S)

    pg = await asyncpg.connect(pg_url)
    try:
        tenant_id = str(await pg.fetchval("SELECT id FROM tenants WHERE name = 't'"))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            gate = asyncio.Semaphore(10)

            async def create(i: int) -> str:
                async with gate:
                    response = await client.post(
                        "/v1/videos",
                        json={
                            "prompt": f"multiprocess job {i}",
                            "seconds": 1,
                            "size": "640x360",
                            "model": "instant/test",
                        },
                        headers={"Idempotency-Key": f"mp-{i}"},
                    )
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

            # The first half, then the kill: once some videos are done and the victim
            # is in the middle of steps (it holds leases), SIGKILL it.
            ids = list(await asyncio.gather(*(create(i) for i in range(JOBS // 2))))
            victim = workers[0]
            victim_id = await _worker_id(pg, victim.pid, started)
            while True:
                counts = await _status_counts(pg)
                held = await pg.fetch("SELECT job_id FROM steps WHERE lease_owner = $1", victim_id)
                if counts["completed"] >= KILL_AFTER_COMPLETED and held:
                    break
                assert counts["completed"] < JOBS // 2, "the victim never held a step"
                assert time.monotonic() - started < DEADLINE_S, _logs(logs)
                await asyncio.sleep(0.02)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            # Its leases outlive it until they expire: what it held when it died.
            held += await pg.fetch("SELECT job_id FROM steps WHERE lease_owner = $1", victim_id)
            held_at_kill = {str(r["job_id"]) for r in held}
            assert held_at_kill <= set(ids)

            # A new worker in its place; once it is up, the second half.
            replacement = _start(["worker"], env, logs / "worker3.log")
            processes.append(replacement)
            await _worker_id(pg, replacement.pid, started)
            ids += await asyncio.gather(*(create(i) for i in range(JOBS // 2, JOBS)))
            assert len(set(ids)) == JOBS

            while True:
                counts = await _status_counts(pg)
                if sum(counts[s] for s in ("completed", "failed", "canceled")) >= JOBS:
                    break
                assert time.monotonic() - started < DEADLINE_S, f"{counts}\n{_logs(logs)}"
                await asyncio.sleep(0.1)

            # Every video completed, as the API reports it.
            videos = await asyncio.gather(*(client.get(f"/v1/videos/{i}") for i in ids))
            statuses = Counter(v.json()["status"] for v in videos)
            assert statuses == Counter({"completed": JOBS}), f"{statuses}\n{_logs(logs)}"

            # Each output stored once: one video.mp4 per job, under its own prefix, and
            # nothing else in the bucket. Delivery is at least once: a worker that takes
            # over a step (after a kill, or a lease that lapsed under load) downloads
            # and uploads again, to the same key. The bucket is versioned, so such
            # rewrites show: a video must be the same bytes every time.
            etags: dict[str, set[str]] = defaultdict(set)
            pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
            for page in await asyncio.to_thread(list, pages):
                for version in page.get("Versions", []):
                    etags[version["Key"]].add(version["ETag"])
                assert not page.get("DeleteMarkers"), page["DeleteMarkers"]
            prefix = f"tenants/{tenant_id}/jobs/"
            assert all(k.startswith(prefix) for k in etags), sorted(etags)
            names_by_job: dict[str, set[str]] = defaultdict(set)
            for object_key in etags:
                job_id, _, name = object_key.removeprefix(prefix).partition("/")
                names_by_job[job_id].add(name)
            assert sorted(names_by_job) == sorted(ids)
            assert all(names == names_by_job[ids[0]] for names in names_by_job.values())
            assert "video.mp4" in names_by_job[ids[0]]
            # (The provenance manifest names its delivery, so a rewrite of it differs.)
            rewritten = {k: e for k, e in etags.items() if len(e) > 1 and k.endswith("/video.mp4")}
            assert rewritten == {}, f"a video was stored with different bytes: {rewritten}"

            # What the API streams is what the bucket holds.
            for job_id in ids[:: JOBS // 5]:
                response = await client.get(f"/v1/videos/{job_id}/content")
                assert response.status_code == 200
                stored = s3.get_object(
                    Bucket=bucket, Key=f"tenants/{tenant_id}/jobs/{job_id}/video.mp4"
                )["Body"].read()
                assert response.content == stored
                assert stored[4:8] == b"ftyp"

        attempt_rows = await pg.fetch(
            "SELECT job_id, idempotency_key, state FROM attempts ORDER BY job_id, number"
        )
    finally:
        await pg.close()

    for proc in [api, *workers[1:], replacement]:
        proc.send_signal(signal.SIGTERM)
    for proc in [api, *workers[1:], replacement]:
        assert proc.wait(timeout=30) == 0, _logs(logs)

    # One succeeded attempt per job (the kill cost no regeneration).
    succeeded = Counter(str(r["job_id"]) for r in attempt_rows if r["state"] == "succeeded")
    assert succeeded == Counter(dict.fromkeys(ids, 1))

    # The provider's side: one submission per attempt. A key is submitted twice only if
    # the killed worker submitted it and died before recording the provider's job id:
    # the replacement then re-submits with the same key (which a provider deduplicates).
    calls: list[dict[str, Any]] = [
        json.loads(line)
        for line in (home / "instant-provider" / "calls.log").read_text().splitlines()
    ]
    submits: dict[str, list[int]] = defaultdict(list)
    for call in calls:
        if call["call"] == "submit":
            submits[call["id"]].append(int(call["pid"]))
    assert set(submits) == {str(r["idempotency_key"]) for r in attempt_rows}
    for idem_key, submitters in submits.items():
        if len(submitters) > 1:
            assert len(submitters) == 2, (idem_key, submitters)
            assert submitters[0] == victim.pid, (idem_key, submitters)
    resubmitted = sum(len(p) > 1 for p in submits.values())
    assert resubmitted <= WORKER_CONCURRENCY
    # The work really was shared, and the killed worker had taken part before it died.
    callers = {int(c["pid"]) for c in calls}
    assert victim.pid in callers
    assert replacement.pid in callers
    assert {w.pid for w in workers} <= callers
