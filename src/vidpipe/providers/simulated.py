"""The simulated provider: a cloud with a configurable bad day, for demos, chaos and load.

Provider "simulated", model "sim-1". Each job's fate is drawn once from a
``random.Random`` seeded by the configured seed and the job's idempotency key, so the
same key under the same seed always meets the same outcome, latency and webhook
misbehaviour (see :func:`plan_job`, which is pure). Outcomes: success; generation
failure (some by content policy); corrupt output (bytes that are no MP4); truncated
output (a real MP4, shorter than asked); wrong resolution; an expired output URL; or a
hang (the job never finishes). Calls fail transiently at configured rates, sometimes
with Retry-After, and a submit may even create its job and then lose the answer.

Any worker process can poll any job: the job id carries the key's digest, the request
shape and the submit time, and the state directory holds what the id cannot (the
idempotency record, cancel markers). Outputs are real MP4s rendered once per
(size, seconds, variant) by the local renderer and cached in the state directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vidpipe.errors import ConfigError, MediaError, PermanentProviderError, TransientProviderError
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.render import render_prompt_video
from vidpipe.providers.base import (
    ByteSink,
    ModelInfo,
    OutputRef,
    PollResult,
    Provider,
    ProviderStatus,
    VideoRequest,
    WebhookEvent,
    WebhookRejected,
)
from vidpipe.providers.replicate import (
    sign_standard_webhook,
    standard_webhook_key,
    verify_standard_webhook,
)

__all__ = [
    "MODEL",
    "JobPlan",
    "Outcome",
    "PlannedWebhook",
    "SimulatedConfig",
    "SimulatedConfigError",
    "SimulatedProvider",
    "WebhookDelivery",
    "plan_job",
]

MODEL = ModelInfo(
    id="sim-1",
    sizes=("640x360", "360x640", "1280x720", "720x1280", "1920x1080", "1080x1920", "720x720"),
    min_seconds=1,
    max_seconds=20,
    kinds=("text-to-video", "image-to-video"),
    fps=30,
    description="Simulated cloud model: configurable latency, failures and bad outputs.",
)

_JOB_ID = re.compile(r"sim_([0-9a-f]{16})_(\d+)x(\d+)x(\d+)_(\d+)")
_CHUNK_BYTES = 1024 * 1024
_CORRUPT_BYTES = 64 * 1024
# Where a hung job's progress sticks.
_HANG_PROGRESS = 42


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    CONTENT_POLICY = "content_policy"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    WRONG_RESOLUTION = "wrong_resolution"
    EXPIRED = "expired"
    HANG = "hang"


# The order outcomes are drawn in: part of what a seed means, so never reorder.
_DRAWN = (
    (Outcome.FAILED, "failure_rate"),
    (Outcome.CONTENT_POLICY, "content_policy_rate"),
    (Outcome.CORRUPT, "corrupt_rate"),
    (Outcome.TRUNCATED, "truncated_rate"),
    (Outcome.WRONG_RESOLUTION, "wrong_resolution_rate"),
    (Outcome.EXPIRED, "expired_rate"),
    (Outcome.HANG, "hang_rate"),
)
_SUCCEEDING = frozenset(
    {Outcome.OK, Outcome.CORRUPT, Outcome.TRUNCATED, Outcome.WRONG_RESOLUTION, Outcome.EXPIRED}
)
_VARIANTS = frozenset(outcome.value for outcome in _SUCCEEDING)


class SimulatedConfigError(ConfigError, ValueError):
    """A SimulatedConfig that makes no sense (also a ValueError, for settings validators)."""


@dataclass(frozen=True)
class SimulatedConfig:
    """How the simulated cloud behaves. Rates are probabilities in [0, 1].

    Outcome rates (failure … hang) are shares of jobs and together at most 1; the rest
    succeed cleanly. Transient rates apply to each call independently.
    """

    seed: int = 0
    # Lognormal job latency: median and sigma, clamped to [min, max].
    latency_median_s: float = 2.0
    latency_sigma: float = 0.5
    latency_min_s: float = 0.1
    latency_max_s: float = 120.0
    # Share of a job's latency spent queued before it runs.
    queued_share: float = 0.25
    # Calls that fail with TransientProviderError.
    submit_error_rate: float = 0.0
    # Submits that create the job, then lose the answer (a transient error).
    submit_lost_response_rate: float = 0.0
    poll_error_rate: float = 0.0
    # Share of transient errors that carry a Retry-After, and its value.
    retry_after_rate: float = 0.5
    retry_after_s: float = 1.0
    # Job outcomes.
    failure_rate: float = 0.0
    content_policy_rate: float = 0.0
    corrupt_rate: float = 0.0
    truncated_rate: float = 0.0
    wrong_resolution_rate: float = 0.0
    expired_rate: float = 0.0
    hang_rate: float = 0.0
    # Webhook misbehaviour, each drawn independently per job.
    webhook_duplicate_rate: float = 0.0
    webhook_late_rate: float = 0.0
    webhook_late_s: float = 30.0
    webhook_out_of_order_rate: float = 0.0
    webhook_missing_rate: float = 0.0
    # ``whsec_…``: sign webhooks (Standard Webhooks); None means no webhooks.
    webhook_secret: str | None = None
    # Reported cost (cost_usd) per second of video; None reports no cost.
    cost_usd_per_second: float | None = None
    # Whether failed jobs report their cost too (some providers bill failures).
    bill_failures: bool = False

    def __post_init__(self) -> None:
        problems = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith(("_rate", "_share")) and not 0.0 <= value <= 1.0:
                problems.append(f"{item.name} must be in [0, 1], not {value}")
            elif item.name.endswith("_s") and value < 0:
                problems.append(f"{item.name} must be >= 0, not {value}")
        if self.latency_min_s > self.latency_max_s:
            problems.append("latency_min_s is above latency_max_s")
        if self.latency_median_s <= 0:
            problems.append("latency_median_s must be > 0")
        if self.latency_sigma < 0:
            problems.append("latency_sigma must be >= 0")
        outcome_total = sum(getattr(self, rate) for _, rate in _DRAWN)
        if outcome_total > 1.0 + 1e-9:
            problems.append(f"outcome rates add up to {outcome_total:g}, more than 1")
        if self.cost_usd_per_second is not None and self.cost_usd_per_second < 0:
            problems.append("cost_usd_per_second must be >= 0")
        if self.webhook_secret is not None:
            try:
                standard_webhook_key(self.webhook_secret)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise SimulatedConfigError("simulated provider: " + "; ".join(problems))

    @classmethod
    def from_json(cls, text: str) -> SimulatedConfig:
        """Parse a JSON object of fields (all optional); unknown keys are refused."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SimulatedConfigError(f"simulated provider config is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SimulatedConfigError("simulated provider config must be a JSON object")
        types = {item.name: item.type for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise SimulatedConfigError(f"unknown simulated provider settings: {', '.join(unknown)}")
        for name, value in data.items():
            if not _json_type_ok(str(types[name]), value):
                raise SimulatedConfigError(f"{name}: {value!r} is not a {types[name]}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _json_type_ok(declared: str, value: Any) -> bool:
    if value is None:
        return "None" in declared
    if isinstance(value, bool):
        return declared.startswith("bool")
    if declared.startswith("int"):
        return isinstance(value, int)
    if declared.startswith("float"):
        return isinstance(value, int | float)
    if declared.startswith("str"):
        return isinstance(value, str)
    return False


@dataclass(frozen=True)
class PlannedWebhook:
    """One delivery the simulated cloud would send, relative to the job's submission."""

    after_s: float
    # Which event: "running" or "terminal".
    event: str
    # Deliveries of one event share it (a duplicate is the same event again).
    event_id: str


@dataclass(frozen=True)
class JobPlan:
    outcome: Outcome
    latency_s: float
    queued_s: float
    webhooks: tuple[PlannedWebhook, ...]


def plan_job(config: SimulatedConfig, job_key: str) -> JobPlan:
    """A job's whole fate, from the seed and the job's key only (pure, reproducible)."""
    rng = random.Random(f"{config.seed}:{job_key}")
    draw = rng.random()
    outcome = Outcome.OK
    for candidate, rate in _DRAWN:
        share = getattr(config, rate)
        if draw < share:
            outcome = candidate
            break
        draw -= share
    latency = config.latency_median_s * math.exp(config.latency_sigma * rng.gauss(0.0, 1.0))
    latency = min(max(latency, config.latency_min_s), config.latency_max_s)
    queued = latency * config.queued_share
    # Always draw every behaviour, so one rate's value never shifts another's draws.
    missing = rng.random() < config.webhook_missing_rate
    duplicate = rng.random() < config.webhook_duplicate_rate
    late = rng.random() < config.webhook_late_rate
    out_of_order = rng.random() < config.webhook_out_of_order_rate
    running = PlannedWebhook(queued, "running", f"{job_key}-running")
    if outcome is Outcome.HANG:
        return JobPlan(outcome, latency, queued, (running,))
    terminal_at = latency + (config.webhook_late_s if late else 0.0)
    terminal = PlannedWebhook(terminal_at, "terminal", f"{job_key}-terminal")
    deliveries = []
    if out_of_order:
        # The running event arrives after the terminal one.
        running = dataclasses.replace(running, after_s=terminal_at + 0.5)
    deliveries.append(running)
    if not missing:
        deliveries.append(terminal)
        if duplicate:
            deliveries.append(dataclasses.replace(terminal, after_s=terminal_at + 1.0))
    deliveries.sort(key=lambda planned: planned.after_s)
    return JobPlan(outcome, latency, queued, tuple(deliveries))


@dataclass(frozen=True)
class WebhookDelivery:
    """A webhook the simulated cloud would POST: when, where, and exactly what."""

    deliver_at: float
    url: str | None
    event_id: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class _JobRef:
    job_id: str
    key_digest: str
    width: int
    height: int
    seconds: int
    submitted_at: float


class SimulatedProvider(Provider):
    """Provider "simulated": see the module docstring."""

    name = "simulated"
    accepts_idempotency_key = True
    # Procedural clips compress to a few kilobytes a second: a size floor meant for
    # generated footage would reject them.
    validation_overrides = {"min_size_bytes": 1000}
    typical_latency_s = 2.0
    supports_webhooks = True

    def __init__(
        self,
        state_dir: Path,
        config: SimulatedConfig,
        *,
        ffmpeg: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(http=None)
        self.state_dir = state_dir
        self.config = config
        self.bills_failures = config.bill_failures
        self._ffmpeg = ffmpeg
        # Wall-clock time: other processes compare it with the submit time in job ids.
        self._clock = clock
        self._webhook_key = (
            None if config.webhook_secret is None else standard_webhook_key(config.webhook_secret)
        )
        self.supports_webhooks = self._webhook_key is not None
        self.typical_latency_s = config.latency_median_s
        # Calls so far per (call, job) in this process: the index of a call's draw.
        self._calls: dict[str, int] = {}

    def models(self) -> tuple[ModelInfo, ...]:
        return (MODEL,)

    @staticmethod
    def key_digest(idempotency_key: str) -> str:
        return hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    # --- submit / poll / cancel ---------------------------------------------------------

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        _check_request(request)
        digest = self.key_digest(idempotency_key)
        rng = self._call_rng("submit", digest)
        self._maybe_fail(rng, self.config.submit_error_rate, "submit")
        job_id = await asyncio.to_thread(self._create_job, request, digest)
        if rng.random() < self.config.submit_lost_response_rate:
            raise TransientProviderError(
                "simulated: the job was created but the answer was lost", code="network"
            )
        return job_id

    async def poll(self, provider_job_id: str) -> PollResult:
        job = self._parse(provider_job_id)
        rng = self._call_rng("poll", provider_job_id)
        self._maybe_fail(rng, self.config.poll_error_rate, "poll")
        canceled_at = await asyncio.to_thread(self._canceled_at, provider_job_id)
        return self._result_at(job, self._clock(), canceled_at)

    async def cancel(self, provider_job_id: str) -> None:
        job = self._parse(provider_job_id)
        now = self._clock()
        if self._result_at(job, now, None).status.terminal:
            return
        await asyncio.to_thread(self._mark_canceled, provider_job_id, now)

    def plan(self, provider_job_id: str) -> JobPlan:
        """The fate of a job this provider made (for tests and dashboards)."""
        return plan_job(self.config, self._parse(provider_job_id).key_digest)

    def _result_at(self, job: _JobRef, now: float, canceled_at: float | None) -> PollResult:
        plan = plan_job(self.config, job.key_digest)
        done_at = None if plan.outcome is Outcome.HANG else job.submitted_at + plan.latency_s
        if canceled_at is not None and (done_at is None or canceled_at < done_at):
            return PollResult(ProviderStatus.CANCELED)
        elapsed = now - job.submitted_at
        if elapsed < plan.queued_s:
            return PollResult(
                ProviderStatus.QUEUED, progress=0, next_poll_s=_hint(plan.queued_s - elapsed)
            )
        if plan.outcome is Outcome.HANG:
            return PollResult(ProviderStatus.RUNNING, progress=_HANG_PROGRESS, next_poll_s=5.0)
        if elapsed < plan.latency_s:
            share = (elapsed - plan.queued_s) / max(plan.latency_s - plan.queued_s, 1e-9)
            return PollResult(
                ProviderStatus.RUNNING,
                progress=min(int(share * 100), 99),
                next_poll_s=_hint(plan.latency_s - elapsed),
            )
        return self._terminal(job, plan.outcome)

    def _terminal(self, job: _JobRef, outcome: Outcome) -> PollResult:
        per_second = self.config.cost_usd_per_second
        cost = None if per_second is None else round(per_second * job.seconds, 6)
        if outcome in _SUCCEEDING:
            return PollResult(
                ProviderStatus.SUCCEEDED,
                progress=100,
                outputs=(OutputRef(f"sim://{job.job_id}/{outcome.value}"),),
                cost_usd=cost,
            )
        failed_cost = cost if self.config.bill_failures or cost is None else 0.0
        if outcome is Outcome.CONTENT_POLICY:
            return PollResult(
                ProviderStatus.FAILED,
                error_code="content_policy",
                error_message="simulated: the output was flagged by the content filter",
                cost_usd=failed_cost,
            )
        return PollResult(
            ProviderStatus.FAILED,
            error_code="generation_failed",
            error_message="simulated: the generation failed",
            cost_usd=failed_cost,
        )

    # --- outputs ------------------------------------------------------------------------

    async def fetch_output(self, output: OutputRef, sink: ByteSink) -> None:
        match = re.fullmatch(r"sim://([^/]+)/([a-z_]+)", output.url)
        variant = Outcome(match.group(2)) if match and match.group(2) in _VARIANTS else None
        if match is None or variant is None:
            raise PermanentProviderError(
                f"refusing to read {output.url}: not an output of this provider",
                code="output_forbidden",
            )
        job = self._parse(match.group(1))
        if variant is Outcome.EXPIRED:
            raise PermanentProviderError(
                f"simulated: {output.url} has expired", code="output_unavailable"
            )
        if variant is Outcome.CORRUPT:
            await sink(_corrupt_bytes(job.key_digest))
            return
        width, height, seconds = job.width, job.height, float(job.seconds)
        if variant is Outcome.TRUNCATED:
            seconds = max(round(seconds / 2, 2), 0.5)
        elif variant is Outcome.WRONG_RESOLUTION:
            width, height = _half_even(width), _half_even(height)
        path = await asyncio.to_thread(self._clip, width, height, seconds)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK_BYTES):
                await sink(chunk)
        finally:
            handle.close()

    def _clip(self, width: int, height: int, seconds: float) -> Path:
        clips = self.state_dir / "clips"
        path = clips / f"{width}x{height}x{seconds:g}.mp4"
        if path.exists():
            return path
        clips.mkdir(parents=True, exist_ok=True)
        # Each render in its own directory, renamed into place: concurrent first
        # fetches (in any process) never see a half-written clip.
        work = Path(tempfile.mkdtemp(prefix="render-", dir=clips))
        try:
            render_prompt_video(
                "simulated provider output",
                seconds=seconds,
                width=width,
                height=height,
                fps=MODEL.fps,
                seed=1,
                out_path=work / "clip.mp4",
                work_dir=work,
                progress_path=work / "progress.txt",
                ffmpeg=self._find_ffmpeg(),
            )
            os.replace(work / "clip.mp4", path)
        except MediaError as exc:
            raise PermanentProviderError(
                f"simulated: could not render the output: {exc.message}", code="render_failed"
            ) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return path

    def _find_ffmpeg(self) -> Path:
        if self._ffmpeg is not None:
            return self._ffmpeg
        try:
            return find_ffmpeg()
        except MediaError as exc:
            raise PermanentProviderError(exc.message, code=exc.code) from exc

    # --- webhooks -----------------------------------------------------------------------

    def webhook_deliveries(self, provider_job_id: str) -> list[WebhookDelivery]:
        """The webhooks this job's plan sends, in delivery order, signed and ready to POST.

        Empty when webhooks are off. A duplicate repeats an event id; a late terminal
        event comes ``webhook_late_s`` after the job ended; out of order puts the
        running event after the terminal one; missing drops the terminal event.
        """
        if self._webhook_key is None:
            return []
        job = self._parse(provider_job_id)
        plan = plan_job(self.config, job.key_digest)
        url = self._record(job.key_digest).get("callback_url")
        deliveries = []
        for planned in plan.webhooks:
            if planned.event == "running":
                result = PollResult(ProviderStatus.RUNNING, progress=0)
            else:
                result = self._terminal(job, plan.outcome)
            body = json.dumps(_webhook_payload(provider_job_id, result)).encode()
            deliver_at = job.submitted_at + planned.after_s
            timestamp = int(deliver_at)
            headers = {
                "webhook-id": planned.event_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_standard_webhook(
                    self._webhook_key, planned.event_id, timestamp, body
                ),
                "content-type": "application/json",
            }
            deliveries.append(
                WebhookDelivery(
                    deliver_at=deliver_at,
                    url=url if isinstance(url, str) else None,
                    event_id=planned.event_id,
                    headers=headers,
                    body=body,
                )
            )
        return deliveries

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookEvent:
        if self._webhook_key is None:
            raise WebhookRejected("simulated: webhooks are off", code="webhooks_unconfigured")
        event_id = verify_standard_webhook(self._webhook_key, headers, body, now)
        try:
            data = json.loads(body)
            result = PollResult(
                ProviderStatus(data["status"]),
                progress=data.get("progress"),
                outputs=tuple(OutputRef(url) for url in data.get("outputs", [])),
                error_code=data.get("error_code"),
                error_message=data.get("error_message"),
                cost_usd=data.get("cost_usd"),
            )
            job_id = str(data["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookRejected(
                f"simulated: bad webhook body: {exc}", code="webhook_malformed"
            ) from exc
        return WebhookEvent(event_id=event_id, provider_job_id=job_id, result=result)

    # --- state --------------------------------------------------------------------------

    def _create_job(self, request: VideoRequest, digest: str) -> str:
        """The key's job: the one already recorded, else a new one recorded atomically."""
        existing = self._record(digest)
        if existing:
            return str(existing["job_id"])
        keys = self.state_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        submitted_ms = int(self._clock() * 1000)
        job_id = f"sim_{digest}_{request.width}x{request.height}x{request.seconds}_{submitted_ms}"
        record = {"job_id": job_id, "callback_url": request.callback_url}
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=keys)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            # link() fails if the name exists: of racing submits one wins, and the
            # record appears complete or not at all.
            os.link(tmp, keys / digest)
        except FileExistsError:
            return str(self._record(digest)["job_id"])
        finally:
            os.unlink(tmp)
        return job_id

    def _record(self, digest: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "keys" / digest).read_text())
        except FileNotFoundError:
            return {}
        return data

    def _canceled_at(self, job_id: str) -> float | None:
        try:
            return float((self.state_dir / "canceled" / job_id).read_text())
        except FileNotFoundError:
            return None

    def _mark_canceled(self, job_id: str, now: float) -> None:
        canceled = self.state_dir / "canceled"
        canceled.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=canceled)
        with os.fdopen(fd, "w") as handle:
            handle.write(repr(now))
        try:
            # The first cancel's time stands; later ones change nothing.
            os.link(tmp, canceled / job_id)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)

    def _parse(self, job_id: str) -> _JobRef:
        match = _JOB_ID.fullmatch(job_id)
        if match is None:
            raise PermanentProviderError(
                f"no simulated job {job_id!r}", code="not_found", provider_job_id=job_id
            )
        digest, width, height, seconds, submitted_ms = match.groups()
        return _JobRef(
            job_id, digest, int(width), int(height), int(seconds), int(submitted_ms) / 1000
        )

    def _call_rng(self, call: str, ident: str) -> random.Random:
        """The draws of this call: the nth call for a job in this process, under the seed."""
        name = f"{call}:{ident}"
        index = self._calls.get(name, 0)
        self._calls[name] = index + 1
        # The process id too: workers polling one job in turn must not all replay the
        # same sequence of failures (that would make long failure streaks common).
        return random.Random(f"{self.config.seed}:{os.getpid()}:{name}:{index}")

    def _maybe_fail(self, rng: random.Random, rate: float, call: str) -> None:
        failed = rng.random() < rate
        with_hint = rng.random() < self.config.retry_after_rate
        if failed:
            raise TransientProviderError(
                f"simulated: {call} failed (HTTP 503)",
                code="http_503",
                retry_after_s=self.config.retry_after_s if with_hint else None,
            )


