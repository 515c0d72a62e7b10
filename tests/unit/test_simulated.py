"""The simulated provider's plans and call behaviour (no rendering here)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
import threading
from collections import Counter
from pathlib import Path

import pytest

from vidpipe.errors import ConfigError, PermanentProviderError, TransientProviderError
from vidpipe.providers.base import ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.simulated import (
    Outcome,
    SimulatedConfig,
    SimulatedConfigError,
    SimulatedProvider,
    plan_job,
)

JOBS = 2000
REQUEST = VideoRequest(model="sim-1", prompt="a red kite", seconds=4, width=640, height=360)
SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"


def within(observed: int, rate: float, n: int = JOBS) -> bool:
    """Within five standard deviations of the expected count (a flake every ~3.5M runs)."""
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(observed - n * rate) <= 5 * sd + 1


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- config -------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = SimulatedConfig(seed=3, failure_rate=0.1, webhook_secret=SECRET, bill_failures=True)
    assert SimulatedConfig.from_json(config.to_json()) == config
    assert SimulatedConfig.from_json("{}") == SimulatedConfig()
    assert SimulatedConfig.from_json('{"latency_median_s": 3}').latency_median_s == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"failure_rat": 0.1}', "unknown simulated provider settings: failure_rat"),
        ('{"failure_rate": 1.5}', "failure_rate must be in"),
        ('{"failure_rate": "high"}', "is not a float"),
        ('{"seed": 1.5}', "is not a int"),
        ('{"bill_failures": 1}', "is not a bool"),
        ('{"failure_rate": 0.6, "hang_rate": 0.6}', "add up to 1.2"),
        ('{"latency_min_s": 5, "latency_max_s": 1}', "latency_min_s is above"),
        ('{"retry_after_s": -1}', "retry_after_s must be >= 0"),
        ('{"webhook_secret": "whsec_***"}', "base64"),
    ],
)
def test_bad_config_is_refused(text: str, message: str) -> None:
    with pytest.raises(SimulatedConfigError, match=message) as info:
        SimulatedConfig.from_json(text)
    # Both a vidpipe error and what settings validators expect.
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


# --- plans --------------------------------------------------------------------------


def test_plans_are_reproducible_per_seed_and_key() -> None:
    config = SimulatedConfig(seed=7, failure_rate=0.3, webhook_duplicate_rate=0.5)
    assert plan_job(config, "abc") == plan_job(config, "abc")
    other_seed = SimulatedConfig(seed=8, failure_rate=0.3, webhook_duplicate_rate=0.5)
    plans = [plan_job(config, f"k{i}") for i in range(50)]
    assert plans != [plan_job(other_seed, f"k{i}") for i in range(50)]


RATES = {
    Outcome.FAILED: 0.10,
    Outcome.CONTENT_POLICY: 0.05,
    Outcome.CORRUPT: 0.04,
    Outcome.TRUNCATED: 0.04,
    Outcome.WRONG_RESOLUTION: 0.03,
    Outcome.EXPIRED: 0.03,
    Outcome.HANG: 0.02,
}


def test_outcome_rates_are_honoured() -> None:
    config = SimulatedConfig(
        seed=11,
        failure_rate=RATES[Outcome.FAILED],
        content_policy_rate=RATES[Outcome.CONTENT_POLICY],
        corrupt_rate=RATES[Outcome.CORRUPT],
        truncated_rate=RATES[Outcome.TRUNCATED],
        wrong_resolution_rate=RATES[Outcome.WRONG_RESOLUTION],
        expired_rate=RATES[Outcome.EXPIRED],
        hang_rate=RATES[Outcome.HANG],
    )
    counts = Counter(plan_job(config, f"job-{i}").outcome for i in range(JOBS))
    for outcome, rate in RATES.items():
        assert within(counts[outcome], rate), (outcome, counts[outcome])
    assert within(counts[Outcome.OK], 1 - sum(RATES.values()))


def test_latency_is_lognormal_around_the_median_within_bounds() -> None:
    config = SimulatedConfig(
        latency_median_s=10.0, latency_sigma=0.5, latency_min_s=2.0, latency_max_s=40.0
    )
    plans = [plan_job(config, f"job-{i}") for i in range(JOBS)]
    latencies = [plan.latency_s for plan in plans]
    assert statistics.median(latencies) == pytest.approx(10.0, rel=0.08)
    assert min(latencies) >= 2.0
    assert max(latencies) <= 40.0
    assert all(plan.queued_s == pytest.approx(plan.latency_s * 0.25) for plan in plans)
    fixed = SimulatedConfig(latency_min_s=3.0, latency_max_s=3.0)
    assert {plan_job(fixed, f"k{i}").latency_s for i in range(20)} == {3.0}


@pytest.mark.parametrize(
    ("field", "check"),
    [
        ("webhook_missing_rate", lambda p: all(w.event != "terminal" for w in p.webhooks)),
        ("webhook_duplicate_rate", lambda p: sum(w.event == "terminal" for w in p.webhooks) == 2),
        ("webhook_late_rate", lambda p: p.webhooks[-1].after_s >= p.latency_s + 30.0),
        ("webhook_out_of_order_rate", lambda p: p.webhooks[-1].event == "running"),
    ],
)
def test_webhook_misbehaviour_rates_are_honoured(field: str, check: object) -> None:
    config = SimulatedConfig(seed=5, **{field: 0.2})  # type: ignore[arg-type]
    plans = [plan_job(config, f"job-{i}") for i in range(JOBS)]
    assert within(sum(bool(check(plan)) for plan in plans), 0.2)  # type: ignore[operator]


def test_clean_webhooks_are_running_then_terminal_and_a_hang_sends_no_terminal() -> None:
    plan = plan_job(SimulatedConfig(), "k")
    assert [(w.event, w.after_s) for w in plan.webhooks] == [
        ("running", plan.queued_s),
        ("terminal", plan.latency_s),
    ]
    hung = plan_job(SimulatedConfig(hang_rate=1.0), "k")
    assert [w.event for w in hung.webhooks] == ["running"]


# --- the provider's calls -----------------------------------------------------------


def make(tmp_path: Path, clock: Clock | None = None, **fields: object) -> SimulatedProvider:
    config = SimulatedConfig(**fields)  # type: ignore[arg-type]
    return SimulatedProvider(tmp_path / "sim", config, clock=clock or Clock())


async def test_submit_is_idempotent_per_key(tmp_path: Path) -> None:
    provider = make(tmp_path)
    job_id = await provider.submit(REQUEST, "key-1")
    assert await provider.submit(REQUEST, "key-1") == job_id
    assert await provider.submit(REQUEST, "key-2") != job_id


def test_racing_submits_make_one_job(tmp_path: Path) -> None:
    provider = make(tmp_path)
    ids: list[str] = []

    def submit() -> None:
        # Each thread its own provider and event loop, like separate workers.
        worker = SimulatedProvider(provider.state_dir, provider.config)
        ids.append(asyncio.run(worker.submit(REQUEST, "same-key")))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1


async def test_a_job_moves_queued_running_succeeded_with_cost(tmp_path: Path) -> None:
    clock = Clock()
    provider = make(tmp_path, clock, latency_min_s=8.0, latency_max_s=8.0, cost_usd_per_second=0.05)
    job_id = await provider.submit(REQUEST, "key-1")

    queued = await provider.poll(job_id)
    assert (queued.status, queued.progress) == (ProviderStatus.QUEUED, 0)
    clock.now += 5.0  # queued for 2 s, then 6 s running: 3 s in is half done
    running = await provider.poll(job_id)
    assert (running.status, running.progress) == (ProviderStatus.RUNNING, 50)
    clock.now += 3.0
    done = await provider.poll(job_id)
    assert done.status is ProviderStatus.SUCCEEDED
    assert done.outputs[0].url == f"sim://{job_id}/ok"
    assert done.cost_usd == pytest.approx(0.20)


async def test_another_process_polls_the_same_job(tmp_path: Path) -> None:
    clock = Clock()
    first = make(tmp_path, clock, latency_min_s=1.0, latency_max_s=1.0)
    job_id = await first.submit(REQUEST, "key-1")
    # A second worker: a fresh instance on the same state directory and config.
    second = SimulatedProvider(first.state_dir, first.config, clock=clock)
    await second.cancel(job_id)
    assert (await first.poll(job_id)).status is ProviderStatus.CANCELED
    clock.now += 10
    assert (await second.poll(job_id)).status is ProviderStatus.CANCELED


@pytest.mark.parametrize(
    ("outcome_field", "status", "code"),
    [
        ("failure_rate", ProviderStatus.FAILED, "generation_failed"),
        ("content_policy_rate", ProviderStatus.FAILED, "content_policy"),
    ],
)
async def test_failed_jobs(
    tmp_path: Path, outcome_field: str, status: ProviderStatus, code: str
) -> None:
    clock = Clock()
    provider = make(tmp_path, clock, cost_usd_per_second=0.05, **{outcome_field: 1.0})
    job_id = await provider.submit(REQUEST, "key-1")
    clock.now += 1000
    result = await provider.poll(job_id)
    assert (result.status, result.error_code, result.cost_usd) == (status, code, 0.0)


async def test_billed_failures_report_their_cost(tmp_path: Path) -> None:
    clock = Clock()
    provider = make(tmp_path, clock, failure_rate=1.0, cost_usd_per_second=0.05, bill_failures=True)
    job_id = await provider.submit(REQUEST, "key-1")
    clock.now += 1000
    assert (await provider.poll(job_id)).cost_usd == pytest.approx(0.20)


async def test_a_hung_job_never_finishes_but_can_be_canceled(tmp_path: Path) -> None:
    clock = Clock()
    provider = make(tmp_path, clock, hang_rate=1.0)
    job_id = await provider.submit(REQUEST, "key-1")
    clock.now += 86400
    result = await provider.poll(job_id)
    assert (result.status, result.progress) == (ProviderStatus.RUNNING, 42)
    await provider.cancel(job_id)
    assert (await provider.poll(job_id)).status is ProviderStatus.CANCELED


async def test_cancel_after_the_end_changes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    provider = make(tmp_path, clock)
    job_id = await provider.submit(REQUEST, "key-1")
    clock.now += 1000
    await provider.cancel(job_id)
    await provider.cancel(job_id)
    assert (await provider.poll(job_id)).status is ProviderStatus.SUCCEEDED


async def test_transient_error_rates_are_honoured(tmp_path: Path) -> None:
    provider = make(tmp_path, submit_error_rate=0.1, poll_error_rate=0.2, retry_after_rate=0.5)
    submit_errors: list[TransientProviderError] = []
    job_ids = []
    for i in range(JOBS):
        try:
            job_ids.append(await provider.submit(REQUEST, f"key-{i}"))
        except TransientProviderError as exc:
            submit_errors.append(exc)
    assert within(len(submit_errors), 0.1)

    poll_errors: list[TransientProviderError] = []
    for job_id in job_ids[:1000]:
        try:
            await provider.poll(job_id)
        except TransientProviderError as exc:
            poll_errors.append(exc)
    assert within(len(poll_errors), 0.2, n=1000)
    hinted = [e for e in submit_errors + poll_errors if e.retry_after_s is not None]
    assert within(len(hinted), 0.5, n=len(submit_errors + poll_errors))
    assert {e.retry_after_s for e in hinted} == {1.0}


async def test_transient_errors_are_reproducible_per_seed(tmp_path: Path) -> None:
    async def errors(state: Path) -> list[int]:
        provider = SimulatedProvider(state, SimulatedConfig(seed=9, submit_error_rate=0.3))
        failed = []
        for i in range(100):
            try:
                await provider.submit(REQUEST, f"key-{i}")
            except TransientProviderError:
                failed.append(i)
        return failed

    assert await errors(tmp_path / "a") == await errors(tmp_path / "b")


async def test_lost_submit_answers_leave_a_job_behind(tmp_path: Path) -> None:
    provider = make(tmp_path, submit_lost_response_rate=1.0)
    with pytest.raises(TransientProviderError, match="answer was lost"):
        await provider.submit(REQUEST, "key-1")
    assert len(list((provider.state_dir / "keys").iterdir())) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [({"model": "sim-2"}, "unknown model"), ({"width": 641}, "size"), ({"seconds": 99}, "seconds")],
)
async def test_bad_requests_are_permanent(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(PermanentProviderError, match=message) as info:
        await make(tmp_path).submit(dataclasses.replace(REQUEST, **change), "k")  # type: ignore[arg-type]
    assert info.value.code == "invalid_request"


async def test_unknown_job_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await make(tmp_path).poll("sim_nope")
    assert info.value.code == "not_found"


# --- webhooks -----------------------------------------------------------------------


async def test_webhook_deliveries_follow_the_plan_and_verify(tmp_path: Path) -> None:
    clock = Clock()
    provider = make(tmp_path, clock, webhook_secret=SECRET, webhook_duplicate_rate=1.0)
    request = dataclasses.replace(REQUEST, callback_url="https://me.test/hook")
    job_id = await provider.submit(request, "key-1")

    deliveries = provider.webhook_deliveries(job_id)
    assert [d.url for d in deliveries] == ["https://me.test/hook"] * 3
    events = [provider.parse_webhook(d.headers, d.body, d.deliver_at) for d in deliveries]
    assert [e.result.status for e in events if e.result] == [
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
        ProviderStatus.SUCCEEDED,
    ]
    assert events[1].event_id == events[2].event_id
    assert {e.provider_job_id for e in events} == {job_id}
    assert deliveries == sorted(deliveries, key=lambda d: d.deliver_at)

    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(deliveries[0].headers, deliveries[0].body + b" ", clock.now)
    assert info.value.code == "webhook_signature"


async def test_without_a_secret_there_are_no_webhooks(tmp_path: Path) -> None:
    provider = make(tmp_path)
    job_id = await provider.submit(REQUEST, "key-1")
    assert provider.supports_webhooks is False
    assert provider.webhook_deliveries(job_id) == []
