"""Rows as frozen dataclasses, so code above the store never handles raw SQL rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self


class _FromRow:
    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Self:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            # Per class, once: rows become records on every read of the hot path.
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


_FIELD_NAMES: dict[type, frozenset[str]] = {}


@dataclass(frozen=True)
class Tenant(_FromRow):
    id: str
    name: str
    created_at: float
    retention_days: int | None = None
    limits: dict[str, Any] | None = None
    billing_mode: str = "budget"
    webhook_secret: str | None = None
    require_review: int = 0


@dataclass(frozen=True)
class ApiKey(_FromRow):
    id: str
    tenant_id: str
    prefix: str
    scope: str
    name: str | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class Job(_FromRow):
    id: str
    tenant_id: str
    kind: str
    status: str
    progress: int
    model: str
    prompt: str | None
    seconds: int
    size: str
    seed: int | None
    params: dict[str, Any]
    metadata: dict[str, Any]
    error_code: str | None
    error_message: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    expires_at: float | None
    deleted_at: float | None
    estimated_micros: int = 0
    max_cost_micros: int | None = None
    held_micros: int = 0
    held_at: float | None = None
    review_state: str | None = None
    review_reason: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True)
class Step(_FromRow):
    id: str
    job_id: str
    tenant_id: str
    name: str
    kind: str
    state: str
    provider: str
    model: str
    params: dict[str, Any]
    depends_on: list[str]
    weight: float
    progress: int
    run_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    lease_token: int
    attempt_count: int
    poll_errors: int
    output: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    fallbacks: list[str]
    deadline_at: float | None


@dataclass(frozen=True)
class Attempt(_FromRow):
    id: str
    step_id: str
    job_id: str
    number: int
    state: str
    idempotency_key: str
    provider: str
    model: str
    provider_job_id: str | None
    error_class: str | None
    error_code: str | None
    error_message: str | None
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    tenant_id: str = ""
    reserved_micros: int = 0
    reserved_at: float | None = None
    cost_micros: int | None = None
    money_state: str = "none"


@dataclass(frozen=True)
class Asset(_FromRow):
    id: str
    tenant_id: str
    job_id: str
    step_id: str | None
    name: str
    key: str
    sha256: str
    bytes: int
    content_type: str
    media: dict[str, Any] | None
    validation: dict[str, Any] | None
    created_at: float
    deleted_at: float | None


@dataclass(frozen=True)
class Event(_FromRow):
    id: int
    job_id: str
    tenant_id: str
    type: str
    data: dict[str, Any]
    created_at: float
