"""Checks shared by the chaos test and the chaos benchmark: after a storm of failures
and killed workers, is every job where it should be?"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vidpipe.core.retry import RetryPolicy
from vidpipe.core.runtime import Runtime
from vidpipe.media.probe import probe
from vidpipe.media.validate import Expectation, validate_basic
from vidpipe.providers.simulated import Outcome, SimulatedProvider
from vidpipe.store import steps as step_q

# What the executor records for each simulated outcome of a job that got that far.
EXPECTED_CLASS = {
    Outcome.FAILED: "generation",
    Outcome.CONTENT_POLICY: "permanent",
    Outcome.CORRUPT: "quality",
    Outcome.TRUNCATED: "quality",
    Outcome.WRONG_RESOLUTION: "quality",
    Outcome.EXPIRED: "generation",
    Outcome.HANG: "permanent",
}


@dataclass
class ChaosReport:
    jobs: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    attempts_by_class: Counter[str] = field(default_factory=Counter)
    # What the provider planned for each attempt it accepted (the storm's real content).
    planned_by_class: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def audit(
    runtime: Runtime, provider: SimulatedProvider, job_ids: list[str], policy: RetryPolicy
) -> ChaosReport:
    report = ChaosReport(jobs=len(job_ids))
    seen_provider_jobs: dict[str, str] = {}
    for job_id in job_ids:
        job = await runtime.videos.get(None, job_id)
        report.by_status[job.status] += 1
        async with runtime.db.read() as conn:
            tries = await step_q.attempts_of_job(conn, job_id)
        report.attempts += len(tries)
        classes = Counter(a.error_class for a in tries if a.error_class)
        report.attempts_by_class.update(classes)
        if job.status not in ("completed", "failed"):
            report.problems.append(f"{job_id}: ended {job.status}")
            continue
        for a in tries:
            if a.provider_job_id is None:
                continue
            other = seen_provider_jobs.setdefault(a.provider_job_id, a.id)
            if other != a.id:
                report.problems.append(f"provider job {a.provider_job_id} used by two attempts")
            planned = provider.plan(a.provider_job_id).outcome
            if a.state in ("succeeded", "failed"):
                report.planned_by_class[EXPECTED_CLASS.get(planned, "ok")] += 1
            if a.state == "succeeded" and planned is not Outcome.OK:
                report.problems.append(f"{a.id}: succeeded though planned {planned}")
            if a.error_class in ("quality", "generation") and planned is Outcome.OK:
                report.problems.append(f"{a.id}: {a.error_class} though planned success")
            want = EXPECTED_CLASS.get(planned)
            if a.state == "failed" and want and a.error_class not in (want, "transient"):
                report.problems.append(
                    f"{a.id}: {a.error_class} {a.error_code}, expected {want} ({planned})"
                )
        budgets = {
            "quality": policy.quality_regenerations + 1,
            "generation": policy.generation_resubmits + 1,
            "transient": len(policy.transient_delays_s) + 1,
        }
        for cls, budget in budgets.items():
            if classes[cls] > budget:
                report.problems.append(f"{job_id}: {classes[cls]} {cls} failures > {budget}")
        succeeded = [a for a in tries if a.state == "succeeded"]
        if (job.status == "completed") != bool(succeeded):
            report.problems.append(f"{job_id}: {job.status} with {len(succeeded)} successes")
        if job.status == "completed":
            report.problems += await _check_delivered(runtime, job_id, job.size, job.seconds)
    return report


async def _check_delivered(runtime: Runtime, job_id: str, size: str, seconds: int) -> list[str]:
    """Nothing bad is delivered: the stored file itself passes the checks again."""
    asset = await runtime.videos.video_asset(None, job_id)
    path = runtime.blobs.local_path(asset.key)
    if path is None or not await asyncio.to_thread(Path(path).is_file):
        return [f"{job_id}: completed without a stored file"]
    width, height = (int(v) for v in size.split("x"))
    info = await asyncio.to_thread(probe, path)
    verdict = validate_basic(info, Expectation(width, height, float(seconds)))
    return [] if verdict.ok else [f"{job_id}: delivered a bad output: {verdict.reason}"]
