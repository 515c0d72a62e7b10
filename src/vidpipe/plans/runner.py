"""Running a local step on a worker: inputs fetched, handler run, files stored, state written.

The step stays ``ready`` and leased while it runs (the worker's heartbeats keep the
lease); if the worker dies, the lease expires and another worker runs the step again.
Compose checkpoints live in ``<home>/work/<job>/<step>`` so that the replacement reuses
every finished scene segment. Every write is guarded by the lease token, as for
provider steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidpipe.blobs.base import job_key
from vidpipe.core.delivery import QualityRejected
from vidpipe.core.provenance import hash_file
from vidpipe.core.retry import ErrorClass
from vidpipe.core.states import JobStatus, StepState
from vidpipe.errors import (
    IllegalTransition,
    InvalidRequest,
    LeaseLost,
    MediaError,
    PermanentProviderError,
    ProvenanceError,
    TransientProviderError,
    VidpipeError,
)
from vidpipe.ids import new_id
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.policy import ValidationPolicy
from vidpipe.plans.handlers import HANDLERS, OutFile, StepContext, StepFailed, StepResult
from vidpipe.plans.kinds import KINDS, validate_resolved
from vidpipe.providers.base import VideoRequest
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store.records import Step

if TYPE_CHECKING:
    import httpx

    from vidpipe.core.executor import StepExecutor

log = logging.getLogger("vidpipe.plans")

# Transient troubles (a busy LLM, a killed ffmpeg) are tried this many times in all.
MAX_LOCAL_TRIES = 4
PROGRESS_EVERY_S = 1.0
FINAL = "_final"


def is_final(step: Step) -> bool:
    """Whether the step's video is the job's video (single-clip jobs have no marker)."""
    return bool(step.params.get(FINAL, True))


def checkpoint_dir(home: Path, step: Step) -> Path:
    return home / "work" / step.job_id / step.name


class LocalStepRunner:
    def __init__(
        self,
        executor: StepExecutor,
        http: httpx.AsyncClient,
        operator_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.ex = executor
        # User URLs (media, music) go through the guarded client; endpoints the
        # operator configured (LLM, speech APIs) through the other.
        self.http = http
        self.operator_http = operator_http or http

    async def run(self, step: Step) -> None:
        ex = self.ex
        if step.kind not in HANDLERS:
            await self._fail(step, "unknown_step_kind", f"no local step kind {step.kind!r}")
            return
        await self._start(step)
        work = ex.tmp_dir / f"{step.id}-{new_id('w')}"
        work.mkdir(parents=True, exist_ok=True)
        checkpoints = checkpoint_dir(ex.settings.home, step)
        checkpoints.mkdir(parents=True, exist_ok=True)
        progress = _Progress()
        flusher = asyncio.create_task(self._flush_progress(step, progress))
        try:
            raw = {key: value for key, value in step.params.items() if not key.startswith("_")}
            validate_resolved(step.kind, raw)
            prepared = await self._fetch_inputs(step, raw, work / "inputs")
            params = validate_resolved(step.kind, prepared)
            ctx = StepContext(
                job_id=step.job_id,
                step_name=step.name,
                work_dir=work,
                checkpoint_dir=checkpoints,
                settings=ex.settings,
                http=self.http,
                operator_http=self.operator_http,
                guard=ex.guard,
                ffmpeg=find_ffmpeg(ex.settings.ffmpeg),
                progress=progress.set,
            )
            result = await HANDLERS[step.kind](ctx, params)
            await progress.stop_flusher(flusher)
            await self._finish(step, result, work)
            shutil.rmtree(checkpoints, ignore_errors=True)
        except StepAborted as exc:
            log.info("step %s: stopped, the step is %s", step.id, exc)
            async with ex.db.write() as conn:
                await step_q.release_lease(conn, step)
        except StepFailed as exc:
            if exc.transient:
                await self._retry_or_fail(step, exc.code, exc.message, exc.retry_after_s)
            else:
                await self._fail(step, exc.code, exc.message)
        except QualityRejected as exc:
            await self._fail(step, exc.code, exc.message, ErrorClass.QUALITY)
        except ProvenanceError as exc:
            await self._fail(step, exc.code, exc.message)
        except TransientProviderError as exc:
            await self._retry_or_fail(step, exc.code, exc.message, exc.retry_after_s)
        except PermanentProviderError as exc:
            await self._fail(step, exc.code, exc.message)
        except (LeaseLost, IllegalTransition):
            raise  # the executor's handler: someone else's state wins
        except InvalidRequest as exc:
            await self._fail(step, exc.code, exc.message)
        except MediaError as exc:
            # ffmpeg killed or out of resources, or a bad input: a few tries, then fail.
            await self._retry_or_fail(step, exc.code, exc.message, None)
        finally:
            await progress.stop_flusher(flusher)
            shutil.rmtree(work, ignore_errors=True)

    # -- inputs ------------------------------------------------------------------

    async def _fetch_inputs(self, step: Step, params: Any, into: Path) -> Any:
        """Every file of ``params`` (a dict with a ``key``) gets a local ``path``.

        Only this job's files may be read: a key is never trusted just because it is
        in the params (custom plans could name another tenant's key otherwise).
        """
        prefix = job_key(step.tenant_id, step.job_id, "x")[:-1]
        counter = 0

        async def walk(value: Any) -> Any:
            nonlocal counter
            if isinstance(value, dict):
                out = {k: await walk(v) for k, v in value.items()}
                key = value.get("key")
                if isinstance(key, str):
                    if not key.startswith(prefix):
                        raise InvalidRequest(
                            "a step may only read files of its own job",
                            code="invalid_step_params",
                        )
                    local = self.ex.blobs.local_path(key)
                    if local is None:
                        counter += 1
                        await asyncio.to_thread(into.mkdir, parents=True, exist_ok=True)
                        local = into / f"{counter:03d}-{key.rsplit('/', 1)[-1]}"
                        with local.open("wb") as handle:
                            async for chunk in self.ex.blobs.open_range(key):
                                handle.write(chunk)
                    if not await asyncio.to_thread(local.is_file):
                        raise StepFailed("missing_input", f"input {key} is not in storage")
                    out["path"] = str(local)
                return out
            if isinstance(value, list):
                return [await walk(v) for v in value]
            return value

        return await walk(params)

    # -- progress and states -----------------------------------------------------

    async def _start(self, step: Step) -> None:
        ex = self.ex
        now = ex.clock.now()
        async with ex.db.write() as conn:
            job = await job_q.get_job(conn, step.job_id)
            if job is not None and job.status == JobStatus.QUEUED.value:
                await job_q.transition_job(conn, step.job_id, JobStatus.IN_PROGRESS, started_at=now)
                await ex._event(conn, step, "video.in_progress", {"status": "in_progress"})
            await ex._event(
                conn,
                step,
                "step.started",
                {"step": step.name, "kind": step.kind, "try": step.poll_errors + 1},
            )

    async def _flush_progress(self, step: Step, progress: _Progress) -> None:
        """Write the step's progress (and the job's weighted share) now and then, and
        stop the handler at its next progress report if the step is no longer this
        worker's to run (the job was canceled, or another worker took the lease)."""
        written = -1
        while not progress.finished.is_set():
            # Woken early when the handler is done: never cancelled mid-write, which
            # would leave a half-opened database connection behind.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.finished.wait(), PROGRESS_EVERY_S)
            if progress.finished.is_set():
                return
            async with self.ex.db.point_read() as conn:
                current = await step_q.get_step(conn, step.id)
            if (
                current is None
                or current.lease_token != step.lease_token
                or current.state != StepState.READY.value
            ):
                progress.abort(current.state if current is not None else "gone")
                return
            share = min(int(progress.value * 100), 99)
            if share <= written:
                continue
            try:
                async with self.ex.db.write() as conn:
                    await step_q.update_step(conn, step, progress=share)
                    await self.ex._update_job_progress(conn, step, share)
                written = share
            except VidpipeError as exc:
                log.info("step %s: progress not written (%s)", step.id, exc)
                progress.abort(exc.code)
                return

    async def _finish(self, step: Step, result: StepResult, work: Path) -> None:
        ex = self.ex
        final = is_final(step) and KINDS[step.kind].output == "video"
        stored: dict[str, dict[str, Any]] = {}
        assets: list[dict[str, Any]] = []
        main = result.files.get("main")
        # Storing overwrites the job's files: only while this worker's claim stands.
        async with ex.db.point_read() as conn:
            if not await step_q.holds_lease(conn, step):
                raise LeaseLost(f"step {step.id}: lease taken over before storing")
        if final and main is not None:
            delivered = await self._deliver_final(step, result, main, work)
            for file in (delivered.video, *delivered.extras):
                assets.append(
                    _asset(
                        file.name,
                        file.key,
                        file.sha256,
                        file.bytes,
                        file.content_type,
                        file.media,
                        file.validation,
                    )
                )
            stored["main"] = {
                "key": delivered.video.key,
                "sha256": delivered.video.sha256,
                "bytes": delivered.video.bytes,
            }
        for role, file in result.files.items():
            if role == "main" and final:
                continue
            if final:
                name = f"captions.{role}" if role in ("srt", "vtt") else f"{step.name}.{role}"
            else:
                name = f"{step.name}.{role}{file.path.suffix}"
            stored[role] = await self._put(step, name, file)
            assets.append(
                _asset(
                    name,
                    stored[role]["key"],
                    stored[role]["sha256"],
                    stored[role]["bytes"],
                    file.content_type,
                )
            )
        output = dict(result.output)
        for role, facts in stored.items():
            if role == "main":
                output.update(facts)
            else:
                output[role] = facts
        now = ex.clock.now()
        async with ex.db.write() as conn:
            await job_q.replace_assets(
                conn,
                [
                    {
                        "id": new_id("asset"),
                        "tenant_id": step.tenant_id,
                        "job_id": step.job_id,
                        "step_id": step.id,
                        "created_at": now,
                        **asset,
                    }
                    for asset in assets
                ],
            )
            await step_q.update_step(
                conn,
                step,
                to=StepState.SUCCEEDED,
                release=True,
                progress=100,
                output=output,
                finished_at=now,
                updated_at=now,
            )
            await ex._event(
                conn,
                step,
                "step.succeeded",
                {"step": step.name, "kind": step.kind, **_summary(output)},
            )
            await ex._after_success(conn, step, now)

    async def _deliver_final(
        self, step: Step, result: StepResult, main: OutFile, work: Path
    ) -> Any:
        """The plan's video: validated like any provider's output, then stored with its
        thumbnail, poster, preview and manifest."""
        ex = self.ex
        width = int(result.output.get("width") or 0)
        height = int(result.output.get("height") or 0)
        duration = float(result.output.get("duration_s") or 0.0)
        request = VideoRequest(
            model=f"{step.provider}/{step.kind}",
            prompt=str(step.params.get("_prompt") or ""),
            seconds=max(1, round(duration)),
            width=width,
            height=height,
        )
        checked = await ex.delivery.inspect(
            main.path,
            request,
            # A composition may hold a still on purpose (a chat screenshot, a quote
            # card without motion): frozen frames are reported, not failed, and such a
            # file compresses far below the size that flags a provider's placeholder.
            ValidationPolicy.from_overrides(
                {"max_frozen_fraction": 1.0, "min_size_bytes": 1024},
                base=ValidationPolicy.from_overrides(ex.settings.validation_policy),
            ),
            full=ex.settings.validation_mode == "full",
            expected_seconds=duration,
        )
        sha256, size = await asyncio.to_thread(hash_file, main.path)
        return await ex.delivery.store(
            tenant_id=step.tenant_id,
            job_id=step.job_id,
            video=main.path,
            sha256=sha256,
            size=size,
            checked=checked,
            wanted=list(step.params.get("_derivatives") or []),
            manifest=await self._manifest(step),
            work_dir=work,
        )

    async def _manifest(self, step: Step) -> dict[str, Any]:
        async with self.ex.db.point_read() as conn:
            job = await job_q.get_job(conn, step.job_id)
            plan = await step_q.steps_of_job(conn, step.job_id)
            history = await step_q.attempts_of_job(conn, step.job_id)
        return {
            "job_id": step.job_id,
            "tenant_id": step.tenant_id,
            "created_at": job.created_at if job else None,
            "request": job.params if job else None,
            "provider": step.provider,
            "model": step.kind,
            "steps": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "provider": s.provider,
                    "model": s.model,
                    "sha256": (s.output or {}).get("sha256"),
                }
                for s in plan
            ],
            "attempts": [
                {
                    "step_id": a.step_id,
                    "number": a.number,
                    "provider": a.provider,
                    "model": a.model,
                    "provider_job_id": a.provider_job_id,
                    "state": a.state,
                }
                for a in history
            ],
        }

    async def _put(self, step: Step, name: str, file: OutFile) -> dict[str, Any]:
        key = job_key(step.tenant_id, step.job_id, name)
        sha256, size = await asyncio.to_thread(hash_file, file.path)
        await self.ex.blobs.put_file(key, file.path, file.content_type)
        return {"key": key, "sha256": sha256, "bytes": size}

    async def _retry_or_fail(
        self, step: Step, code: str, message: str, retry_after_s: float | None
    ) -> None:
        if step.poll_errors + 1 < MAX_LOCAL_TRIES:
            log.info("step %s: %s (%s); trying again", step.id, code, message)
            await self.ex._back_off(step, code, retry_after_s=retry_after_s)
            return
        await self._fail(step, code, message, ErrorClass.TRANSIENT)

    async def _fail(
        self,
        step: Step,
        code: str,
        message: str,
        error_class: ErrorClass = ErrorClass.PERMANENT,
    ) -> None:
        from vidpipe.core.executor import Failure

        log.info("step %s (%s) failed: %s %s", step.id, step.kind, code, message)
        await self.ex._fail_step(step, None, Failure(error_class, code, message))


