"""Process-local metrics: latency histograms and counters observed where the work happens.

Why latencies are histograms here and not quantiles read from SQL at scrape time:
Prometheus histograms from any number of worker processes add up exactly
(``sum by (le) (rate(..._bucket[5m]))``), PromQL can re-window them at will, and they
cost nothing per scrape; quantiles computed by each API replica from the database over
a fixed window can neither be added nor re-windowed, and cost a scan per scrape. The
price is that every process doing work must be scraped: ``vidpipe serve`` shows its
embedded workers' series on ``/metrics``, ``vidpipe worker --metrics-port N`` serves its
own. (The watchdog, which must work without Prometheus, reads its window's success rate
and p95 from SQL; ``/metrics`` shows those numbers too, as ``vidpipe_window_*``.)

What only the process knows: how long each step action took (``step_action``), how long
a provider took from submission to a final answer, the time to completed of the jobs
this process completed, and which validation checks failed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)

# Step actions: a poll is milliseconds, a delivery (download, full analysis, storing
# derivatives) can take minutes.
ACTION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Provider jobs and whole jobs: seconds for the local providers, minutes for the cloud.
JOB_BUCKETS_S = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1800, 3600)


@dataclass(frozen=True)
class ProcessMetrics:
    registry: CollectorRegistry
    step_action: Histogram
    provider_job: Histogram
    job_duration: Histogram
    validation_failures: Counter


@functools.cache
def process_metrics() -> ProcessMetrics:
    """This process's instruments, made on first use (one registry per process)."""
    registry = CollectorRegistry()
    # The process's own CPU, memory, file descriptors and GC, as client libraries do.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return ProcessMetrics(
        registry=registry,
        step_action=Histogram(
            "vidpipe_step_action_duration_seconds",
            "Time of one step action (submit, poll, deliver, cancel, admit) in this process.",
            ["provider", "action", "outcome"],
            buckets=ACTION_BUCKETS_S,
            registry=registry,
        ),
        provider_job=Histogram(
            "vidpipe_provider_job_duration_seconds",
            "Provider job time from submission to a final answer, by outcome "
            "(succeeded, failed, expired), for attempts finished by this process.",
            ["provider", "model", "outcome"],
            buckets=JOB_BUCKETS_S,
            registry=registry,
        ),
        job_duration=Histogram(
            "vidpipe_job_duration_seconds",
            "Time from a job's creation to completed, for jobs completed by this process.",
            ["provider"],
            buckets=JOB_BUCKETS_S,
            registry=registry,
        ),
        validation_failures=Counter(
            "vidpipe_validation_failures",
            "Validation checks failed by delivered outputs (one output may fail several).",
            ["provider", "check"],
            registry=registry,
        ),
    )


def observe_step_action(provider: str, action: str, outcome: str, seconds: float) -> None:
    process_metrics().step_action.labels(provider, action, outcome).observe(seconds)


def observe_provider_job(
    provider: str, model: str, outcome: str, submitted_at: float | None, now: float
) -> None:
    """A provider job reached a final answer; nothing if it never reached the provider."""
    if submitted_at is not None:
        process_metrics().provider_job.labels(provider, model, outcome).observe(
            max(now - submitted_at, 0.0)
        )


def observe_job_completed(provider: str, created_at: float, completed_at: float) -> None:
    process_metrics().job_duration.labels(provider).observe(max(completed_at - created_at, 0.0))


def count_validation_failure(
    provider: str, code: str, report: Mapping[str, Any] | None
) -> list[str]:
    """Count the failed checks of a rejected output (``code`` when no report names them)."""
    checks = [
        str(c.get("name"))
        for c in (report or {}).get("checks", [])
        if isinstance(c, Mapping) and not c.get("ok", True)
    ] or [code]
    for check in checks:
        process_metrics().validation_failures.labels(provider, check).inc()
    return checks


def start_metrics_server(host: str, port: int) -> WSGIServer:
    """Serve this process's metrics on http://host:port/metrics from a daemon thread.

    Returns the server (``shutdown()`` stops it); for ``vidpipe worker --metrics-port``.
    """
    server, _thread = start_http_server(port, addr=host, registry=process_metrics().registry)
    return server
