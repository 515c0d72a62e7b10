"""The SQL tables, as SQLAlchemy Core metadata (the migrations create the same).

Times are float seconds since the epoch: comparisons such as ``run_at <= now`` then
mean the same on SQLite and PostgreSQL, with no time-zone conversions in between.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    # Days outputs are kept; None: the installation's default (VIDPIPE_RETENTION_DAYS).
    Column("retention_days", Integer, nullable=True),
    # Usage limits (jobs_per_day, jobs_per_month, concurrent_jobs, max_seconds,
    # max_pixels, max_job_cost_usd); missing keys: no limit.
    Column("limits", JSON, nullable=True),
    # "budget" (pay later, within budgets) or "credits" (prepaid balance).
    Column("billing_mode", String(16), nullable=False, server_default="budget"),
    # Signs webhooks sent to a request's own webhook_url (endpoints have their own).
    Column("webhook_secret", String(100), nullable=True),
    # Every video of this tenant waits for a human's approval before delivery.
    Column("require_review", Integer, nullable=False, server_default="0"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("prefix", String(24), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("name", String(100), nullable=True),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("model", String(120), nullable=False),
    Column("prompt", Text, nullable=True),
    Column("seconds", Integer, nullable=False),
    Column("size", String(16), nullable=False),
    Column("seed", BigInteger, nullable=True),
    Column("params", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double, nullable=True),
    Column("completed_at", Double, nullable=True),
    Column("expires_at", Double, nullable=True),
    Column("deleted_at", Double, nullable=True),
    # Money in micro-dollars: the estimate of one successful run, the ceiling with
    # every retry, and the most this job may cost (None: no per-job maximum).
    Column("estimated_micros", BigInteger, nullable=False, server_default="0"),
    Column("max_cost_micros", BigInteger, nullable=True),
    # Reserved when the job was admitted, until its first attempt takes it over.
    Column("held_micros", BigInteger, nullable=False, server_default="0"),
    Column("held_at", Double, nullable=True),
    # Human review before delivery: None (not asked), pending, approved, rejected.
    Column("review_state", String(16), nullable=True),
    Column("review_reason", Text, nullable=True),
    Column("batch_id", String(40), nullable=True, index=True),
    Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
    Index("ix_jobs_tenant_status", "tenant_id", "status"),
    Index("ix_jobs_expires_at", "expires_at"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("tenant_id", String(40), nullable=False),
    Column("name", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("depends_on", JSON, nullable=False),
    Column("weight", Double, nullable=False, default=1.0),
    Column("progress", Integer, nullable=False, default=0),
    Column("run_at", Double, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Double, nullable=True),
    # Incremented by every claim: a fencing token, so a worker whose lease was taken
    # over can no longer write the step.
    Column("lease_token", Integer, nullable=False, default=0),
    Column("attempt_count", Integer, nullable=False, default=0),
    Column("poll_errors", Integer, nullable=False, default=0),
    Column("output", JSON, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    # The models to move on to, in order, when the current one fails for good.
    Column("fallbacks", JSON, nullable=False, server_default="[]"),
    # An attempt still at the provider past this time is given up (step expired).
    Column("deadline_at", Double, nullable=True),
    Index("ix_steps_due", "state", "run_at"),
    Index("ix_steps_lease_owner", "lease_owner"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("step_id", String(40), ForeignKey("steps.id"), nullable=False, index=True),
    Column("job_id", String(40), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("idempotency_key", String(100), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(64), nullable=False),
    Column("provider_job_id", String(200), nullable=True),
    Column("error_class", String(16), nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("submitted_at", Double, nullable=True),
    Column("finished_at", Double, nullable=True),
    Column("tenant_id", String(40), nullable=False, server_default=""),
    # Money of this attempt: reserved before the provider call, then settled to the
    # actual cost or released. money_state: none, reserved, settled, released.
    Column("reserved_micros", BigInteger, nullable=False, server_default="0"),
    # When the money was reserved: the budget periods it counts in.
    Column("reserved_at", Double, nullable=True),
    Column("cost_micros", BigInteger, nullable=True),
    Column("money_state", String(16), nullable=False, server_default="none"),
    UniqueConstraint("step_id", "number", name="uq_attempts_step_number"),
    Index("ix_attempts_money_state", "money_state"),
    Index("ix_attempts_provider_created", "provider", "created_at"),
    Index("ix_attempts_provider_job", "provider", "provider_job_id"),
)

webhook_receipts = Table(
    "webhook_receipts",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("provider_job_id", String(200), nullable=False),
    Column("received_at", Double, nullable=False, index=True),
)

assets = Table(
    "assets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("step_id", String(40), nullable=True),
    Column("name", String(64), nullable=False),
    Column("key", String(400), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("media", JSON, nullable=True),
    Column("validation", JSON, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("deleted_at", Double, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("job_id", String(40), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Index("ix_events_job_id_id", "job_id", "id"),
    Index("ix_events_tenant_id_id", "tenant_id", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("created_at", Double, nullable=False, index=True),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("stopped_at", Double, nullable=True),
)


# -- money -------------------------------------------------------------------------

ledger = Table(
    "ledger",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("tenant_id", String(40), nullable=False),
    Column("job_id", String(40), nullable=True),
    Column("step_id", String(40), nullable=True),
    Column("attempt_id", String(40), nullable=True),
    # reserve, settle, release, credit, refund: see money/ledger.py for their signs.
    Column("kind", String(16), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("provider", String(64), nullable=True),
    Column("model", String(64), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Index("ix_ledger_tenant_created", "tenant_id", "created_at"),
    Index("ix_ledger_attempt", "attempt_id"),
)

budgets = Table(
    "budgets",
    metadata,
    # "global" or "tenant:{id}"
    Column("scope", String(64), primary_key=True),
    # "day" or "month" (UTC)
    Column("period", String(8), primary_key=True),
    Column("limit_micros", BigInteger, nullable=False),
    Column("updated_at", Double, nullable=False),
)

budget_usage = Table(
    "budget_usage",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("period_start", Double, primary_key=True),
    Column("reserved_micros", BigInteger, nullable=False, server_default="0"),
    Column("spent_micros", BigInteger, nullable=False, server_default="0"),
)

budget_alerts = Table(
    "budget_alerts",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("period_start", Double, primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("sent_at", Double, nullable=False),
)

credit_accounts = Table(
    "credit_accounts",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("balance_micros", BigInteger, nullable=False),
    Column("updated_at", Double, nullable=False),
)

price_overrides = Table(
    "price_overrides",
    metadata,
    Column("model", String(120), primary_key=True),
    Column("price", JSON, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Messages to deliver outside (alerts now; webhooks later), written in the transaction
# of the change that causes them and sent by workers.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=False),
    Column("delivered_at", Double, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    # Webhooks: whose, to which endpoint (None: a request's own webhook_url), about what.
    Column("tenant_id", String(40), nullable=True),
    Column("endpoint_id", String(40), nullable=True),
    Column("job_id", String(40), nullable=True),
    Column("event_type", String(64), nullable=True),
    Column("last_status", Integer, nullable=True),
    Index("ix_outbox_due", "delivered_at", "next_attempt_at"),
    Index("ix_outbox_endpoint", "endpoint_id", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("url", Text, nullable=False),
    # Event types delivered; empty: all.
    Column("events", JSON, nullable=False),
    Column("secret", String(100), nullable=False),
    # After a rotation the old secret signs too, until it expires.
    Column("previous_secret", String(100), nullable=True),
    Column("previous_expires_at", Double, nullable=True),
    Column("description", String(200), nullable=True),
    Column("disabled_at", Double, nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Column("created_at", Double, nullable=False),
)


batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("total", Integer, nullable=False),
    # Per item: the job it made, or the error that refused it.
    Column("items", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
)
