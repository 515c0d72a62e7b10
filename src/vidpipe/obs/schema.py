"""The watchdog's table, on the same metadata as the rest (migration 0007)."""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, String, Table, Text

from vidpipe.store.schema import metadata

# One row per alert decided: sent, or recorded without sending (rate-limited). Its
# (rule, key) and sent_at make the deduplication: no second alert of a rule about one
# subject within the rule's repeat interval (or ever, for one-off subjects).
watchdog_alerts = Table(
    "watchdog_alerts",
    metadata,
    Column("rule", String(32), primary_key=True),
    # The subject: a job id, a worker id, a provider, "" for installation-wide rules.
    Column("key", String(200), primary_key=True),
    Column("sent_at", Double, primary_key=True),
    # 1: over the rule's rate limit, recorded but not sent.
    Column("suppressed", Integer, nullable=False, server_default="0"),
    Column("severity", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_watchdog_alerts_rule_sent_at", "rule", "sent_at"),
    Index("ix_watchdog_alerts_sent_at", "sent_at"),
)
