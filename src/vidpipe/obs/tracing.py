"""OpenTelemetry traces: one trace per job, one span per step action, on any worker.

A job's trace id is derived from its id, so every action on it, by whichever worker
process on whichever machine, lands in the same trace without passing a context
through the database; logs carry the same ``trace_id`` (with no exporter configured
too), so a job's log lines and spans find each other.

Spans are exported only when an OTLP endpoint is configured (``VIDPIPE_OTLP_ENDPOINT``
or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``) and the OpenTelemetry SDK with its
OTLP/HTTP exporter is installed (``opentelemetry-sdk``,
``opentelemetry-exporter-otlp-proto-http``); otherwise the API's no-op tracer costs
nothing. The job's root span is implied, not exported: backends show the actions of a
job side by side under one trace id.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from vidpipe.obs.settings import ObsSettings, obs_settings

log = logging.getLogger("vidpipe.tracing")

TRACER = "vidpipe"


def job_trace_id(job_id: str) -> int:
    """The 128-bit trace id of a job: the same in every process."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:16], "big") or 1


def _job_context(job_id: str) -> SpanContext:
    digest = hashlib.sha256(f"root:{job_id}".encode()).digest()
    return SpanContext(
        trace_id=job_trace_id(job_id),
        span_id=int.from_bytes(digest[:8], "big") or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


@contextmanager
def job_span(
    job_id: str, name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[tuple[str, str]]:
    """A span in ``job_id``'s trace around the block; yields (trace_id, span_id) in hex."""
    parent = trace.set_span_in_context(NonRecordingSpan(_job_context(job_id)))
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(name, context=parent, attributes=attributes) as span:
        ctx = span.get_span_context()
        yield format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def setup(settings: ObsSettings | None = None, *, service_name: str = "vidpipe") -> bool:
    """Export spans over OTLP/HTTP when an endpoint is configured; True if it now does."""
    settings = settings or obs_settings()
    endpoint = settings.otlp_endpoint
    if not (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    try:
        sdk = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
        otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        log.warning(
            "an OTLP endpoint is configured but the OpenTelemetry SDK is not installed "
            "(pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http): "
            "traces are not exported"
        )
        return False
    resource = resources.Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
    )
    provider = sdk.TracerProvider(resource=resource)
    # Without an explicit endpoint the exporter reads the OTEL_EXPORTER_OTLP_* variables.
    exporter = otlp.OTLPSpanExporter(endpoint=endpoint) if endpoint else otlp.OTLPSpanExporter()
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP/HTTP")
    return True
