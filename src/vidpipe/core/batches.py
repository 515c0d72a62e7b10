"""Batches: many video requests at once, each a job with its own idempotency.

Each item is created through the same path as a single request (validation,
admission, budgets); an item that is refused is recorded with its error and does not
stop the others. An item's idempotency key is its own ``idempotency_key`` or, by
default, the batch's key and the item's position, so a retried batch upload makes
each video once.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select

from vidpipe.core.requests import parse_create_video
from vidpipe.core.videos import VideoService
from vidpipe.errors import InvalidRequest, NotFound, VidpipeError
from vidpipe.ids import new_id
from vidpipe.store import jobs as job_q
from vidpipe.store.schema import batches, jobs

MAX_ITEMS = 1000


@dataclass(frozen=True)
class BatchView:
    id: str
    total: int
    created_at: float
    items: list[dict[str, Any]]
    metadata: dict[str, Any]


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"line {number} is not JSON: {exc.msg}", code="invalid_jsonl", param="file"
            ) from None
        if not isinstance(item, dict):
            raise InvalidRequest(f"line {number} is not an object", code="invalid_jsonl")
        items.append(item)
    return items


async def create_batch(
    videos: VideoService,
    tenant_id: str,
    requests: list[dict[str, Any]],
    *,
    idempotency_key: str | None,
    metadata: dict[str, Any],
) -> BatchView:
    if not requests:
        raise InvalidRequest("a batch needs at least one request", code="empty_batch")
    if len(requests) > MAX_ITEMS:
        raise InvalidRequest(f"at most {MAX_ITEMS} requests per batch", code="batch_too_large")
    batch_id = new_id("batch")
    base_key = idempotency_key or batch_id
    items: list[dict[str, Any]] = []
    for index, raw in enumerate(requests):
        body = dict(raw)
        key = str(body.pop("idempotency_key", None) or f"{base_key}:{index}")
        try:
            created = await videos.create(
                tenant_id, parse_create_video(body), key, batch_id=batch_id
            )
            items.append({"index": index, "video_id": created.job.id, "error": None})
        except VidpipeError as exc:
            items.append(
                {
                    "index": index,
                    "video_id": None,
                    "error": {"code": exc.code, "message": exc.message, "param": exc.param},
                }
            )
    now = videos.clock.now()
    async with videos.db.write() as conn:
        await conn.execute(
            insert(batches).values(
                id=batch_id,
                tenant_id=tenant_id,
                total=len(items),
                items=items,
                metadata=metadata,
                created_at=now,
            )
        )
    return BatchView(batch_id, len(items), now, items, metadata)


async def get_batch(videos: VideoService, tenant_id: str | None, batch_id: str) -> BatchView:
    async with videos.db.read() as conn:
        query = select(batches).where(batches.c.id == batch_id)
        if tenant_id is not None:
            query = query.where(batches.c.tenant_id == tenant_id)
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise NotFound(f"no batch {batch_id!r}", code="batch_not_found")
    return BatchView(row["id"], row["total"], row["created_at"], row["items"], row["metadata"])


async def batch_status(videos: VideoService, batch: BatchView) -> dict[str, Any]:
    """Progress and a summary: counts by status, mean progress, spend."""
    ids = [i["video_id"] for i in batch.items if i["video_id"]]
    async with videos.db.read() as conn:
        rows = (
            await conn.execute(
                select(jobs.c.id, jobs.c.status, jobs.c.progress).where(jobs.c.id.in_(ids))
            )
        ).all()
    money = await videos.costs(ids)
    counts = Counter(r[1] for r in rows)
    refused = sum(1 for i in batch.items if i["error"])
    done = sum(counts[s] for s in ("completed", "failed", "canceled", "expired"))
    progress = (sum(int(r[2]) for r in rows) + 100 * refused) / max(batch.total, 1)
    return {
        "id": batch.id,
        "object": "batch",
        "total": batch.total,
        "refused": refused,
        "counts": dict(counts),
        "progress": int(progress),
        "finished": done + refused == batch.total,
        "cost": {"actual": sum(a for _r, a in money.values()) / 1_000_000, "currency": "USD"},
        "created_at": int(batch.created_at),
        "metadata": batch.metadata,
    }


async def batch_report(videos: VideoService, batch: BatchView, fmt: str) -> str:
    """One row per item: index, video, status, error, cost, content URL."""
    money = await videos.costs([i["video_id"] for i in batch.items if i["video_id"]])
    rows = []
    for item in batch.items:
        vid = item["video_id"]
        job = None
        if vid:
            async with videos.db.read() as conn:
                job = await job_q.get_job(conn, vid)
        error = item["error"] or (
            {"code": job.error_code, "message": job.error_message}
            if job and job.error_code
            else None
        )
        rows.append(
            {
                "index": item["index"],
                "video_id": vid,
                "status": job.status if job else "refused",
                "error_code": (error or {}).get("code"),
                "error_message": (error or {}).get("message"),
                "cost_usd": money.get(vid, (0, 0))[1] / 1_000_000 if vid else 0.0,
                "content_url": f"/v1/videos/{vid}/content"
                if job and job.status == "completed"
                else None,
            }
        )
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["index"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
