"""The public shape of a video job, shared by the API and outbound webhooks."""

from __future__ import annotations

from typing import Any

from vidpipe.core.states import JobStatus
from vidpipe.money.units import to_usd
from vidpipe.store.records import Job


def video_object(job: Job, money: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """The OpenAI Videos object of ``job`` plus vidpipe's fields; ``money`` is
    (reserved, actual) micro-dollars."""
    reserved, actual = money
    return {
        "id": job.id,
        "object": "video",
        "status": job.status,
        "progress": job.progress,
        "created_at": int(job.created_at),
        "completed_at": int(job.completed_at) if job.completed_at else None,
        "expires_at": int(job.expires_at) if job.expires_at else None,
        "model": job.model,
        "prompt": job.prompt,
        "seconds": str(job.seconds),
        "size": job.size,
        "seed": job.seed,
        "metadata": job.metadata,
        "remixed_from_video_id": None,
        "error": (
            {"code": job.error_code, "message": job.error_message or job.error_code}
            if job.error_code and job.status != JobStatus.COMPLETED.value
            else None
        ),
        "review": (
            {"state": job.review_state, "reason": job.review_reason} if job.review_state else None
        ),
        "cost": {
            "estimated": to_usd(job.estimated_micros),
            "reserved": to_usd(reserved),
            "actual": to_usd(actual),
            "currency": "USD",
        },
    }
