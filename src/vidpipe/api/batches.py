"""``/v1/batches``: many videos at once (JSON list or a JSONL upload)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import UploadFile

from vidpipe.api.auth import Principal, principal
from vidpipe.api.body import read_limited
from vidpipe.core import batches
from vidpipe.core.runtime import Runtime
from vidpipe.errors import InvalidRequest

router = APIRouter(prefix="/v1/batches", tags=["batches"])
Caller = Annotated[Principal, Depends(principal)]
MAX_BATCH_BYTES = 4 * 1024 * 1024


@router.post("", status_code=202)
async def create_batch(
    request: Request,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """JSON ``{"requests": [...], "metadata": {}}``, or multipart with a JSONL ``file``.

    Each request is created like ``POST /v1/videos``; refused ones are listed with
    their errors and do not stop the rest.
    """
    runtime: Runtime = request.app.state.runtime
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    metadata: dict[str, Any] = {}
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_part_size=MAX_BATCH_BYTES) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest(
                    "upload the requests as a JSONL file field", code="missing_file"
                )
            items = batches.parse_jsonl((await upload.read()).decode("utf-8", "replace"))
    else:
        raw = await read_limited(request, MAX_BATCH_BYTES)
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidRequest(
                "the body is not valid JSON", code="invalid_json", http_status=400
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise InvalidRequest('send {"requests": [...]}', code="invalid_body")
        items = body["requests"]
        metadata = body.get("metadata") or {}
        if not all(isinstance(i, dict) for i in items):
            raise InvalidRequest("every request must be an object", code="invalid_body")
    batch = await batches.create_batch(
        runtime.videos,
        caller.tenant_id,
        items,
        idempotency_key=idempotency_key,
        metadata=metadata,
    )
    status = await batches.batch_status(runtime.videos, batch)
    return JSONResponse({**status, "items": batch.items}, status_code=202)


@router.get("/{batch_id}")
async def get_batch(batch_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    batch = await batches.get_batch(runtime.videos, caller.tenant_id, batch_id)
    return {**await batches.batch_status(runtime.videos, batch), "items": batch.items}


@router.get("/{batch_id}/report")
async def batch_report(
    batch_id: str, request: Request, caller: Caller, format: Literal["csv", "jsonl"] = "csv"
) -> PlainTextResponse:
    runtime: Runtime = request.app.state.runtime
    batch = await batches.get_batch(runtime.videos, caller.tenant_id, batch_id)
    text = await batches.batch_report(runtime.videos, batch, format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return PlainTextResponse(text, media_type=media)