class StepAborted(Exception):
    """The step stopped being this worker's while its handler ran."""


class _Progress:
    """The latest share done, set from the handler's thread, read by the flusher; a
    report after ``abort`` raises, which stops a compose between two pieces (the
    pieces finished so far stay as checkpoints)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.aborted: str | None = None
        self.finished = asyncio.Event()

    async def stop_flusher(self, flusher: asyncio.Task[None]) -> None:
        self.finished.set()
        try:
            await flusher
        except Exception:  # progress is a convenience: never fail the step for it
            log.exception("progress writer failed")

    def set(self, share: float) -> None:
        if self.aborted is not None:
            raise StepAborted(self.aborted)
        self.value = max(self.value, min(max(share, 0.0), 1.0))

    def abort(self, reason: str) -> None:
        self.aborted = reason


def _asset(
    name: str,
    key: str,
    sha256: str,
    size: int,
    content_type: str,
    media: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "key": key,
        "sha256": sha256,
        "bytes": size,
        "content_type": content_type,
        "media": media,
        "validation": validation,
    }


def _summary(output: dict[str, Any]) -> dict[str, Any]:
    """What the step.succeeded event says: small facts, not the whole output."""
    keep = ("sha256", "bytes", "duration_s", "kind")
    return {key: output[key] for key in keep if key in output}
