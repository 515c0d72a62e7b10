"""``POST /v1/hooks/{provider}``: webhooks from providers, verified by their signatures."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vidpipe.api.body import read_limited
from vidpipe.core.runtime import Runtime
from vidpipe.errors import NotFound
from vidpipe.store import webhooks_in

router = APIRouter(tags=["webhooks"])

MAX_WEBHOOK_BYTES = 1024 * 1024


@router.post(
    "/v1/hooks/{provider}",
    responses={
        401: {"description": "The signature does not verify."},
        413: {"description": "Body over 1 MiB."},
    },
)
async def provider_webhook(
    provider: str, request: Request, attempt: str | None = None
) -> JSONResponse:
    """Verify, deduplicate, and make the affected step poll its provider at once.

    Answers 2xx for every verified delivery (also duplicates and unknown jobs) so the
    provider stops retrying; 401 when the signature does not verify.
    """
    runtime: Runtime = request.app.state.runtime
    adapter = runtime.registry.get(provider)
    if adapter is None:
        raise NotFound(f"no provider {provider!r}", code="provider_not_found")
    body = await read_limited(request, MAX_WEBHOOK_BYTES)
    headers = {k.lower(): v for k, v in request.headers.items()}
    now = runtime.clock.now()
    event = adapter.parse_webhook(headers, body, now)
    async with runtime.db.write() as conn:
        first = await webhooks_in.record_receipt(
            conn, provider, event.event_id, event.provider_job_id, now
        )
        hurried = (
            await webhooks_in.hurry_steps(
                conn, provider, event.provider_job_id, now, attempt_id=attempt
            )
            if first
            else []
        )
        known = await webhooks_in.is_known_job(conn, provider, event.provider_job_id)
        if hurried:
            await runtime.db.notify(conn)
    if hurried:
        runtime.wake()
    return JSONResponse(
        {"received": True, "duplicate": not first, "matched": known, "steps": len(hurried)}
    )
