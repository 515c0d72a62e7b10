"""The video service: what the API and the CLI do to jobs.

Creating a job writes the job, its plan (one clip step), its first event and the
idempotency key in one transaction; the caller gets the job at once and workers do
the rest.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.blobs.base import BlobStore
from vidpipe.config import Settings
from vidpipe.core import completion, events
from vidpipe.core.clock import Clock
from vidpipe.core.moderation import Blocklist, Moderator
from vidpipe.core.requests import ASPECT_SIZES, CreateVideo
from vidpipe.core.retry import RetryPolicy, policy_for
from vidpipe.core.states import JobStatus, StepState
from vidpipe.errors import Conflict, InvalidRequest, NotFound, VidpipeError
from vidpipe.ids import new_id
from vidpipe.money import admission, ledger, reports
from vidpipe.money.catalog import PriceBook
from vidpipe.money.estimate import Estimate, NotAVideoPrice, estimate_video
from vidpipe.money.prices import price_for
from vidpipe.money.units import to_usd
from vidpipe.net import AllowList, UrlGuard
from vidpipe.notify import alerts
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database
from vidpipe.store.group_commit import GroupCommit
from vidpipe.store.records import Asset, Job, Step
from vidpipe.store.schema import assets
from vidpipe.store.schema import jobs as jobs_table


@dataclass(frozen=True)
class Quote:
    estimate: Estimate
    max_cost_micros: int | None
    limits: admission.Limits
    model: str


@dataclass(frozen=True)
class Created:
    job: Job
    replayed: bool  # an earlier request with the same Idempotency-Key made it
    # (reserved, actual) micro-dollars as of the creating transaction; None: not read.
    money: tuple[int, int] | None = None


async def replay(
    conn: AsyncConnection, tenant_id: str, key: str, body_hash: str, not_before: float
) -> Job | None:
    """The job an earlier request with this Idempotency-Key made (None: the key is new).
    The same key with another body is refused: it would silently return the wrong job."""
    found = await job_q.find_idempotency_key(conn, tenant_id, key, not_before)
    if found is None:
        return None
    known_hash, job_id = found
    if known_hash != body_hash:
        raise InvalidRequest(
            "this Idempotency-Key was used with a different request body",
            code="idempotency_key_reused",
        )
    job = await job_q.get_job(conn, job_id, tenant_id)
    if job is None:
        raise NotFound("the job of this Idempotency-Key was deleted")
    return job


class VideoService:
    def __init__(
        self,
        db: Database,
        registry: ProviderRegistry,
        blobs: BlobStore,
        settings: Settings,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        prices: PriceBook | None = None,
        guard: UrlGuard | None = None,
        moderator: Moderator | None = None,
    ) -> None:
        self.db = db
        self.moderator = moderator or Moderator(
            Blocklist.from_settings(settings.moderation_blocklist)
        )
        self.guard = guard or UrlGuard(AllowList())
        self.prices = prices or PriceBook(settings.prices)
        self.registry = registry
        self.blobs = blobs
        self.settings = settings
        self.clock = clock
        self.wake = wake
        self.writes = GroupCommit(db)
        self._policies: dict[str, RetryPolicy] = {}
        self._policies_of: object = None

    def resolve(self, req: CreateVideo, rand: float | None = None) -> CreateVideo:
        """Fill defaults, route aliases, and check every model the request may use.

        An alias picks one of its models by weight (``rand`` in [0, 1) decides); its
        other models become the fallbacks unless the request names its own.
        """
        ref = req.model or self.settings.default_model
        fallbacks = list(req.fallback_models)
        targets = self.settings.model_aliases.get(ref)
        if targets:
            draw = (random.random() if rand is None else rand) * sum(t.weight for t in targets)
            chosen = targets[-1].model
            for target in targets:
                draw -= target.weight
                if draw < 0:
                    chosen = target.model
                    break
            if not fallbacks:
                fallbacks = [t.model for t in targets if t.model != chosen]
            ref = chosen
        if req.size and req.aspect_ratio:
            raise InvalidRequest(
                "give size or aspect_ratio, not both", code="invalid_size", param="size"
            )
        size = req.size or ASPECT_SIZES[req.aspect_ratio or "9:16"]
        for model_ref in [ref, *fallbacks]:
            self._check_model(
                model_ref, size, req.seconds, "model" if model_ref == ref else "fallback_models"
            )
        return req.model_copy(
            update={"model": ref, "size": size, "aspect_ratio": None, "fallback_models": fallbacks}
        )

    def _check_model(self, ref: str, size: str, seconds: int, param: str) -> None:
        _provider, model = self.registry.resolve(ref, param=param)
        if size not in model.sizes:
            raise InvalidRequest(
                f"size {size} is not offered by {ref}; choose one of {', '.join(model.sizes)}",
                code="unsupported_size",
                param="size" if param == "model" else param,
            )
        limit = min(model.max_seconds, self.settings.max_video_seconds)
        if not model.min_seconds <= seconds <= limit:
            raise InvalidRequest(
                f"seconds must be between {model.min_seconds} and {limit} for {ref}",
                code="unsupported_seconds",
                param="seconds" if param == "model" else param,
            )

    async def create(
        self,
        tenant_id: str,
        request: CreateVideo,
        idempotency_key: str | None = None,
        *,
        batch_id: str | None = None,
    ) -> Created:
        # The key binds the request as sent, before aliases are routed (a retry of the
        # same request must match even if routing would pick another model now).
        body_hash = (
            hashlib.sha256(
                json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()
            ).hexdigest()
            if idempotency_key is not None
            else ""
        )
        req = self.resolve(request)
        await self.moderator.check([req.prompt, *req.metadata.values()])
        if req.webhook_url is not None:
            await self.guard.check(req.webhook_url)
        for _ in range(3):
            try:
                return await self._create_once(
                    tenant_id, request, req, body_hash, idempotency_key, batch_id
                )
            except IntegrityError:
                # A concurrent request with the same Idempotency-Key won the insert:
                # the next round finds its job.
                if idempotency_key is None:
                    raise
        raise Conflict("concurrent requests with one Idempotency-Key", code="idempotency_race")

    async def _create_once(
        self,
        tenant_id: str,
        request: CreateVideo,
        req: CreateVideo,
        body_hash: str,
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> Created:
        now = self.clock.now()
        # Built before the write: on SQLite the whole unit runs under the one write
        # lock that every API process queues on, so it should hold only database work.
        planned = self._plan(tenant_id, req, now, request.model)

        async def unit(conn: AsyncConnection) -> Created:
            return await self._create_in(
                conn, tenant_id, req, planned, body_hash, idempotency_key, batch_id, now
            )

        # Concurrent creates share a transaction on SQLite (store/group_commit.py).
        created = await self.writes.run(unit)
        if not created.replayed:
            self.wake()
        return created

    async def _create_in(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        req: CreateVideo,
        planned: tuple[Job, Step],
        body_hash: str,
        idempotency_key: str | None,
        batch_id: str | None,
        now: float,
    ) -> Created:
        """The job, its plan, its admission, its first event and its key, in ``conn``."""
        not_before = now - self.settings.idempotency_ttl_s
        if idempotency_key is not None:
            replayed = await replay(conn, tenant_id, idempotency_key, body_hash, not_before)
            if replayed is not None:
                costs = await reports.job_costs(conn, [replayed.id])
                return Created(replayed, replayed=True, money=costs.get(replayed.id, (0, 0)))
        quote = await self._quote(conn, tenant_id, req)
        job, step = planned
        review = req.review
        if review is None:
            review = (await tenant_q.tenant_settings(conn, tenant_id)).require_review
        job = dataclasses.replace(
            job,
            estimated_micros=quote.estimate.expected_micros,
            max_cost_micros=quote.max_cost_micros,
            review_state=completion.REVIEW_REQUIRED if review else None,
            batch_id=batch_id,
        )
        await job_q.insert_job(conn, job)
        await step_q.insert_step(conn, step)
        crossings = await admission.admit(
            self.db,
            conn,
            tenant_id=tenant_id,
            job_id=job.id,
            hold_micros=quote.estimate.per_attempt_micros,
            max_cost_micros=quote.max_cost_micros,
            limits=quote.limits,
            now=now,
        )
        await alerts.budget_crossings(conn, self.settings.alert_channels, crossings, now)
        # What admission did to the row (a new job has no attempts: its reserved
        # money is the admission hold), so nothing needs reading back.
        hold = quote.estimate.per_attempt_micros
        if hold > 0:
            job = dataclasses.replace(job, held_micros=hold, held_at=now)
        money = (job.held_micros, 0)
        await events.record(
            conn,
            job_id=job.id,
            tenant_id=tenant_id,
            type="video.queued",
            data={"status": job.status, "model": job.model},
            now=now,
            job=job,
            money=money,
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
        await self.db.notify(conn)
        return Created(job, replayed=False, money=money)

    async def _quote(self, conn: AsyncConnection, tenant_id: str, req: CreateVideo) -> Quote:
        """Prices and limits for a resolved request; refuses what cannot be priced."""
        assert req.model is not None
        assert req.size is not None
        width, height = (int(v) for v in req.size.split("x"))
        limits = await admission.tenant_limits(conn, tenant_id)
        admission.check_request(limits, seconds=req.seconds, width=width, height=height)
        estimate: Estimate | None = None
        for ref in [req.model, *req.fallback_models]:
            price = await price_for(conn, self.prices, ref)
            if price is None:
                raise InvalidRequest(
                    f"no price is configured for {ref}; set one (VIDPIPE_PRICES or the "
                    "prices API) before using it",
                    code="price_unknown",
                    param="model" if ref == req.model else "fallback_models",
                )
            try:
                this = estimate_video(
                    price,
                    seconds=req.seconds,
                    width=width,
                    height=height,
                    policy=self.policy_for(ref.partition("/")[0]),
                )
            except NotAVideoPrice as exc:
                raise InvalidRequest(str(exc), code="price_unusable", param="model") from None
            if estimate is None:
                estimate = this
            else:  # a fallback may run after the first model's attempts
                estimate = Estimate(
                    estimate.per_attempt_micros,
                    estimate.expected_micros,
                    estimate.ceiling_micros + this.ceiling_micros,
                )
        assert estimate is not None
        return Quote(
            estimate, admission.max_cost_micros(req.max_cost_usd, limits), limits, req.model
        )

    async def dry_run(self, tenant_id: str, request: CreateVideo) -> dict[str, Any]:
        """What creating this video would do and cost; creates and reserves nothing."""
        req = self.resolve(request)
        async with self.db.read() as conn:
            quote = await self._quote(conn, tenant_id, req)
        if (
            quote.max_cost_micros is not None
            and quote.estimate.per_attempt_micros > quote.max_cost_micros
        ):
            admissible, reason = False, "over the video's maximum cost"
        else:
            admissible, reason = True, None
        return {
            "object": "video.estimate",
            "model": req.model,
            "fallback_models": req.fallback_models,
            "seconds": str(req.seconds),
            "size": req.size,
            "plan": [{"step": "clip", "kind": "clip", "model": req.model}],
            "cost": {
                "estimated": to_usd(quote.estimate.expected_micros),
                "per_attempt": to_usd(quote.estimate.per_attempt_micros),
                "ceiling": to_usd(quote.estimate.ceiling_micros),
                "max": to_usd(quote.max_cost_micros) if quote.max_cost_micros else None,
                "currency": "USD",
            },
            "admissible": admissible,
            "reason": reason,
        }

    def policy_for(self, provider: str) -> RetryPolicy:
        # One policy per provider, made again if the settings' policies are replaced.
        if self._policies_of is not self.settings.retry_policies:
            self._policies, self._policies_of = {}, self.settings.retry_policies
        policy = self._policies.get(provider)
        if policy is None:
            policy = self._policies[provider] = policy_for(
                provider,
                {name: p.model_dump() for name, p in self.settings.retry_policies.items()},
            )
        return policy

    def _plan(
        self, tenant_id: str, req: CreateVideo, now: float, request_model: str | None
    ) -> tuple[Job, Step]:
        assert req.model is not None
        assert req.size is not None
        job_id = new_id("video")
        provider, _, model = req.model.partition("/")
        job = Job(
            id=job_id,
            tenant_id=tenant_id,
            kind="video",
            status=JobStatus.QUEUED.value,
            progress=0,
            model=req.model,
            prompt=req.prompt,
            seconds=req.seconds,
            size=req.size,
            seed=req.seed,
            params={**req.model_dump(mode="json"), "requested_model": request_model},
            metadata=dict(req.metadata),
            error_code=None,
            error_message=None,
            created_at=now,
            started_at=None,
            completed_at=None,
            expires_at=None,
            deleted_at=None,
        )
        step = Step(
            id=new_id("step"),
            job_id=job_id,
            tenant_id=tenant_id,
            name="clip",
            kind="clip",
            state=StepState.READY.value,
            provider=provider,
            model=model,
            params={
                "prompt": req.prompt,
                "seconds": req.seconds,
                "size": req.size,
                "seed": req.seed,
                "validation": req.validation,
                "derivatives": list(req.derivatives),
            },
            depends_on=[],
            fallbacks=list(req.fallback_models),
            deadline_at=None,
            weight=1.0,
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
        return job, step

    async def get(self, tenant_id: str | None, job_id: str) -> Job:
        async with self.db.read() as conn:
            job = await job_q.get_job(conn, job_id, tenant_id)
        if job is None:
            raise NotFound(f"no video {job_id!r}", code="video_not_found", param="video_id")
        return job

    async def list(
        self,
        tenant_id: str | None,
        *,
        limit: int = 20,
        after: str | None = None,
        newest_first: bool = True,
        status: str | None = None,
        review_state: str | None = None,
    ) -> tuple[list[Job], bool]:
        """A page of jobs and whether more follow."""
        async with self.db.read() as conn:
            page = await job_q.list_jobs(
                conn,
                tenant_id,
                limit=limit + 1,
                after=after,
                newest_first=newest_first,
                status=status,
                review_state=review_state,
            )
        return page[:limit], len(page) > limit

    async def costs(self, job_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(reserved, actual) micro-dollars of each job."""
        async with self.db.read() as conn:
            return await reports.job_costs(conn, job_ids)

    async def cancel(self, tenant_id: str | None, job_id: str) -> Job:
        """Cancel a queued or running job; steps at a provider are stopped by a worker."""
        now = self.clock.now()
        async with self.db.write() as conn:
            job = await job_q.get_job(conn, job_id, tenant_id)
            if job is None:
                raise NotFound(f"no video {job_id!r}", code="video_not_found", param="video_id")
            if JobStatus(job.status).terminal:
                raise Conflict(
                    f"video {job_id} is already {job.status}", code="video_not_cancelable"
                )
            await job_q.transition_job(
                conn,
                job_id,
                JobStatus.CANCELED,
                completed_at=now,
                error_code="canceled",
                error_message="canceled by request",
            )
            await step_q.set_steps_state(conn, job_id, [StepState.ACTIVE], StepState.CANCELING, now)
            await step_q.set_steps_state(
                conn,
                job_id,
                [StepState.PENDING, StepState.READY, StepState.BLOCKED],
                StepState.CANCELED,
                now,
            )
            await ledger.release_job_hold(
                self.db, conn, job_id, ledger.Charge(job.tenant_id, job_id, None, None), now
            )
            await events.record(
                conn,
                job_id=job_id,
                tenant_id=job.tenant_id,
                type="video.canceled",
                data={"status": JobStatus.CANCELED.value},
                now=now,
            )
            await self.db.notify(conn)
            job = await job_q.get_job(conn, job_id)
        self.wake()
        assert job is not None
        return job

    async def review(
        self,
        tenant_id: str | None,
        job_id: str,
        *,
        approve: bool,
        reason: str | None,
        regenerate: bool,
    ) -> Job:
        """A human's decision on a video held for review.

        Approve: the job completes (and only now is it announced). Reject: the job
        fails with the reason, or, with ``regenerate``, its clip is made again and
        comes back for review.
        """
        now = self.clock.now()
        async with self.db.write() as conn:
            job = await job_q.get_job(conn, job_id, tenant_id)
            if job is None:
                raise NotFound(f"no video {job_id!r}", code="video_not_found", param="video_id")
            claimed = await conn.execute(
                update(jobs_table)
                .where(
                    jobs_table.c.id == job_id,
                    jobs_table.c.review_state == completion.REVIEW_PENDING,
                    jobs_table.c.status == JobStatus.IN_PROGRESS.value,
                )
                .values(
                    review_state=(
                        completion.REVIEW_APPROVED
                        if approve
                        else completion.REVIEW_REQUIRED
                        if regenerate
                        else "rejected"
                    ),
                    review_reason=reason,
                )
            )
            if claimed.rowcount != 1:
                raise Conflict(
                    f"video {job_id} is not waiting for review", code="not_awaiting_review"
                )
            await events.record(
                conn,
                job_id=job_id,
                tenant_id=job.tenant_id,
                type="video.reviewed",
                data={"approved": approve, "reason": reason, "regenerate": regenerate},
                now=now,
            )
            if approve:
                await completion.complete(conn, job_id, job.tenant_id, now, self.settings)
            elif regenerate:
                await self._regenerate(conn, job, now)
            else:
                await job_q.transition_job(
                    conn,
                    job_id,
                    JobStatus.FAILED,
                    error_code="review_rejected",
                    error_message=reason or "rejected in review",
                    completed_at=now,
                )
                await events.record(
                    conn,
                    job_id=job_id,
                    tenant_id=job.tenant_id,
                    type="video.failed",
                    data={"status": "failed", "code": "review_rejected", "reason": reason},
                    now=now,
                )
            await self.db.notify(conn)
            job = await job_q.get_job(conn, job_id)
        self.wake()
        assert job is not None
        return job

    async def _regenerate(self, conn: AsyncConnection, job: Job, now: float) -> None:
        """A fresh clip step, like the first; its delivery replaces the rejected files."""
        plan = await step_q.steps_of_job(conn, job.id)
        last = plan[-1]
        await step_q.insert_step(
            conn,
            dataclasses.replace(
                last,
                id=new_id("step"),
                state=StepState.READY.value,
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
                deadline_at=None,
            ),
        )

    async def delete(self, tenant_id: str | None, job_id: str) -> None:
        """Hide the job, cancel it if it still runs, and remove its stored files."""
        job = await self.get(tenant_id, job_id)
        if not JobStatus(job.status).terminal:
            # It may finish in between: then there is nothing left to stop.
            with contextlib.suppress(Conflict):
                await self.cancel(tenant_id, job_id)
        now = self.clock.now()
        async with self.db.write() as conn:
            if not await job_q.mark_deleted(conn, job_id, now):
                raise NotFound(f"no video {job_id!r}", code="video_not_found", param="video_id")
            keys = [
                r[0]
                for r in await conn.execute(
                    assets.update()
                    .where(assets.c.job_id == job_id, assets.c.deleted_at.is_(None))
                    .values(deleted_at=now)
                    .returning(assets.c.key)
                )
            ]
            await events.record(
                conn,
                job_id=job_id,
                tenant_id=job.tenant_id,
                type="video.deleted",
                data={},
                now=now,
            )
        for key in keys:
            await self.blobs.delete(key)

    async def video_asset(
        self, tenant_id: str | None, job_id: str, name: str = "video.mp4"
    ) -> Asset:
        """A stored file of a completed video (``name``: video.mp4, thumbnail.jpg, …)."""
        job = await self.get(tenant_id, job_id)
        if job.status == JobStatus.EXPIRED.value:
            raise VidpipeError(
                f"video {job_id} expired: its files were deleted after the retention period",
                code="video_expired",
                http_status=410,
            )
        if job.status != JobStatus.COMPLETED.value:
            raise Conflict(
                f"video {job_id} is {job.status}; content exists once it is completed",
                code="video_not_ready",
            )
        async with self.db.read() as conn:
            row = (
                (
                    await conn.execute(
                        assets.select().where(
                            assets.c.job_id == job_id,
                            assets.c.name == name,
                            assets.c.deleted_at.is_(None),
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(
                f"video {job_id} has no stored {name}", code="content_missing", param="variant"
            )
        return Asset.from_row(row)

    async def asset_names(self, job_id: str) -> builtins.list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(assets.c.name).where(
                    assets.c.job_id == job_id, assets.c.deleted_at.is_(None)
                )
            )
            return [r[0] for r in rows]