def _check_request(request: VideoRequest) -> None:
    problems = []
    if request.model != MODEL.id:
        problems.append(f"unknown model {request.model!r}")
    if f"{request.width}x{request.height}" not in MODEL.sizes:
        problems.append(f"size {request.width}x{request.height} not in {', '.join(MODEL.sizes)}")
    if not MODEL.min_seconds <= request.seconds <= MODEL.max_seconds:
        problems.append(
            f"seconds {request.seconds} not in {MODEL.min_seconds}..{MODEL.max_seconds}"
        )
    if problems:
        raise PermanentProviderError("; ".join(problems), code="invalid_request")


def _webhook_payload(job_id: str, result: PollResult) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": result.status.value,
        "progress": result.progress,
        "outputs": [output.url for output in result.outputs],
        "error_code": result.error_code,
        "error_message": result.error_message,
        "cost_usd": result.cost_usd,
    }


def _hint(remaining_s: float) -> float:
    return round(min(max(remaining_s, 0.1), 5.0), 3)


def _half_even(pixels: int) -> int:
    return max(2, pixels // 2 // 2 * 2)


def _corrupt_bytes(digest: str) -> bytes:
    """Bytes that start like an MP4 (an ``ftyp`` box) and are noise after it."""
    noise = random.Random(digest).randbytes(_CORRUPT_BYTES)
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + noise
