"""Health, readiness and the model catalogue."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from vidpipe.api.schemas import ModelList, ModelObject
from vidpipe.core.runtime import Runtime

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    try:
        async with runtime.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    runtime: Runtime = request.app.state.runtime
    return ModelList(
        data=[
            ModelObject(
                id=f"{p.name}/{m.id}",
                provider=p.name,
                sizes=list(m.sizes),
                min_seconds=m.min_seconds,
                max_seconds=min(m.max_seconds, runtime.settings.max_video_seconds),
                kinds=list(m.kinds),
            )
            for p in runtime.registry.providers()
            for m in p.models()
        ]
    )
