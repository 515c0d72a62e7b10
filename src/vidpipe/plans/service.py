"""Creating plan jobs and retrying failed jobs from their failed steps.

A plan job is a row in ``jobs`` (so ``/v1/videos/{id}`` shows it like any video) with
one ``steps`` row per plan step. Everything is checked before the transaction that
inserts them: structure, params, moderation, URLs and prices. Only ``clip`` steps cost
money; their estimate is held at admission like a single video's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from vidpipe.core import events
from vidpipe.core.states import RETRYABLE_STEP_STATES, JobStatus, StepState
from vidpipe.core.videos import Created, VideoService, replay
from vidpipe.errors import Conflict, InvalidRequest, NotFound
from vidpipe.ids import new_id
from vidpipe.money import admission
from vidpipe.money.estimate import estimate_video
from vidpipe.money.prices import price_for
from vidpipe.notify import alerts
from vidpipe.plans import kinds as k
from vidpipe.plans.runner import FINAL
from vidpipe.plans.spec import PlanError, PlanStep, check_structure, contains_ref, resolve
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store.records import Job, Step
from vidpipe.store.schema import steps

# Strings of these params are what a plan says or shows: moderated like prompts.
_MODERATED = ("prompt", "topic", "text", "scenes", "messages")
_URL_PARAMS = ("url",)


@dataclass(frozen=True)
class PlanRequest:
    steps: tuple[PlanStep, ...]
    output: str | None = None
    kind: str = "plan"
    # What the job is about (shown as the video's prompt): a topic, or a summary.
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    max_cost_usd: float | None = None
    derivatives: tuple[str, ...] = ()
    # What the request said, for the job's params and the idempotency hash.
    original: dict[str, Any] = field(default_factory=dict)


class PlanService:
    def __init__(self, videos: VideoService) -> None:
        self.videos = videos

    # -- create ------------------------------------------------------------------

    def check(self, request: PlanRequest) -> tuple[str, list[str]]:
        """The output step's name and a topological order, or a 422 saying what is wrong."""
        order = check_structure(request.steps, k.KINDS)
        for index, step in enumerate(request.steps):
            if any(key.startswith("_") for key in step.params):
                raise PlanError(
                    "param names starting with _ are reserved",
                    code="invalid_step_params",
                    param=f"steps[{index}].params",
                )
            k.check_params(step.kind, step.params, f"steps[{index}].params")
            if step.kind == "clip":
                for name in ("model", "seconds", "size"):
                    # What a clip costs is known before it runs: these are values.
                    if contains_ref(step.params.get(name)):
                        raise PlanError(
                            f"a clip's {name} must be given as a value, not a reference",
                            code="invalid_step_params",
                            param=f"steps[{index}].params.{name}",
                        )
                model = str(step.params["model"])
                self.videos.registry.resolve(model, param=f"steps[{index}].params.model")
        depended = {dep for step in request.steps for dep in step.depends_on()}
        if request.output is not None:
            output = request.output
            if output not in {s.name for s in request.steps}:
                raise PlanError(
                    f"output {output!r} is not a step of the plan",
                    code="invalid_plan_output",
                    param="output",
                )
        else:
            sinks = [s.name for s in request.steps if s.name not in depended]
            if len(sinks) != 1:
                raise PlanError(
                    f"the plan ends in {len(sinks)} steps ({', '.join(sinks)}); name the one "
                    "whose video is the result in output",
                    code="invalid_plan_output",
                    param="output",
                )
            output = sinks[0]
        final = next(s for s in request.steps if s.name == output)
        if k.KINDS[final.kind].output != "video":
            raise PlanError(
                f"the output step {output!r} is a {final.kind}, which makes no video",
                code="invalid_plan_output",
                param="output",
            )
        return output, order

    async def create(
        self, tenant_id: str, request: PlanRequest, idempotency_key: str | None = None
    ) -> Created:
        output, _ = self.check(request)
        svc = self.videos
        texts = [s for step in request.steps for s in _strings(step.params, _MODERATED)]
        await svc.moderator.check([*texts, *(request.title or "",), *request.metadata.values()])
        for step in request.steps:
            for url in _strings(step.params, _URL_PARAMS):
                await svc.guard.check(url)
        body_hash = hashlib.sha256(
            json.dumps(request.original, sort_keys=True, default=str).encode()
        ).hexdigest()
        for _ in range(3):
            try:
                return await self._create_once(
                    tenant_id, request, output, body_hash, idempotency_key
                )
            except IntegrityError:
                if idempotency_key is None:
                    raise
        raise Conflict("concurrent requests with one Idempotency-Key", code="idempotency_race")

    async def _create_once(
        self,
        tenant_id: str,
        request: PlanRequest,
        output: str,
        body_hash: str,
        idempotency_key: str | None,
    ) -> Created:
        svc = self.videos
        now = svc.clock.now()
        async with svc.db.write() as conn:
            not_before = now - svc.settings.idempotency_ttl_s
            if idempotency_key is not None:
                replayed = await replay(conn, tenant_id, idempotency_key, body_hash, not_before)
                if replayed is not None:
                    return Created(replayed, replayed=True)
            limits = await admission.tenant_limits(conn, tenant_id)
            per_attempt = expected = 0
            for index, step in enumerate(request.steps):
                if step.kind != "clip":
                    continue
                fields = k.ClipParams.model_fields
                model = str(step.params["model"])
                seconds = int(step.params.get("seconds", fields["seconds"].default))
                size = str(step.params.get("size", fields["size"].default))
                width, height = k.parse_size(size)
                admission.check_request(limits, seconds=seconds, width=width, height=height)
                price = await price_for(conn, svc.prices, model)
                if price is None:
                    raise InvalidRequest(
                        f"no price is configured for {model}",
                        code="price_unknown",
                        param=f"steps[{index}].params.model",
                    )
                estimate = estimate_video(
                    price,
                    seconds=seconds,
                    width=width,
                    height=height,
                    policy=svc.policy_for(model.partition("/")[0]),
                )
                per_attempt += estimate.per_attempt_micros
                expected += estimate.expected_micros
            max_cost = admission.max_cost_micros(request.max_cost_usd, limits)
            job, rows = self._rows(tenant_id, request, output, now)
            job = _replace(job, estimated_micros=expected, max_cost_micros=max_cost)
            await job_q.insert_job(conn, job)
            for row in rows:
                await step_q.insert_step(conn, row)
            crossings = await admission.admit(
                svc.db,
                conn,
                tenant_id=tenant_id,
                job_id=job.id,
                hold_micros=per_attempt,
                max_cost_micros=max_cost,
                limits=limits,
                now=now,
            )
            await alerts.budget_crossings(conn, svc.settings.alert_channels, crossings, now)
            await events.record(
                conn,
                job_id=job.id,
                tenant_id=tenant_id,
                type="video.queued",
                data={"status": job.status, "model": job.model, "steps": len(rows)},
                now=now,
            )
            if idempotency_key is not None:
                await job_q.save_idempotency_key(
                    conn,
                    tenant_id,
                    idempotency_key,
                    body_hash,
                    job.id,
                    now,
                    expired_before=not_before,
                )
            await svc.db.notify(conn)
        svc.wake()
        return Created(job, replayed=False)

    def _rows(
        self, tenant_id: str, request: PlanRequest, output: str, now: float
    ) -> tuple[Job, list[Step]]:
        job_id = new_id("video")
        ids = {step.name: new_id("step") for step in request.steps}
        final = next(s for s in request.steps if s.name == output)
        size = _output_size(request.steps, final)
        rows: list[Step] = []
        for step in request.steps:
            spec = k.KINDS[step.kind]
            if spec.local:
                provider, model = k.LOCAL_PROVIDER, step.kind
            else:
                provider, _, model = str(step.params["model"]).partition("/")
            params: dict[str, Any] = {**step.params, FINAL: step.name == output}
            if step.name == output:
                params["_derivatives"] = list(request.derivatives)
                params["_prompt"] = request.title or ""
            if step.kind == "clip":
                # What the provider machinery reads (prompt, seconds, size, seed).
                params.setdefault("seconds", 4)
                params.setdefault("size", "720x1280")
                params.setdefault("seed", None)
                params.setdefault("derivatives", list(request.derivatives))
            deps = step.depends_on()
            rows.append(
                Step(
                    id=ids[step.name],
                    job_id=job_id,
                    tenant_id=tenant_id,
                    name=step.name,
                    kind=step.kind,
                    state=(StepState.PENDING if deps else StepState.READY).value,
                    provider=provider,
                    model=model,
                    params=params,
                    depends_on=[ids[d] for d in deps],
                    fallbacks=[],
                    deadline_at=None,
                    weight=step.weight if step.weight is not None else spec.weight,
                    progress=0,
                    run_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_token=0,
                    attempt_count=0,
                    poll_errors=0,
                    output=None,
                    error_code=None,
                    error_message=None,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )
        seconds = request.original.get("target_seconds") or sum(
            int(s.params.get("seconds") or 0) for s in request.steps if s.kind == "clip"
        )
        job = Job(
            id=job_id,
            tenant_id=tenant_id,
            kind=request.kind,
            status=JobStatus.QUEUED.value,
            progress=0,
            model=f"{k.LOCAL_PROVIDER}/{final.kind}"
            if k.KINDS[final.kind].local
            else str(final.params["model"]),
            prompt=request.title,
            seconds=int(seconds or 0),
            size=size,
            seed=None,
            params={**request.original, "output": output},
            metadata=dict(request.metadata),
            error_code=None,
            error_message=None,
            created_at=now,
            started_at=None,
            completed_at=None,
            expires_at=None,
            deleted_at=None,
        )
        return job, rows

    # -- retry -------------------------------------------------------------------

    async def retry(self, tenant_id: str | None, job_id: str) -> Job:
        """Queue a failed job again: its failed, expired and canceled steps run again;
        every step that succeeded keeps its output (and is not paid for again)."""
        svc = self.videos
        now = svc.clock.now()
        async with svc.db.write() as conn:
            job = await job_q.get_job(conn, job_id, tenant_id)
            if job is None or job.deleted_at is not None:
                raise NotFound(f"no video {job_id!r}", code="video_not_found", param="video_id")
            if job.status != JobStatus.FAILED.value:
                raise Conflict(
                    f"video {job_id} is {job.status}; only failed videos can be retried",
                    code="video_not_retryable",
                )
            await svc.db.lock_for(conn, f"vidpipe.plan.{job_id}")
            plan = await step_q.steps_of_job(conn, job_id)
            retryable = {s.value for s in RETRYABLE_STEP_STATES}
            again = [s for s in plan if s.state in retryable]
            if not again:
                raise Conflict(
                    f"video {job_id} has no failed step to run again", code="video_not_retryable"
                )
            done = {s.id for s in plan if s.state == StepState.SUCCEEDED.value}
            outputs = {s.name: s.output for s in plan if s.output is not None}
            for step in again:
                ready = all(dep in done for dep in step.depends_on)
                values: dict[str, Any] = {
                    "state": (StepState.READY if ready else StepState.PENDING).value,
                    "run_at": now,
                    "updated_at": now,
                    "finished_at": None,
                    "error_code": None,
                    "error_message": None,
                    "poll_errors": 0,
                    "progress": 0,
                    "deadline_at": None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                }
                if ready:
                    values["params"] = resolve(step.params, outputs)
                result = await conn.execute(
                    update(steps)
                    .where(steps.c.id == step.id, steps.c.state == step.state)
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise Conflict(
                        f"step {step.name} changed meanwhile; try again", code="conflict"
                    )
            await job_q.transition_job(
                conn,
                job_id,
                JobStatus.QUEUED,
                error_code=None,
                error_message=None,
                completed_at=None,
                expires_at=None,
            )
            await events.record(
                conn,
                job_id=job_id,
                tenant_id=job.tenant_id,
                type="video.retried",
                data={"status": "queued", "steps": [s.name for s in again], "reused": len(done)},
                now=now,
            )
            await svc.db.notify(conn)
            refreshed = await job_q.get_job(conn, job_id)
        svc.wake()
        assert refreshed is not None
        return refreshed


def _output_size(plan: tuple[PlanStep, ...], final: PlanStep) -> str:
    """The size the plan's video will have, as far as the plan says: the output step's
    own, else (a merge) that of the first step it joins, else the 9:16 default."""
    by_name = {step.name: step for step in plan}
    seen: set[str] = set()
    step: PlanStep | None = final
    while step is not None and step.name not in seen:
        seen.add(step.name)
        size = step.params.get("size")
        if isinstance(size, str):
            return size
        deps = step.depends_on()
        step = by_name.get(deps[0]) if deps else None
    return "1080x1920"


def _replace(job: Job, **values: Any) -> Job:
    import dataclasses

    return dataclasses.replace(job, **values)


def _strings(params: Any, names: Sequence[str]) -> list[str]:
    """Literal strings under the given param names (references are checked once made)."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    if isinstance(params, dict):
        for name in names:
            if name in params and not contains_ref(params[name]):
                collect(params[name])
    return found
