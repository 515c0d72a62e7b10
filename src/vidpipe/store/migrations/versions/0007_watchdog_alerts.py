"""watchdog alerts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watchdog_alerts",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=False),
        sa.Column("suppressed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "key", "sent_at"),
    )
    with op.batch_alter_table("watchdog_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_watchdog_alerts_rule_sent_at", ["rule", "sent_at"], unique=False)
        batch_op.create_index("ix_watchdog_alerts_sent_at", ["sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("watchdog_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_watchdog_alerts_sent_at")
        batch_op.drop_index("ix_watchdog_alerts_rule_sent_at")
    op.drop_table("watchdog_alerts")
