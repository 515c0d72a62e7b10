"""Live progress: Server-Sent Events of a job, or of all a tenant's jobs.

Events come from the events table (every state change writes one in its own
transaction), so the stream shows the backend's truth whichever process made the
change. ``Last-Event-ID`` resumes where a dropped connection stopped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from vidpipe.api.auth import Principal, principal
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.store.records import Event
from vidpipe.store.schema import events

router = APIRouter(tags=["events"])
Caller = Annotated[Principal, Depends(principal)]

POLL_S = 0.25
KEEPALIVE_S = 15.0
TERMINAL_EVENTS = {f"video.{s.value}" for s in JobStatus if s.terminal} | {"video.deleted"}


def _frame(event: Event) -> str:
    data = {
        "id": event.id,
        "video_id": event.job_id,
        "type": event.type,
        "created_at": event.created_at,
        "data": event.data,
    }
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(data)}\n\n"


async def _stream(
    request: Request, tenant_id: str, job_id: str | None, after: int, *, end_on_terminal: bool
) -> AsyncIterator[str]:
    runtime: Runtime = request.app.state.runtime
    yield f"retry: 2000\n: vidpipe events{' of ' + job_id if job_id else ''}\n\n"
    idle = 0.0
    while True:
        query = (
            select(events)
            .where(events.c.tenant_id == tenant_id, events.c.id > after)
            .order_by(events.c.id)
            .limit(200)
        )
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        async with runtime.db.read() as conn:
            batch = [Event.from_row(r) for r in (await conn.execute(query)).mappings()]
        for event in batch:
            after = event.id
            yield _frame(event)
            if end_on_terminal and event.type in TERMINAL_EVENTS:
                return
        if batch:
            idle = 0.0
            continue
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
        idle += POLL_S
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield ": keep-alive\n\n"


def _response(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/videos/{video_id}/events")
async def video_events(
    video_id: str,
    request: Request,
    caller: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every event of the video as it happens; the stream ends after the final one."""
    runtime: Runtime = request.app.state.runtime
    await runtime.videos.get(caller.tenant_id, video_id)  # 404 for others' videos
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return _response(_stream(request, caller.tenant_id, video_id, after, end_on_terminal=True))


@router.get("/v1/events")
async def tenant_events(
    request: Request,
    caller: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events of all the caller's videos, from now (or after Last-Event-ID)."""
    runtime: Runtime = request.app.state.runtime
    if last_event_id and last_event_id.isdigit():
        after = int(last_event_id)
    else:
        async with runtime.db.read() as conn:
            after = int(await conn.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)
    return _response(_stream(request, caller.tenant_id, None, after, end_on_terminal=False))
