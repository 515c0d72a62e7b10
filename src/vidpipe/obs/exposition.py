"""The Prometheus text of /metrics: cluster series from a :class:`ClusterState`, then
this process's own instruments, rendered from a registry made for the one scrape."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vidpipe import __version__
from vidpipe.core.states import JobStatus
from vidpipe.obs.cluster import WORKER_MEMORY_S, ClusterState
from vidpipe.obs.metrics import process_metrics

QUANTILES = (0.5, 0.95, 0.99)


def cluster_families(
    state: ClusterState, *, in_flight_limits: Mapping[str, int], scrape_s: float
) -> list[Metric]:
    """Every cluster-wide series: the same from every replica (aggregate with max)."""
    st = state.status
    out: list[Metric] = []

    def gauge(
        name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]
    ) -> None:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for label_values, value in values:
            family.add_metric(label_values, value)
        out.append(family)

    def counter(
        name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]
    ) -> None:
        family = CounterMetricFamily(name, doc, labels=labels)
        for label_values, value in values:
            family.add_metric(label_values, value)
        out.append(family)

    gauge("vidpipe_build_info", "This vidpipe's version.", ["version"], [([__version__], 1)])
    statuses = {s.value: 0 for s in JobStatus} | st.jobs_by_status
    gauge(
        "vidpipe_jobs",
        "Jobs by status (deleted ones left out).",
        ["status"],
        (([s], n) for s, n in sorted(statuses.items())),
    )
    gauge(
        "vidpipe_queue_depth",
        "Steps due to run now that no worker has claimed.",
        [],
        [([], st.due_steps)],
    )
    gauge(
        "vidpipe_oldest_queued_job_age_seconds",
        "Age of the oldest job still queued (0: none).",
        [],
        [([], st.oldest_queued_age_s or 0.0)],
    )
    providers = sorted(set(st.in_flight) | set(in_flight_limits))
    gauge(
        "vidpipe_provider_in_flight",
        "Provider jobs running now (steps active or being canceled), per provider.",
        ["provider"],
        (([p], st.in_flight.get(p, 0)) for p in providers),
    )
    gauge(
        "vidpipe_provider_in_flight_limit",
        "Most provider jobs at once across all workers (VIDPIPE_PROVIDER_MAX_IN_FLIGHT).",
        ["provider"],
        (([p], n) for p, n in sorted(in_flight_limits.items())),
    )
    recent = [w for w in st.workers if w.heartbeat_age_s < WORKER_MEMORY_S]
    gauge(
        "vidpipe_workers",
        "Running workers (heard from in the last day) by heartbeat state.",
        ["state"],
        [
            (["alive"], sum(1 for w in recent if w.alive)),
            (["stale"], sum(1 for w in recent if not w.alive)),
        ],
    )
    gauge(
        "vidpipe_worker_heartbeat_age_seconds",
        "Seconds since each running worker's last heartbeat.",
        ["worker", "hostname"],
        (([w.id, w.hostname], max(w.heartbeat_age_s, 0.0)) for w in recent),
    )
    window = state.window
    gauge(
        "vidpipe_window_seconds",
        "Length of the window of the vidpipe_window_* series (VIDPIPE_WATCHDOG_WINDOW_S).",
        [],
        [([], window.seconds)],
    )
    gauge(
        "vidpipe_window_jobs_finished",
        "Jobs that finished in the window, by final status.",
        ["status"],
        (([s], n) for s, n in sorted(window.jobs_finished.items())),
    )
    ratio = window.success_ratio
    gauge(
        "vidpipe_window_job_success_ratio",
        "Completed / (completed + failed) jobs in the window (absent: none finished).",
        [],
        [([], ratio)] if ratio is not None else [],
    )
    gauge(
        "vidpipe_window_job_duration_seconds",
        "Quantiles of the time to completed of the jobs completed in the window.",
        ["quantile"],
        (
            ([str(q)], value)
            for q in QUANTILES
            if (value := window.job_duration_quantile(q)) is not None
        ),
    )
    gauge(
        "vidpipe_window_provider_attempts",
        "Provider attempts that finished in the window, by outcome.",
        ["provider", "outcome"],
        (
            ([p, o], n)
            for p, counts in sorted(window.provider_attempts.items())
            for o, n in sorted(counts.items())
        ),
    )
    gauge(
        "vidpipe_window_provider_success_ratio",
        "Succeeded / (succeeded + failed) provider attempts in the window.",
        ["provider"],
        (
            ([p], r)
            for p in sorted(window.provider_attempts)
            if (r := window.provider_success_ratio(p)) is not None
        ),
    )
    if state.totals is not None:
        t = state.totals
        gauge(
            "vidpipe_steps",
            "Steps by state.",
            ["state"],
            (([s], n) for s, n in sorted(t.steps_by_state.items())),
        )
        counter(
            "vidpipe_provider_attempts",
            "Provider attempts that finished, by outcome (succeeded, failed, canceled).",
            ["provider", "outcome"],
            (([p, o], n) for (p, o), n in sorted(t.attempts.items())),
        )
        counter(
            "vidpipe_failed_attempts",
            "Failed attempts by error class (transient, generation, quality, permanent) "
            "and code: the retries by class, and the final failures.",
            ["provider", "error_class", "error_code"],
            (([p, c, code], n) for (p, c, code), n in sorted(t.failed_attempts.items())),
        )
        counter(
            "vidpipe_spend_usd",
            "Money settled to providers (the ledger's settle entries), in USD.",
            ["provider", "model"],
            (([p, m], micros / 1_000_000) for (p, m), micros in sorted(t.spend_micros.items())),
        )
        counter(
            "vidpipe_video_seconds",
            "Seconds of video delivered (succeeded attempts).",
            ["provider", "model"],
            (([p, m], s) for (p, m), s in sorted(t.video_seconds.items())),
        )
        gauge(
            "vidpipe_webhook_deliveries",
            "Outbox messages (kind webhook or alert) by outcome: delivered, pending, "
            "retrying, failed (given up).",
            ["kind", "outcome"],
            (([k, o], n) for (k, o), n in sorted(t.deliveries.items())),
        )
    gauge(
        "vidpipe_metrics_scrape_duration_seconds",
        "Time this scrape took to read the database.",
        [],
        [([], scrape_s)],
    )
    return out


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class _Forward(Collector):
    """Another registry's series, read at collection time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def render(families: list[Metric], *, include_process: bool = True) -> bytes:
    """The exposition text of ``families`` and (by default) this process's instruments."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    if include_process:
        registry.register(_Forward(process_metrics().registry))
    return generate_latest(registry)
