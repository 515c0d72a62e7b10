"""``/v1/jobs`` (custom plans), ``/v1/videos/{id}/retry`` and ``/v1/videos/{id}/steps``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vidpipe.api.auth import Principal, principal
from vidpipe.api.body import read_object
from vidpipe.api.schemas import VideoObject
from vidpipe.core.runtime import Runtime
from vidpipe.errors import InvalidRequest, NotFound
from vidpipe.plans.service import PlanRequest
from vidpipe.plans.shorts import CreateShort, build_short
from vidpipe.plans.spec import PlanStep
from vidpipe.shorts import templates as tpl
from vidpipe.store import steps as step_q
from vidpipe.store.records import Job

router = APIRouter(tags=["plans"])
Caller = Annotated[Principal, Depends(principal)]
POLL_AFTER_MS = "1000"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=48, description="Unique in the plan; [a-z0-9_].")
    kind: str = Field(min_length=1, max_length=32, description="See GET /v1/step-kinds.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description='Values, or {"$ref": "<step>[.<path>]"} to use another step\'s output.',
    )
    after: list[str] = Field(default_factory=list, max_length=200)
    weight: float | None = Field(default=None, gt=0, le=1000)


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[StepIn] = Field(min_length=1, max_length=200)
    output: str | None = Field(default=None, description="The step whose video is the result.")
    title: str | None = Field(default=None, max_length=2000)
    metadata: dict[str, str] = Field(default_factory=dict)
    max_cost_usd: float | None = Field(default=None, ge=0)
    derivatives: list[Literal["spritesheet", "hls"]] = Field(default_factory=list)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16:
            raise ValueError("at most 16 metadata keys")
        for key, item in value.items():
            if not 1 <= len(key) <= 64 or len(item) > 512:
                raise ValueError("metadata keys are 1-64 characters, values at most 512")
        return value


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate a body, turning the first problem into a specific error code."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"unknown parameter {place!r}", code="unknown_parameter", param=place
            ) from None
        if first["type"] == "missing":
            raise InvalidRequest(
                f"{place} is required", code="missing_parameter", param=place
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"{place}: {message}", code="invalid_request", param=place) from None


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidRequest(
            "Idempotency-Key must not be empty", code="invalid_idempotency_key", http_status=400
        )


async def accepted(runtime: Runtime, job: Job, replayed: bool) -> JSONResponse:
    headers = {"openai-poll-after-ms": POLL_AFTER_MS, "Location": f"/v1/videos/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    money = await runtime.videos.costs([job.id])
    body = VideoObject.from_job(job, money.get(job.id, (0, 0))).model_dump(mode="json")
    body["steps"] = await steps_view(runtime, job.id)
    return JSONResponse(body, status_code=202, headers=headers)


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=VideoObject,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateJob.model_json_schema()}},
        }
    },
    responses={409: {"description": "conflict"}, 422: {"description": "invalid plan"}},
)
async def create_job(
    request: Request,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Queue a custom plan: a DAG of steps whose params may reference earlier outputs.

    Checked before anything runs: unknown kinds, cycles, references to missing steps
    and bad params are 422s with a specific ``code``.
    """
    runtime = _runtime(request)
    _check_key(idempotency_key)
    data = await read_object(request, runtime.settings.max_body_bytes)
    body: CreateJob = parse_body(CreateJob, data)
    plan = PlanRequest(
        steps=tuple(
            PlanStep(s.name, s.kind, s.params, tuple(s.after), s.weight) for s in body.steps
        ),
        output=body.output,
        kind="plan",
        title=body.title,
        metadata=body.metadata,
        max_cost_usd=body.max_cost_usd,
        derivatives=tuple(body.derivatives),
        original=body.model_dump(mode="json"),
    )
    created = await runtime.plans.create(caller.tenant_id, plan, idempotency_key)
    return await accepted(runtime, created.job, created.replayed)


@router.post(
    "/v1/shorts",
    status_code=202,
    response_model=VideoObject,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateShort.model_json_schema()}},
        }
    },
    responses={409: {"description": "conflict"}, 422: {"description": "invalid request"}},
)
async def create_short(
    request: Request,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Queue a faceless short: topic (or your script) in, a finished video out.

    A job like any other, with its per-scene steps visible in ``steps``.
    """
    runtime = _runtime(request)
    _check_key(idempotency_key)
    data = await read_object(request, runtime.settings.max_body_bytes)
    body: CreateShort = parse_body(CreateShort, data)
    plan = build_short(body, runtime.settings, runtime.registry)
    created = await runtime.plans.create(caller.tenant_id, plan, idempotency_key)
    return await accepted(runtime, created.job, created.replayed)


@router.get("/v1/templates")
async def list_templates(caller: Caller) -> dict[str, Any]:
    """The short templates: scene structure, pacing, caption style, look and defaults."""
    return {"object": "list", "data": [t.public_dict() for t in tpl.list_templates()]}


@router.get("/v1/templates/{name}")
async def get_template(name: str, caller: Caller) -> dict[str, Any]:
    try:
        return tpl.get_template(name).public_dict()
    except tpl.UnknownTemplate as exc:
        raise NotFound(exc.message, code="unknown_template", param="name") from None


@router.get("/v1/step-kinds")
async def step_kinds(caller: Caller) -> dict[str, Any]:
    """The step kinds a plan may use, with the JSON schema of their params."""
    from vidpipe.plans.kinds import KINDS

    return {
        "object": "list",
        "data": [
            {
                "kind": name,
                "runs": "vidpipe" if spec.local else "provider",
                "output": spec.output,
                "params": spec.params.model_json_schema(),
            }
            for name, spec in KINDS.items()
        ],
    }


@router.post("/v1/videos/{video_id}/retry", status_code=202, response_model=VideoObject)
async def retry_video(video_id: str, request: Request, caller: Caller) -> JSONResponse:
    """Run a failed video again from its failed steps; succeeded steps are reused."""
    runtime = _runtime(request)
    job = await runtime.plans.retry(caller.tenant_id, video_id)
    return await accepted(runtime, job, False)


@router.get("/v1/videos/{video_id}/steps")
async def list_steps(video_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """The video's plan: each step's kind, state, progress, output and error."""
    runtime = _runtime(request)
    job = await runtime.videos.get(caller.tenant_id, video_id)
    if job is None:
        raise NotFound(f"no video {video_id!r}", code="video_not_found", param="video_id")
    return {"object": "list", "video_id": job.id, "data": await steps_view(runtime, job.id)}


async def steps_view(runtime: Runtime, job_id: str) -> list[dict[str, Any]]:
    async with runtime.db.read() as conn:
        plan = await step_q.steps_of_job(conn, job_id)
    names = {s.id: s.name for s in plan}
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "state": s.state,
            "progress": s.progress,
            "model": s.model if s.provider == "vidpipe" else f"{s.provider}/{s.model}",
            "depends_on": [names.get(d, d) for d in s.depends_on],
            "attempts": s.attempt_count,
            "output": _public_output(s.output),
            "error": {"code": s.error_code, "message": s.error_message} if s.error_code else None,
        }
        for s in plan
    ]


def _public_output(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """Outputs without storage keys (files are served through the video's content)."""
    if output is None:
        return None
    hidden = {"key", "asset_id", "path"}
    return {
        key: (_public_output(value) if isinstance(value, dict) else value)
        for key, value in output.items()
        if key not in hidden
    }
