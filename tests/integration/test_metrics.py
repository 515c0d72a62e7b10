"""/metrics on a real app and database after real jobs; structured logs without secrets;
the Grafana dashboard only asks for series that exist."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from vidpipe.api import metrics as metrics_api
from vidpipe.api.app import create_app
from vidpipe.config import RetryPolicySetting, Settings
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.money.catalog import Price
from vidpipe.notify import outbox
from vidpipe.obs import logging as obs_logging
from vidpipe.obs.settings import ObsSettings, obs_settings
from vidpipe.obs.tracing import job_trace_id
from vidpipe.providers.base import OutputRef, PollResult, ProviderStatus
from vidpipe.providers.instant import InstantProvider
from vidpipe.store import steps as step_q
from vidpipe.store.schema import outbox as outbox_table

from .conftest import Harness

pytestmark = pytest.mark.timeout(120)

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "vidpipe-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class PaidProvider(InstantProvider):
    name = "paid"


class BrokenProvider(InstantProvider):
    """Every job fails at the provider: a generation failure, re-submitted once."""

    name = "broken"

    async def poll(self, provider_job_id: str) -> PollResult:
        return PollResult(
            ProviderStatus.FAILED, error_code="generation_failed", error_message="it gave up"
        )


class WrongSizeProvider(InstantProvider):
    """Delivers portrait clips for landscape requests: the resolution check fails."""

    name = "wrongsize"

    async def poll(self, provider_job_id: str) -> PollResult:
        result = await super().poll(provider_job_id)
        if result.status is not ProviderStatus.SUCCEEDED:
            return result
        width, height, seconds = result.outputs[0].url.split("x")
        return dataclasses.replace(result, outputs=(OutputRef(f"{height}x{width}x{seconds}"),))


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def scrape(harness: Harness) -> AsyncIterator[Callable[..., Awaitable[httpx.Response]]]:
    """GET /metrics on an app with the metrics route (whether or not create_app has it)."""
    app = create_app(harness.runtime)
    if not any(getattr(route, "path", None) == "/metrics" for route in app.routes):
        app.include_router(metrics_api.router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://vidpipe.test"
    ) as client:

        async def get(**headers: str) -> httpx.Response:
            return await client.get("/metrics", headers=headers)

        yield get


async def _samples(scrape: Callable[..., Awaitable[httpx.Response]]) -> Samples:
    response = await scrape()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return _parse(response.text)


def _add_providers(runtime: Runtime) -> None:
    state_dir = runtime.settings.home / "instant-provider"
    for cls, usd in ((PaidProvider, 0.05), (BrokenProvider, 0.01), (WrongSizeProvider, 0.01)):
        runtime.registry.add(cls(state_dir, log_calls=False))
        runtime.videos.prices.overrides[f"{cls.name}/test"] = Price(usd=usd)
    # Re-submissions at once: the test is about what is counted, not about waiting.
    runtime.settings.retry_policies = {"*": RetryPolicySetting(resubmit_delay_s=0.0)}


async def _run_all(harness: Harness, job_ids: list[str], timeout_s: float = 90) -> None:
    stop = asyncio.Event()
    worker = harness.runtime.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                statuses = [(await harness.runtime.videos.get(None, j)).status for j in job_ids]
                if all(JobStatus(s).terminal for s in statuses):
                    return
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        harness.runtime.workers.remove(worker)


async def test_metrics_tell_the_cluster_and_this_process(
    harness: Harness, scrape: Callable[..., Awaitable[httpx.Response]]
) -> None:
    rt = harness.runtime
    _add_providers(rt)
    before = await _samples(scrape)
    jobs = [
        str((await harness.create(model=model, seconds=seconds))["id"])
        for model, seconds in (
            ("instant/test", 1),
            ("instant/test", 1),
            ("paid/test", 2),
            ("broken/test", 1),
            ("wrongsize/test", 1),
        )
    ]
    queued = await _samples(scrape)
    assert _value(queued, "vidpipe_jobs", status="queued") == 5
    assert _value(queued, "vidpipe_queue_depth") == 5
    assert _value(queued, "vidpipe_oldest_queued_job_age_seconds") >= 0
    await _run_all(harness, jobs)

    now = rt.clock.now()
    async with rt.db.write() as conn:
        # A worker that crashed a while ago (no heartbeat, never stopped).
        await step_q.register_worker(conn, "wrk_crashed", "host-b", 4242, now - 600)
        delivered = await outbox.enqueue(
            conn, kind="alert", target="http://alerts.test/", payload={}, now=now
        )
        await outbox.enqueue(conn, kind="alert", target="http://alerts.test/", payload={}, now=now)
        await conn.execute(
            outbox_table.update().where(outbox_table.c.id == delivered).values(delivered_at=now)
        )
    after = await _samples(scrape)

    def v(name: str, **labels: str) -> float:
        return _value(after, name, **labels)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    # Jobs by status, queue, in flight: from the database.
    assert v("vidpipe_jobs", status="completed") == 3
    assert v("vidpipe_jobs", status="failed") == 2
    assert v("vidpipe_jobs", status="queued") == 0
    assert v("vidpipe_queue_depth") == 0
    assert v("vidpipe_oldest_queued_job_age_seconds") == 0
    assert v("vidpipe_provider_in_flight", provider="instant") == 0
    assert v("vidpipe_provider_in_flight_limit", provider="local") == 2
    assert v("vidpipe_steps", state="succeeded") == 3
    assert v("vidpipe_steps", state="failed") == 2
    # Attempts, retries by class, validation failures by check.
    assert v("vidpipe_provider_attempts_total", provider="instant", outcome="succeeded") == 2
    assert v("vidpipe_provider_attempts_total", provider="broken", outcome="failed") == 2
    assert v("vidpipe_provider_attempts_total", provider="wrongsize", outcome="failed") == 4
    assert (
        v(
            "vidpipe_failed_attempts_total",
            provider="broken",
            error_class="generation",
            error_code="generation_failed",
        )
        == 2
    )
    assert (
        v(
            "vidpipe_failed_attempts_total",
            provider="wrongsize",
            error_class="quality",
            error_code="validation_failed",
        )
        == 4
    )
    assert delta("vidpipe_validation_failures_total", provider="wrongsize", check="resolution") == 4
    # Spend (settled: the paid video, and the four refused outputs, billed) and seconds.
    assert v("vidpipe_spend_usd_total", provider="paid", model="test") == pytest.approx(0.10)
    assert v("vidpipe_spend_usd_total", provider="wrongsize", model="test") == pytest.approx(0.04)
    assert v("vidpipe_spend_usd_total", provider="broken", model="test") == 0
    assert v("vidpipe_video_seconds_total", provider="instant", model="test") == 2
    assert v("vidpipe_video_seconds_total", provider="paid", model="test") == 2
    # Deliveries by outcome, workers by heartbeat.
    assert v("vidpipe_webhook_deliveries", kind="alert", outcome="delivered") == 1
    assert v("vidpipe_webhook_deliveries", kind="alert", outcome="pending") == 1
    assert v("vidpipe_workers", state="alive") == 0
    assert v("vidpipe_workers", state="stale") == 1
    age = v("vidpipe_worker_heartbeat_age_seconds", worker="wrk_crashed", hostname="host-b")
    assert 600 <= age < 700
    # The window (what the watchdog sees).
    assert v("vidpipe_window_jobs_finished", status="completed") == 3
    assert v("vidpipe_window_jobs_finished", status="failed") == 2
    assert v("vidpipe_window_job_success_ratio") == pytest.approx(0.6)
    assert v("vidpipe_window_provider_success_ratio", provider="instant") == 1
    assert v("vidpipe_window_provider_success_ratio", provider="broken") == 0
    assert 0 < v("vidpipe_window_job_duration_seconds", quantile="0.95") < 90
    assert v("vidpipe_build_info", version=__import__("vidpipe").__version__) == 1
    # This process's histograms: observed where the work happened.
    count = "vidpipe_step_action_duration_seconds_count"
    assert delta(count, provider="instant", action="submit", outcome="ok") == 2
    assert delta(count, provider="instant", action="deliver", outcome="ok") == 2
    assert delta(count, provider="wrongsize", action="deliver", outcome="ok") == 4
    assert delta(count, provider="broken", action="poll", outcome="ok") == 2
    job_time = "vidpipe_provider_job_duration_seconds_count"
    assert delta(job_time, provider="instant", model="test", outcome="succeeded") == 2
    assert delta(job_time, provider="broken", model="test", outcome="failed") == 2
    assert delta(job_time, provider="wrongsize", model="test", outcome="failed") == 4
    assert delta("vidpipe_job_duration_seconds_count", provider="instant") == 2
    assert delta("vidpipe_job_duration_seconds_count", provider="paid") == 1
    assert delta("vidpipe_job_duration_seconds_bucket", provider="paid", le="+Inf") == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in after)


async def test_metrics_token_when_configured(
    harness: Harness,
    scrape: Callable[..., Awaitable[httpx.Response]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDPIPE_METRICS_TOKEN", "scrape-secret-123")
    obs_settings.cache_clear()
    try:
        refused = await scrape()
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_metrics_token"
        assert (await scrape(authorization="Bearer nope")).status_code == 401
        assert (await scrape(authorization="Bearer scrape-secret-123")).status_code == 200
    finally:
        monkeypatch.delenv("VIDPIPE_METRICS_TOKEN")
        obs_settings.cache_clear()
    assert (await scrape()).status_code == 200


async def test_the_dashboard_asks_only_for_series_that_exist(
    harness: Harness, scrape: Callable[..., Awaitable[httpx.Response]]
) -> None:
    vid = str((await harness.create(model="instant/test"))["id"])
    await harness.run_until(vid)
    text = (await scrape()).text
    exposed = set()
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        exposed.update(s.name for s in family.samples)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) > 20
    wanted = {name for expr in exprs for name in re.findall(r"\bvidpipe_[a-z0-9_]+", expr)}
    wanted.add("vidpipe_provider_attempts_total")  # the provider variable's query
    # Families with no sample yet (no validation failure in this run) are still described.
    described = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    missing = {
        name
        for name in wanted
        if name not in exposed
        and re.sub(r"_(bucket|count|sum|total)$", "", name) not in exposed | described
    }
    assert not missing
    titles = {p["title"] for p in dashboard["panels"]}
    for title in (
        "Success rate (window)",
        "Cost per minute of video",
        "Queue depth",
        "In flight per provider (and limit)",
        "Failed attempts by class (retries)",
        "Validation failures by check",
        "Worker heartbeat age",
    ):
        assert title in titles


# -- structured logs -------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging set up as `vidpipe` does (JSON, DEBUG) into a buffer, undone afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    obs_logging.setup(ObsSettings(log_format="json", log_level="DEBUG"), stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


async def test_every_stage_logs_job_step_attempt_provider_and_trace(
    harness: Harness, json_logs: io.StringIO
) -> None:
    vid = str((await harness.create(model="instant/test"))["id"])
    await harness.run_until(vid)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    stages = {
        line["event_type"]: line
        for line in lines
        if line.get("job_id") == vid and "event_type" in line
    }
    assert {"video.in_progress", "step.attempt", "step.submitted", "step.succeeded"} <= set(stages)
    trace_id = format(job_trace_id(vid), "032x")
    for stage in ("step.attempt", "step.submitted", "step.succeeded"):
        line = stages[stage]
        assert line["step_id"].startswith("step")
        assert line["attempt"] == 1
        assert line["provider"] == "instant"
        assert line["trace_id"] == trace_id
        assert line["worker_id"].startswith("wrk")
        assert line["level"] in ("info", "debug")
        assert "timestamp" in line
        assert line["message"] == stage
    # The action timings carry the same context (debug level).
    actions = [line for line in lines if line.get("action") and line.get("job_id") == vid]
    assert {line["action"] for line in actions} >= {"submit", "deliver"}


async def test_no_secret_reaches_the_logs(
    harness: Harness,
    json_logs: io.StringIO,
    make_settings: Callable[..., Settings],
    db_url: str,
) -> None:
    secrets = {
        "runway_api_key": "key_runway_0123456789abcdef",
        "replicate_api_token": "r8_abcdefghijklmnopqrstuvwxyz0123",
        "veo_api_key": "AIzaSyVeoKeyVeoKeyVeoKeyVeoKey01",
        "signing_secret": "local-signing-secret-0123456789",
        "s3_secret_access_key": "s3SecretAccessKey/0123456789",
        "s3_access_key_id": "AKIAEXAMPLEKEYID",
    }
    settings = make_settings(db_url, **secrets)
    obs_logging.remember_secrets(settings)
    log = logging.getLogger("vidpipe.test")
    log.info("settings: %s", settings)
    log.info("settings dump: %s", settings.model_dump())
    log.info(
        "HTTP Request: GET https://generativelanguage.googleapis.com/v1beta/models?key=%s",
        secrets["veo_api_key"],
    )
    log.warning("refused", extra={"headers": {"Authorization": f"Bearer {harness.key}"}})
    try:
        raise RuntimeError(f"provider said 401 for token {secrets['replicate_api_token']}")
    except RuntimeError:
        log.exception("call failed")
    log.info("signed url https://cdn.test/a.mp4?exp=1&sig=abcdef0123456789abcdef")
    log.info("webhook secret whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    vid = str((await harness.create(model="instant/test"))["id"])
    await harness.run_until(vid)
    await harness.client.get("/v1/videos", headers={"Authorization": f"Bearer {harness.key}x"})
    await harness.client.get("/v1/videos", headers={"Authorization": "Bearer vp_wrong_key"})
    output = json_logs.getvalue()
    assert output.count("\n") > 10
    for line in output.splitlines():
        json.loads(line)  # every line is one JSON object
    for secret in [*secrets.values(), harness.key, harness.key.split("_", 2)[2], harness.other_key]:
        assert secret not in output
    assert "abcdef0123456789abcdef" not in output
    assert "c2VjcmV0LXNlY3JldC1zZWNyZXQ" not in output
    assert "[redacted]" in output
    assert "SecretStr('**********')" in output or "**********" in output


def test_scrub_table() -> None:
    cases = [
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [redacted]"),
        ("token=abcdef123456&x=1", "token=[redacted]&x=1"),
        ("GET /v1/models?key=AIza123456&alt=json", "GET /v1/models?key=[redacted]&alt=json"),
        ("key vp_abcd1234_Zm9vYmFyYmF6cXV4", "key vp_abcd1234_[redacted]"),
        ("prefix vp_abcd1234 is fine", "prefix vp_abcd1234 is fine"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_[redacted]"),
        (
            "postgresql://vidpipe:hunter22@db:5432/vidpipe",
            "postgresql://vidpipe:[redacted]@db:5432/vidpipe",
        ),
        ("u?X-Amz-Signature=deadbeef&X-Amz-Date=1", "u?X-Amz-Signature=[redacted]&X-Amz-Date=1"),
        ("a plain message", "a plain message"),
    ]
    for text, want in cases:
        assert obs_logging.scrub(text) == want, text


def test_traces_are_per_job_and_export_only_when_configured(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vidpipe.obs import tracing

    with tracing.job_span("video_1", "step.submit") as (trace_id, _span):
        assert trace_id == format(tracing.job_trace_id("video_1"), "032x")
    with tracing.job_span("video_1", "step.poll") as (again, _span):
        assert again == trace_id  # another action, maybe another process: the same trace
    with tracing.job_span("video_2", "step.poll") as (other, _span):
        assert other != trace_id
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup(ObsSettings()) is False  # nothing configured: nothing to do
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        with caplog.at_level(logging.WARNING, logger="vidpipe.tracing"):
            endpoint = "http://127.0.0.1:4318/v1/traces"
            assert tracing.setup(ObsSettings(otlp_endpoint=endpoint)) is False
        assert "OpenTelemetry SDK is not installed" in caplog.text
