"""Observability settings, each from a ``VIDPIPE_…`` environment variable.

Kept apart from :class:`vidpipe.config.Settings` so that logging can be set up before
anything else is read, and so the watchdog's thresholds live next to its rules. Built
explicitly by the callers (never at import time), validated like every setting.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RULES = (
    "job_failed",
    "success_rate",
    "queue_depth",
    "job_p95",
    "provider_success_rate",
    "stale_worker",
    "no_progress",
)


class ObsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDPIPE_", extra="ignore")

    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Log lines as JSON objects or for people; auto: console on a terminal, "
        "JSON otherwise (services, containers, files).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severity logged."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics requires `Authorization: Bearer <token>` "
        "(Prometheus `authorization` credentials); unset: /metrics is open.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); "
        "OTEL_EXPORTER_OTLP_ENDPOINT works too. Needs the opentelemetry-sdk and "
        "opentelemetry-exporter-otlp-proto-http packages.",
    )

    watchdog_enabled: bool = Field(default=True, description="Workers evaluate alert rules.")
    watchdog_window_s: float = Field(
        default=3600.0,
        ge=60,
        description="Window of the rate and latency rules, and the least time between two "
        "alerts of one rule about one subject.",
    )
    watchdog_min_samples: int = Field(
        default=10,
        ge=1,
        description="Finished jobs (attempts) in the window before a rate rule fires.",
    )
    watchdog_success_rate_min: float = Field(
        default=0.90, ge=0, le=1, description="Alert when fewer jobs than this succeed."
    )
    watchdog_provider_success_rate_min: float = Field(
        default=0.95, ge=0, le=1, description="Alert when fewer of a provider's attempts succeed."
    )
    watchdog_queue_depth_max: int = Field(
        default=100, ge=1, description="Alert when more steps than this are due and unclaimed."
    )
    watchdog_job_p95_max_s: float = Field(
        default=900.0, gt=0, description="Alert when the p95 time to completed is above this."
    )
    watchdog_worker_stale_s: float = Field(
        default=120.0, gt=0, description="A running worker without a heartbeat this long is stale."
    )
    watchdog_no_progress_s: float = Field(
        default=900.0,
        gt=0,
        description="Alert when work is due but no step or event has moved for this long.",
    )
    watchdog_max_alerts_per_hour: int = Field(
        default=10, ge=1, description="Per rule; alerts over it are recorded, not sent."
    )
    watchdog_disabled_rules: list[str] = Field(
        default_factory=list,
        description=f"Rules not evaluated (JSON list; of {', '.join(RULES)}).",
    )

    @field_validator("watchdog_disabled_rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(RULES))
        if unknown:
            raise ValueError(f"unknown watchdog rules {unknown}; known: {', '.join(RULES)}")
        return value


@functools.cache
def obs_settings() -> ObsSettings:
    """This process's observability settings, read from the environment on first use."""
    return ObsSettings()
