"""Advancing one claimed step by one action: submit, poll, deliver, fail, or cancel.

Each action is short and ends with the step either finished or handed back with a
``run_at``: a step waiting on a provider holds no worker. Every write is guarded by
the step's lease token, so a worker that lost its lease changes nothing.

The order of records makes the expensive call happen at most once per attempt: the
attempt (with its idempotency key) is committed before the provider is called, and
the provider's job id right after. A worker that dies in between is replaced by one
that polls the recorded provider job, or re-submits with the same key to a provider
that deduplicates by it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.blobs.base import BlobStore, job_key
from vidpipe.config import Settings
from vidpipe.core import completion, events
from vidpipe.core.clock import Clock
from vidpipe.core.delivery import Checked, Delivered, Delivery, QualityRejected, StoredFile
from vidpipe.core.retry import ErrorClass, RetryPolicy, decide, next_poll_delay_s, policy_for
from vidpipe.core.states import AttemptState, JobStatus, StepState
from vidpipe.errors import (
    IllegalTransition,
    LeaseLost,
    PermanentProviderError,
    ProvenanceError,
    ProviderError,
    TransientProviderError,
    VidpipeError,
)
from vidpipe.ids import new_id
from vidpipe.money import ledger
from vidpipe.money.catalog import PriceBook
from vidpipe.money.estimate import actual_video_micros, video_attempt_micros
from vidpipe.money.prices import price_for
from vidpipe.money.units import to_usd
from vidpipe.net import AllowList, UrlGuard
from vidpipe.notify import alerts
from vidpipe.obs import step as obs
from vidpipe.plans.kinds import LOCAL_PROVIDER
from vidpipe.plans.runner import LocalStepRunner, is_final
from vidpipe.plans.spec import PlanError, resolve
from vidpipe.providers.base import PollResult, Provider, ProviderStatus, VideoRequest
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store.db import Database
from vidpipe.store.records import Attempt, Job, Step

log = logging.getLogger("vidpipe.executor")

# Provider failure codes that a re-submission would meet again.
PERMANENT_PROVIDER_CODES = frozenset({"content_policy", "provider_auth", "invalid_request"})

# How often a step blocked by a budget looks again (an alert went out at 100 %).
BLOCKED_RECHECK_S = 30.0

# Consecutive failed polls of one provider job before the attempt counts as failed.
MAX_POLL_ERRORS = 8
VIDEO_ASSET = "video.mp4"


@dataclass(frozen=True)
class Failure:
    error_class: ErrorClass
    code: str
    message: str
    retry_after_s: float | None = None


class StepExecutor:
    def __init__(
        self,
        db: Database,
        registry: ProviderRegistry,
        blobs: BlobStore,
        settings: Settings,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        validate: bool = True,
        wake: Callable[[], None] = lambda: None,
        guard: UrlGuard | None = None,
        prices: PriceBook | None = None,
        http: httpx.AsyncClient | None = None,
        operator_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.guard = guard or UrlGuard(AllowList())
        self.prices = prices or PriceBook(settings.prices)
        self.registry = registry
        self.blobs = blobs
        self.settings = settings
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.validate = validate
        self.wake = wake
        self.tmp_dir = settings.home / "tmp"
        self.delivery = Delivery(blobs, settings, self.guard)
        # Plan steps that vidpipe runs itself (script, speech, compose...).
        self.local = LocalStepRunner(self, http or httpx.AsyncClient(), operator_http)

    @obs.observed_action
    async def run(self, step: Step) -> None:
        """Advance ``step`` (claimed by this worker) by one action."""
        try:
            if step.state == StepState.CANCELING.value:
                await self._cancel(step)
            elif step.provider == LOCAL_PROVIDER:
                await self.local.run(step)
            else:
                await self._advance(step)
        except (LeaseLost, IllegalTransition) as exc:
            # Someone else changed the step (a cancel, a takeover): their state wins.
            log.info("step %s: %s; leaving it", step.id, exc)
            async with self.db.write() as conn:
                await step_q.release_lease(conn, step)
        except Exception as exc:
            if step.poll_errors + 1 >= MAX_POLL_ERRORS:
                log.exception("step %s: unexpected error, again; failing the step", step.id)
                await self._fail_step(
                    step,
                    None,
                    Failure(ErrorClass.PERMANENT, "internal_error", f"{type(exc).__name__}: {exc}"),
                )
            else:
                log.exception("step %s: unexpected error; retrying later", step.id)
                await self._back_off(step, "internal_error")

    # -- advancing -------------------------------------------------------------

    async def _advance(self, step: Step) -> None:
        provider = self.registry.get(step.provider)
        if provider is None or provider.model(step.model) is None:
            await self._fail_step(
                step,
                None,
                Failure(ErrorClass.PERMANENT, "unknown_model", f"{step.provider}/{step.model}"),
            )
            return
        async with self.db.point_read() as conn:
            attempt = await step_q.current_attempt(conn, step.id)
        if attempt is None or attempt.state in (
            AttemptState.FAILED.value,
            AttemptState.CANCELED.value,
        ):
            if (
                attempt is not None
                and step.deadline_at is not None
                and self.clock.now() > step.deadline_at
            ):
                # Retrying past the deadline would start work no one waits for.
                await self._deadline_before_retry(step)
                return
            attempt = await self._new_attempt(step, attempt)
            if attempt is not None:
                await self._submit(step, attempt, provider)
        elif attempt.state == AttemptState.SUBMITTING.value:
            if provider.accepts_idempotency_key:
                # The previous worker may or may not have reached the provider; the
                # same key makes a second submission return the first job.
                await self._submit(step, attempt, provider)
            else:
                await self._attempt_failed(
                    step,
                    attempt,
                    Failure(
                        ErrorClass.TRANSIENT,
                        "submission_unknown",
                        "a worker stopped while submitting; the provider cannot "
                        "deduplicate, so a new attempt is made",
                    ),
                )
        elif attempt.state == AttemptState.SUBMITTED.value:
            await self._poll(step, attempt, provider)
        else:  # the attempt succeeded but the step was not closed: close it
            log.warning("step %s: attempt %s already %s", step.id, attempt.id, attempt.state)
            await self._back_off(step, "inconsistent_attempt")

    async def _deadline_before_retry(self, step: Step) -> None:
        failure = Failure(
            ErrorClass.PERMANENT,
            "deadline_exceeded",
            f"{step.provider}/{step.model} did not deliver within "
            f"{self.settings.step_deadline_s:.0f} s",
        )
        now = self.clock.now()
        async with self.db.write() as conn:
            if step.fallbacks:
                await self._fall_back(conn, step, failure, now)
            else:
                await self._fail_step_in(conn, step, failure, now, to=StepState.EXPIRED)

    async def _new_attempt(self, step: Step, previous: Attempt | None) -> Attempt | None:
        """Record a new attempt and reserve its cost, in one transaction.

        Returns None when the money is not there: the step then waits, visibly
        ``blocked_budget``, and is looked at again later (or fails, if the video's own
        maximum is what stands in the way).
        """
        now = self.clock.now()
        number = (previous.number if previous else 0) + 1
        request = self._request(step)
        async with self.db.point_read() as conn:
            price = await price_for(conn, self.prices, f"{step.provider}/{step.model}")
        if price is None:
            await self._fail_step(
                step,
                None,
                Failure(
                    ErrorClass.PERMANENT,
                    "price_unknown",
                    f"no price is configured for {step.provider}/{step.model}",
                ),
            )
            return None
        amount = video_attempt_micros(
            price, seconds=request.seconds, width=request.width, height=request.height
        )
        attempt = Attempt(
            id=new_id("att"),
            step_id=step.id,
            job_id=step.job_id,
            number=number,
            state=AttemptState.SUBMITTING.value,
            idempotency_key=f"vidpipe-{step.id}-{number}",
            provider=step.provider,
            model=step.model,
            provider_job_id=None,
            error_class=None,
            error_code=None,
            error_message=None,
            created_at=now,
            submitted_at=None,
            finished_at=None,
            tenant_id=step.tenant_id,
            reserved_micros=amount,
            reserved_at=now,
            money_state="reserved" if amount > 0 else "none",
        )
        deadline = step.deadline_at or now + self.settings.step_deadline_s
        try:
            async with self.db.write() as conn:
                await step_q.update_step(
                    conn,
                    step,
                    to=StepState.READY,
                    attempt_count=number,
                    deadline_at=deadline,
                    updated_at=now,
                )
                await step_q.insert_attempt(conn, attempt)
                job = await job_q.get_job(conn, step.job_id)
                # The admission hold gives way to this attempt's own reservation. A
                # hold is only set in the transaction that creates the job and its
                # steps, so one read as 0 here stays 0 (a free model's jobs have none).
                if job is not None and job.held_micros > 0:
                    await ledger.release_job_hold(
                        self.db, conn, step.job_id, self._charge(step, None), now
                    )
                if amount > 0:
                    crossings = await ledger.reserve(
                        self.db,
                        conn,
                        self._charge(step, attempt),
                        amount,
                        now,
                        job_max_micros=job.max_cost_micros if job else None,
                    )
                    await alerts.budget_crossings(
                        conn, self.settings.alert_channels, crossings, now
                    )
                if job is not None and job.status == JobStatus.QUEUED.value:
                    started = await job_q.transition_job(
                        conn, step.job_id, JobStatus.IN_PROGRESS, started_at=now
                    )
                    await self._event(
                        conn, step, "video.in_progress", {"status": "in_progress"}, job=started
                    )
                await self._event(
                    conn,
                    step,
                    "step.attempt",
                    {"step": step.name, "attempt": number, "reserved_usd": to_usd(amount)},
                )
        except (ledger.BudgetExceeded, ledger.InsufficientCredits) as exc:
            await self._no_money(step, exc)
            return None
        return attempt

    async def _no_money(
        self, step: Step, exc: ledger.BudgetExceeded | ledger.InsufficientCredits
    ) -> None:
        if getattr(exc, "scope", None) == "job":
            # The video's own maximum: waiting will not make room.
            await self._fail_step(step, None, Failure(ErrorClass.PERMANENT, exc.code, exc.message))
            return
        now = self.clock.now()
        async with self.db.write() as conn:
            await step_q.update_step(
                conn,
                step,
                to=StepState.BLOCKED,
                release=True,
                run_at=now + BLOCKED_RECHECK_S,
                error_code=exc.code,
                error_message=exc.message,
                updated_at=now,
            )
            if step.state != StepState.BLOCKED.value:
                await self._event(
                    conn, step, "step.blocked_budget", {"code": exc.code, "reason": exc.message}
                )

    def _charge(self, step: Step, attempt: Attempt | None) -> ledger.Charge:
        return ledger.Charge(
            step.tenant_id,
            step.job_id,
            step.id,
            attempt.id if attempt else None,
            step.provider,
            step.model,
        )

    def _request(
        self, step: Step, provider: Provider | None = None, attempt: Attempt | None = None
    ) -> VideoRequest:
        width, height = (int(v) for v in str(step.params["size"]).split("x"))
        callback = None
        if (
            provider is not None
            and attempt is not None
            and provider.supports_webhooks
            and self.settings.public_url
        ):
            callback = (
                f"{self.settings.public_url.rstrip('/')}/v1/hooks/{provider.name}"
                f"?attempt={attempt.id}"
            )
        return VideoRequest(
            callback_url=callback,
            model=step.model,
            prompt=str(step.params["prompt"]),
            seconds=int(step.params["seconds"]),
            width=width,
            height=height,
            seed=step.params.get("seed"),
        )

    async def _submit(self, step: Step, attempt: Attempt, provider: Provider) -> None:
        try:
            provider_job_id = await provider.submit(
                self._request(step, provider, attempt), attempt.idempotency_key
            )
        except TransientProviderError as exc:
            if provider.accepts_idempotency_key and step.poll_errors < len(
                self._policy(step.provider).transient_delays_s
            ):
                # The provider may have made the job and lost the answer: try again
                # with the same key, which returns that job instead of a second one.
                delays = self._policy(step.provider).transient_delays_s
                await self._back_off(
                    step,
                    exc.code,
                    retry_after_s=max(exc.retry_after_s or 0.0, delays[step.poll_errors]),
                )
            else:
                await self._attempt_failed(step, attempt, _classify(exc))
            return
        except ProviderError as exc:
            await self._attempt_failed(step, attempt, _classify(exc))
            return
        now = self.clock.now()
        try:
            await self._record_submission(step, attempt, provider, provider_job_id, now)
        except IllegalTransition:
            # The job was canceled while we were at the provider: the job we just
            # started there has no one waiting for it. Stop it and close the attempt.
            await self._cancel_orphan(step, attempt, provider, provider_job_id)

    async def _cancel_orphan(
        self, step: Step, attempt: Attempt, provider: Provider, provider_job_id: str
    ) -> None:
        try:
            await provider.cancel(provider_job_id)
        except ProviderError as exc:
            log.warning("step %s: cancel of orphan %s failed: %s", step.id, provider_job_id, exc)
        now = self.clock.now()
        async with self.db.write() as conn:
            await step_q.transition_attempt(
                conn,
                attempt.id,
                AttemptState.CANCELED,
                provider_job_id=provider_job_id,
                submitted_at=now,
                finished_at=now,
            )
            await ledger.finish_attempt(
                conn,
                attempt.id,
                self._charge(step, attempt),
                attempt.reserved_micros if provider.bills_failures else None,
                now,
            )
            await step_q.release_lease(conn, step)

    async def _record_submission(
        self, step: Step, attempt: Attempt, provider: Provider, provider_job_id: str, now: float
    ) -> None:
        async with self.db.write() as conn:
            await step_q.transition_attempt(
                conn,
                attempt.id,
                AttemptState.SUBMITTED,
                provider_job_id=provider_job_id,
                submitted_at=now,
            )
            await step_q.update_step(
                conn,
                step,
                to=StepState.ACTIVE,
                release=True,
                run_at=now
                + next_poll_delay_s(typical_latency_s=provider.typical_latency_s, elapsed_s=0),
                poll_errors=0,
                updated_at=now,
            )
            await self._event(
                conn,
                step,
                "step.submitted",
                {"step": step.name, "attempt": attempt.number, "provider": provider.name},
            )

    async def _poll(self, step: Step, attempt: Attempt, provider: Provider) -> None:
        assert attempt.provider_job_id is not None
        try:
            result = await provider.poll(attempt.provider_job_id)
        except TransientProviderError as exc:
            if step.poll_errors + 1 >= MAX_POLL_ERRORS:
                # Moving on to a new attempt: stop this job first, so it is not paid twice.
                with contextlib.suppress(ProviderError):
                    await provider.cancel(attempt.provider_job_id)
                await self._attempt_failed(step, attempt, _classify(exc))
            else:
                await self._back_off(step, exc.code, retry_after_s=exc.retry_after_s)
            return
        except PermanentProviderError as exc:
            await self._attempt_failed(
                step, attempt, Failure(ErrorClass.GENERATION, exc.code, exc.message)
            )
            return
        if result.status is ProviderStatus.SUCCEEDED:
            await self._deliver(step, attempt, provider, result)
        elif result.status in (ProviderStatus.FAILED, ProviderStatus.CANCELED):
            # A content-policy refusal will be refused again: no re-submission.
            refused = result.error_code in PERMANENT_PROVIDER_CODES
            await self._attempt_failed(
                step,
                attempt,
                Failure(
                    ErrorClass.PERMANENT if refused else ErrorClass.GENERATION,
                    result.error_code or f"provider_{result.status.value}",
                    result.error_message or f"the provider reported {result.status.value}",
                ),
            )
        elif step.deadline_at is not None and self.clock.now() > step.deadline_at:
            # Still at the provider past the deadline (a finished job is taken as is).
            await self._expire(step, attempt, provider)
        else:
            await self._still_running(step, attempt, provider, result)

    async def _still_running(
        self, step: Step, attempt: Attempt, provider: Provider, result: PollResult
    ) -> None:
        now = self.clock.now()
        # Reserve the last percent for download and validation.
        progress = min(max(result.progress or 0, step.progress), 99)
        delay = next_poll_delay_s(
            typical_latency_s=provider.typical_latency_s,
            elapsed_s=now - (attempt.submitted_at or now),
            hint_s=result.next_poll_s,
        )
        async with self.db.write() as conn:
            await step_q.update_step(
                conn,
                step,
                release=True,
                run_at=now + delay,
                progress=progress,
                poll_errors=0,
                updated_at=now,
            )
            if progress > step.progress:
                await self._update_job_progress(conn, step, progress)

    async def _deliver(
        self, step: Step, attempt: Attempt, provider: Provider, result: PollResult
    ) -> None:
        """Download the output into our storage, check it, and finish the step."""
        obs.set_action("deliver")
        if not result.outputs:
            await self._attempt_failed(
                step,
                attempt,
                Failure(ErrorClass.GENERATION, "no_output", "the provider reported no output"),
            )
            return
        # Unique per delivery: a worker that lost its lease may still be delivering.
        # The download is a file beside (not in) the delivery's work directory, which
        # is made only if the delivery needs one (Delivery.store): a mkdir and rmdir per
        # job measured ~1 ms of CPU on a VM's ext4 (bench/README.md, session 8).
        work = self.tmp_dir / f"{attempt.id}-{new_id('d')}"
        tmp = work.with_name(f"{work.name}.part")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)  # there already: a lookup
        request = self._request(step)
        try:
            try:
                sha256, size = await self.delivery.download(provider, result.outputs[0], tmp)
            except ProviderError as exc:
                await self._download_failed(step, attempt, exc)
                return
            try:
                if self.validate:
                    policy = self.delivery.policy(provider, step.params.get("validation"))
                    checked = await self.delivery.inspect(
                        tmp, request, policy, full=self.settings.validation_mode == "full"
                    )
                else:
                    checked = Checked(None, None, float(request.seconds))
            except QualityRejected as exc:
                obs.validation_failed(step.provider, exc.code, exc.report)
                await self._attempt_failed(
                    step, attempt, Failure(ErrorClass.QUALITY, exc.code, exc.message)
                )
                return
            # Storing overwrites the job's files: only while this worker's claim
            # stands (another worker that took over delivers the same output). The
            # manifest's facts are read in the same read.
            job: Job | None = None
            history: list[Attempt] = []
            async with self.db.point_read() as conn:
                if not await step_q.holds_lease(conn, step):
                    raise LeaseLost(f"step {step.id}: lease taken over before storing")
                if is_final(step):
                    job = await job_q.get_job(conn, step.job_id)
                    history = await step_q.attempts_of_job(conn, step.job_id)
            if not is_final(step):
                # A clip inside a plan: an input of a later step, stored under the
                # step's name (derivatives and the manifest are for the job's video).
                delivered = await self._store_intermediate(step, tmp, sha256, size, checked)
            else:
                delivered = await self.delivery.store(
                    tenant_id=step.tenant_id,
                    job_id=step.job_id,
                    video=tmp,
                    sha256=sha256,
                    size=size,
                    checked=checked,
                    wanted=list(step.params.get("derivatives") or []),
                    manifest=self._manifest(step, attempt, job, history),
                    work_dir=work,
                )
        except ProvenanceError as exc:
            # Our watermark or C2PA signing failed on a good output: the installation's
            # to fix. A regeneration or a fallback model would pay again for the same
            # failure, so the step fails now; the provider did charge for this output.
            failure = Failure(ErrorClass.PERMANENT, exc.code, exc.message)
            await self._fail_step(step, attempt, failure, billed=True)
            return
        finally:
            tmp.unlink(missing_ok=True)  # stored files were moved away: usually gone
            shutil.rmtree(work, ignore_errors=True)  # if Delivery.store made it
        await self._record_delivery(step, attempt, result, delivered, request)

    async def _store_intermediate(
        self, step: Step, path: Path, sha256: str, size: int, checked: Checked
    ) -> Delivered:
        name = f"{step.name}.video.mp4"
        key = job_key(step.tenant_id, step.job_id, name)
        await self.blobs.put_file(key, path, "video/mp4")
        stored = StoredFile(name, key, sha256, size, "video/mp4", checked.media, checked.report)
        return Delivered(stored, (), checked.duration_s)

    async def _download_failed(self, step: Step, attempt: Attempt, exc: ProviderError) -> None:
        failure = _classify(exc)
        if failure.error_class is ErrorClass.TRANSIENT and step.poll_errors + 1 < MAX_POLL_ERRORS:
            await self._back_off(step, exc.code, retry_after_s=exc.retry_after_s)
            return
        if failure.error_class is ErrorClass.PERMANENT:
            # The output is gone (expired URL, refused download): the job has to be
            # made again, which is a generation failure's one re-submit.
            failure = dataclasses.replace(failure, error_class=ErrorClass.GENERATION)
        await self._attempt_failed(step, attempt, failure)

    def _manifest(
        self, step: Step, attempt: Attempt, job: Job | None, history: list[Attempt]
    ) -> dict[str, Any]:
        """Provenance: what was asked, who made it, and every attempt on the way
        (``job`` and ``history``: the job and its attempts, as just read)."""
        return {
            "job_id": step.job_id,
            "tenant_id": step.tenant_id,
            "created_at": job.created_at if job else None,
            "request": job.params if job else step.params,
            "provider": step.provider,
            "model": step.model,
            "provider_job_id": attempt.provider_job_id,
            "attempts": [
                {
                    "number": a.number,
                    "provider": a.provider,
                    "model": a.model,
                    "provider_job_id": a.provider_job_id,
                    "state": "succeeded" if a.id == attempt.id else a.state,
                    "error_class": a.error_class,
                    "error_code": a.error_code,
                }
                for a in history
                if a.step_id == step.id
            ],
        }

    async def _record_delivery(
        self,
        step: Step,
        attempt: Attempt,
        result: PollResult,
        delivered: Delivered,
        request: VideoRequest,
    ) -> None:
        now = self.clock.now()
        async with self.db.point_read() as conn:
            price = await price_for(conn, self.prices, f"{step.provider}/{step.model}")
        cost = actual_video_micros(
            price,
            reported_usd=result.cost_usd,
            seconds_delivered=delivered.duration_s,
            width=request.width,
            height=request.height,
            reserved_micros=attempt.reserved_micros,
        )
        video = delivered.video
        async with self.db.write() as conn:
            await step_q.transition_attempt(
                conn, attempt.id, AttemptState.SUCCEEDED, finished_at=now
            )
            await ledger.finish_attempt(conn, attempt.id, self._charge(step, attempt), cost, now)
            rows = [
                {
                    "id": new_id("asset"),
                    "tenant_id": step.tenant_id,
                    "job_id": step.job_id,
                    "step_id": step.id,
                    "name": stored.name,
                    "key": stored.key,
                    "sha256": stored.sha256,
                    "bytes": stored.bytes,
                    "content_type": stored.content_type,
                    "media": stored.media,
                    "validation": stored.validation,
                    "created_at": now,
                }
                for stored in (video, *delivered.extras)
            ]
            asset_id = rows[0]["id"]
            await job_q.replace_assets(conn, rows)
            await step_q.update_step(
                conn,
                step,
                to=StepState.SUCCEEDED,
                release=True,
                progress=100,
                output={
                    "asset_id": asset_id,
                    "key": video.key,
                    "sha256": video.sha256,
                    "bytes": video.bytes,
                    "kind": "video",
                    "duration_s": delivered.duration_s,
                    "width": request.width,
                    "height": request.height,
                },
                finished_at=now,
                updated_at=now,
            )
            await self._event(
                conn,
                step,
                "step.succeeded",
                {
                    "step": step.name,
                    "attempt": attempt.number,
                    "sha256": video.sha256,
                    "bytes": video.bytes,
                    "cost_usd": to_usd(cost),
                },
            )
            completed = await self._after_success(conn, step, now)
        obs.delivered(step, attempt, now, completed)

    async def _after_success(self, conn: AsyncConnection, step: Step, now: float) -> Job | None:
        """Start the steps that were waiting for this one, or complete the job.

        Returns the job when this success completed it (not held for review)."""
        # Steps of one plan finishing at once must see each other's success: the last
        # one to commit starts what waited for both (PostgreSQL reads committed data,
        # so without this neither would).
        await self.db.lock_for(conn, f"vidpipe.plan.{step.job_id}")
        plan = await step_q.steps_of_job(conn, step.job_id)
        done = {s.id for s in plan if s.state == StepState.SUCCEEDED.value} | {step.id}
        if all(s.id in done for s in plan):
            return await completion.work_done(conn, step.job_id, step.tenant_id, now, self.settings)
        # Read in this transaction, after the step's own success: its output is here.
        outputs = {s.name: s.output for s in plan if s.output is not None}
        for other in plan:
            if other.state == StepState.PENDING.value and all(
                dep in done for dep in other.depends_on
            ):
                # A step's params become concrete when it becomes ready: references
                # to the outputs of the steps it waited for are replaced by values.
                try:
                    params = resolve(other.params, outputs)
                except PlanError as exc:
                    await self._fail_step_in(
                        conn, other, Failure(ErrorClass.PERMANENT, exc.code, exc.message), now
                    )
                    return None
                await step_q.update_step(
                    conn, other, to=StepState.READY, params=params, run_at=now, updated_at=now
                )
        await self._update_job_progress(conn, step, 100, plan=plan)
        await self.db.notify(conn)
        self.wake()
        return None

    async def _update_job_progress(
        self, conn: AsyncConnection, step: Step, progress: int, plan: list[Step] | None = None
    ) -> None:
        plan = plan if plan is not None else await step_q.steps_of_job(conn, step.job_id)
        total = sum(s.weight for s in plan) or 1.0
        done = sum(s.weight * (progress if s.id == step.id else s.progress) for s in plan)
        job_progress = min(int(done / total), 99)
        await job_q.set_job_progress(conn, step.job_id, job_progress)
        await self._event(conn, step, "video.progress", {"progress": job_progress})

    # -- failing ---------------------------------------------------------------

    def _policy(self, provider: str) -> RetryPolicy:
        overrides = {
            name: setting.model_dump() for name, setting in self.settings.retry_policies.items()
        }
        return policy_for(provider, overrides, self.policy)

    async def _attempt_failed(self, step: Step, attempt: Attempt, failure: Failure) -> None:
        async with self.db.point_read() as conn:
            history = await step_q.attempts_of_job(conn, step.job_id)
        earlier = sum(
            1
            for a in history
            if a.step_id == step.id
            and a.id != attempt.id
            and a.error_class == failure.error_class
            and (a.provider, a.model) == (step.provider, step.model)
        )
        decision = decide(
            self._policy(step.provider),
            failure.error_class,
            earlier + 1,
            retry_after_s=failure.retry_after_s,
            rand=random.random(),
        )
        now = self.clock.now()
        billed = self._billed(step, attempt, failure)
        async with self.db.write() as conn:
            await self._close_failed(conn, step, attempt, failure, billed=billed, now=now)
            if decision.retry:
                await step_q.update_step(
                    conn,
                    step,
                    to=StepState.READY,
                    release=True,
                    run_at=now + decision.delay_s,
                    poll_errors=0,
                    error_code=failure.code,
                    error_message=failure.message,
                    updated_at=now,
                )
                await self._event(
                    conn,
                    step,
                    "step.retrying",
                    {
                        "step": step.name,
                        "attempt": attempt.number,
                        "class": failure.error_class.value,
                        "code": failure.code,
                        "reason": failure.message,
                        "delay_s": round(decision.delay_s, 3),
                    },
                )
            elif step.fallbacks:
                await self._fall_back(conn, step, failure, now)
            else:
                await self._fail_step_in(conn, step, failure, now)
        obs.attempt_ended(step, attempt, "failed", now)

    async def _close_failed(
        self,
        conn: AsyncConnection,
        step: Step,
        attempt: Attempt,
        failure: Failure,
        *,
        billed: bool,
        now: float,
    ) -> None:
        """Record an attempt's failure and settle (billed) or release its money."""
        await step_q.transition_attempt(
            conn,
            attempt.id,
            AttemptState.FAILED,
            error_class=failure.error_class.value,
            error_code=failure.code,
            error_message=failure.message,
            finished_at=now,
        )
        await ledger.finish_attempt(
            conn,
            attempt.id,
            self._charge(step, attempt),
            attempt.reserved_micros if billed else None,
            now,
        )

    def _billed(self, step: Step, attempt: Attempt, failure: Failure) -> bool:
        """Whether the provider charges for this failed attempt (per its adapter's facts)."""
        if failure.error_class is ErrorClass.QUALITY:
            return True  # the provider made and delivered an output; we refused it
        if attempt.provider_job_id is None or failure.error_class is ErrorClass.TRANSIENT:
            return False  # never reached the provider's meter
        provider = self.registry.get(step.provider)
        return provider is not None and provider.bills_failures

    async def _fall_back(
        self, conn: AsyncConnection, step: Step, failure: Failure, now: float
    ) -> None:
        """Move the step to its next model; the current one has given a final verdict."""
        provider, _, model = step.fallbacks[0].partition("/")
        await step_q.update_step(
            conn,
            step,
            to=StepState.READY,
            release=True,
            provider=provider,
            model=model,
            fallbacks=step.fallbacks[1:],
            deadline_at=None,
            run_at=now,
            poll_errors=0,
            error_code=failure.code,
            error_message=failure.message,
            updated_at=now,
        )
        await self._event(
            conn,
            step,
            "step.fallback",
            {
                "step": step.name,
                "from": f"{step.provider}/{step.model}",
                "to": step.fallbacks[0],
                "class": failure.error_class.value,
                "code": failure.code,
                "reason": failure.message,
            },
        )
        await self.db.notify(conn)

    async def _expire(self, step: Step, attempt: Attempt, provider: Provider) -> None:
        """The deadline passed with the job still at the provider: stop it, move on."""
        assert attempt.provider_job_id is not None
        try:
            await provider.cancel(attempt.provider_job_id)
        except ProviderError as exc:
            log.warning("step %s: cancel after deadline failed: %s", step.id, exc)
        failure = Failure(
            ErrorClass.PERMANENT,
            "deadline_exceeded",
            f"{step.provider}/{step.model} did not finish within "
            f"{self.settings.step_deadline_s:.0f} s",
        )
        now = self.clock.now()
        async with self.db.write() as conn:
            await self._close_failed(
                conn, step, attempt, failure, billed=provider.bills_failures, now=now
            )
            if step.fallbacks:
                await self._fall_back(conn, step, failure, now)
            else:
                await self._fail_step_in(conn, step, failure, now, to=StepState.EXPIRED)
        obs.attempt_ended(step, attempt, "expired", now)

    async def _fail_step(
        self, step: Step, attempt: Attempt | None, failure: Failure, *, billed: bool = False
    ) -> None:
        now = self.clock.now()
        async with self.db.write() as conn:
            if attempt is not None:
                await self._close_failed(conn, step, attempt, failure, billed=billed, now=now)
            await self._fail_step_in(conn, step, failure, now)

    async def _fail_step_in(
        self,
        conn: AsyncConnection,
        step: Step,
        failure: Failure,
        now: float,
        *,
        to: StepState = StepState.FAILED,
    ) -> None:
        await step_q.update_step(
            conn,
            step,
            to=to,
            release=True,
            error_code=failure.code,
            error_message=failure.message,
            finished_at=now,
            updated_at=now,
        )
        await step_q.cancel_unstarted(conn, step.job_id, now)
        job = await job_q.get_job(conn, step.job_id)
        if job is None or JobStatus(job.status).terminal:
            # Another step of the plan failed first (or the job was canceled): this
            # one only records its own failure.
            await self._event(conn, step, "step.failed", {"step": step.name, "code": failure.code})
            return
        await ledger.release_job_hold(self.db, conn, step.job_id, self._charge(step, None), now)
        await job_q.transition_job(
            conn,
            step.job_id,
            JobStatus.FAILED,
            error_code=failure.code,
            error_message=failure.message,
            completed_at=now,
        )
        await self._event(
            conn,
            step,
            "video.failed",
            {
                "status": "failed",
                "class": failure.error_class.value,
                "code": failure.code,
                "reason": failure.message,
            },
        )

    async def _back_off(
        self, step: Step, reason: str, *, retry_after_s: float | None = None
    ) -> None:
        """Hand the step back to be tried again soon, without failing its attempt."""
        now = self.clock.now()
        delay = min(2.0 ** min(step.poll_errors, 5), 30.0)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, 600.0))
        try:
            async with self.db.write() as conn:
                await step_q.update_step(
                    conn,
                    step,
                    release=True,
                    run_at=now + delay,
                    poll_errors=step.poll_errors + 1,
                    updated_at=now,
                )
                # Visible in the timeline: a transient trouble and when it is retried.
                await self._event(
                    conn,
                    step,
                    "step.backoff",
                    {
                        "step": step.name,
                        "code": reason,
                        "errors": step.poll_errors + 1,
                        "delay_s": round(delay, 3),
                    },
                )
        except VidpipeError as exc:
            log.info("step %s: could not back off (%s)", step.id, exc)

    # -- canceling -------------------------------------------------------------

    async def _cancel(self, step: Step) -> None:
        async with self.db.point_read() as conn:
            attempt = await step_q.current_attempt(conn, step.id)
        provider = self.registry.get(step.provider)
        if (
            attempt is not None
            and attempt.provider_job_id is not None
            and attempt.state == AttemptState.SUBMITTED.value
            and provider is not None
        ):
            try:
                await provider.cancel(attempt.provider_job_id)
            except TransientProviderError as exc:
                if step.poll_errors + 1 < MAX_POLL_ERRORS:
                    await self._back_off(step, exc.code, retry_after_s=exc.retry_after_s)
                    return
                log.warning("step %s: provider cancel kept failing: %s", step.id, exc)
            except PermanentProviderError as exc:
                log.warning("step %s: provider refused cancel: %s", step.id, exc)
        now = self.clock.now()
        async with self.db.write() as conn:
            if attempt is not None and attempt.state in (
                AttemptState.SUBMITTING.value,
                AttemptState.SUBMITTED.value,
            ):
                await step_q.transition_attempt(
                    conn, attempt.id, AttemptState.CANCELED, finished_at=now
                )
                billed = provider is not None and provider.bills_failures
                await ledger.finish_attempt(
                    conn,
                    attempt.id,
                    self._charge(step, attempt),
                    attempt.reserved_micros if billed and attempt.provider_job_id else None,
                    now,
                )
            await step_q.update_step(
                conn, step, to=StepState.CANCELED, release=True, finished_at=now, updated_at=now
            )
            await self._event(conn, step, "step.canceled", {"step": step.name})

    async def _event(
        self,
        conn: AsyncConnection,
        step: Step,
        type: str,
        data: dict[str, Any],
        *,
        job: Job | None = None,
    ) -> None:
        """Record an event; ``job``, when the caller has it as it now stands, saves the
        read back a public event's webhook payload needs."""
        obs.stage(type, data)
        await events.record(
            conn,
            job_id=step.job_id,
            tenant_id=step.tenant_id,
            type=type,
            data=data,
            now=self.clock.now(),
            job=job,
        )


def _classify(exc: ProviderError) -> Failure:
    if isinstance(exc, TransientProviderError):
        return Failure(ErrorClass.TRANSIENT, exc.code, exc.message, exc.retry_after_s)
    return Failure(ErrorClass.PERMANENT, exc.code, exc.message)
