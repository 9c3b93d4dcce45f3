"""The schema of release 0.1.0, as its `metadata.create_all` made it.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "b1tw_snapshots",
        sa.Column("entity", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("previous_payload", sa.Text),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "b1tw_alert_events",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("alert_id", sa.String(200), nullable=False, unique=True),
        sa.Column("rule_id", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("document", sa.String(80), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned", sa.Boolean, nullable=False),
    )
    op.create_table(
        "b1tw_stock_state",
        sa.Column("rule_id", sa.String(80), primary_key=True),
        sa.Column("item_code", sa.String(64), primary_key=True),
        sa.Column("warehouse", sa.String(16), primary_key=True),
        sa.Column("below", sa.Boolean, nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
    )
    op.create_table(
        "b1tw_notifications",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("notification_id", sa.String(250), nullable=False, unique=True),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("rule_id", sa.String(80), nullable=False),
        sa.Column("document", sa.String(80), nullable=False),
        sa.Column("recipient", sa.String(120), nullable=False),
        sa.Column("recipient_name", sa.String(120), nullable=False),
        sa.Column("recipient_masked", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("sid", sa.String(40), unique=True),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_message", sa.Text),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt_started_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("final_at", sa.DateTime(timezone=True)),
        sa.Column("escalation_of", sa.String(250)),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "b1tw_delivery_events",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("sid", sa.String(40), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("error_code", sa.Integer),
        sa.Column("source", sa.String(12), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported", sa.Boolean, nullable=False),
        sa.Column("audited", sa.Boolean, nullable=False),
        sa.UniqueConstraint("sid", "status", name="uq_b1tw_delivery_sid_status"),
    )
