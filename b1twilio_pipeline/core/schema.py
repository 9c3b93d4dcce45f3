"""Tables of the pipeline's own database (snapshot store, alert events, notification ledger, delivery
events), kept apart from Dagster's storage. The migrations in `b1twilio_pipeline/migrations` create and
evolve exactly these tables; a test compares them so the two never drift.

Free text that comes from outside (names from the rules file, B1 document references, masked numbers) is
stored unbounded: PostgreSQL enforces VARCHAR lengths, and one overlong name must not stop every later
alert from being planned.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

snapshots = sa.Table(
    "b1tw_snapshots",
    metadata,
    sa.Column("entity", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("previous_payload", sa.Text),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Documents only: open and not cancelled, so state rules read open invoices without scanning history.
    sa.Column("is_open", sa.Boolean),
    sa.Index("ix_b1tw_snapshots_open", "entity", "is_open"),
)

alert_events = sa.Table(
    "b1tw_alert_events",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("alert_id", sa.String(200), nullable=False, unique=True),
    sa.Column("rule_id", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("planned", sa.Boolean, nullable=False, default=False),
    # Why the last attempt to plan this alert failed; such alerts are retried after the healthy ones.
    sa.Column("plan_error", sa.Text),
)

# Stock episodes: an item alerts again only after it recovered above its reorder point and fell again.
stock_state = sa.Table(
    "b1tw_stock_state",
    metadata,
    sa.Column("rule_id", sa.String(80), primary_key=True),
    sa.Column("item_code", sa.String(64), primary_key=True),
    sa.Column("warehouse", sa.String(16), primary_key=True),
    sa.Column("below", sa.Boolean, nullable=False),
    sa.Column("episode", sa.Integer, nullable=False),
)

notifications = sa.Table(
    "b1tw_notifications",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("notification_id", sa.String(250), nullable=False, unique=True),
    sa.Column("alert_id", sa.String(200), nullable=False),
    sa.Column("rule_id", sa.String(80), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),  # Recipient.key: never the number itself
    sa.Column("recipient_name", sa.Text, nullable=False),
    sa.Column("recipient_masked", sa.Text, nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # Short code the SMS carries: how crash recovery recognises its own message at Twilio.
    sa.Column("ref", sa.String(8)),
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
    sa.Column("escalated", sa.Boolean, nullable=False, default=False),
    sa.Column("digest", sa.Boolean, nullable=False, server_default=sa.false()),  # gathers several alerts
    sa.Column("run_id", sa.String(64)),
    # The state machine (see `ledger`): claims so far, failed attempts, when the row is next due, the
    # worker holding it and until when, and since when an attempt may have reached Twilio unrecorded.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("ambiguous_since", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # Delivery polling: least recently polled first, never again once final or too old.
    sa.Column("polled_at", sa.DateTime(timezone=True)),
    sa.Column("next_poll_at", sa.DateTime(timezone=True)),
    sa.Index("ix_b1tw_notifications_due", "status", "next_attempt_at"),
    sa.Index("ix_b1tw_notifications_recipient_ref", "recipient", "ref"),
)

delivery_events = sa.Table(
    "b1tw_delivery_events",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("sid", sa.String(40), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("error_code", sa.Integer),
    sa.Column("source", sa.String(12), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reported", sa.Boolean, nullable=False, default=False),
    sa.Column("audited", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("sid", "status", name="uq_b1tw_delivery_sid_status"),
)

# Moments recorded once per deployment (its first start: where the snapshot partitions begin).
milestones = sa.Table(
    "b1tw_milestones",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# Who took an alert on: the first acknowledgement of each alert (by SMS reply or keypress). A replayed or
# second acknowledgement finds the row and changes nothing.
acknowledgements = sa.Table(
    "b1tw_acknowledgements",
    metadata,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("notification_id", sa.String(250), nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),  # Recipient.key: never the number itself
    sa.Column("recipient_name", sa.Text, nullable=False),
    sa.Column("recipient_masked", sa.Text, nullable=False),
    sa.Column("via", sa.String(12), nullable=False),  # sms-reply | keypress
    sa.Column("via_sid", sa.String(40), nullable=False),  # the inbound message or the call
    sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
)

# The alerts a digest notification lists, in the order they joined it.
digest_items = sa.Table(
    "b1tw_digest_items",
    metadata,
    sa.Column("notification_id", sa.String(250), primary_key=True),
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)

# B1 webhook events (`b1.webhook_inbox`): each event id once, however often B1 retries or replays it. A row
# waits (handled_at NULL) until `b1_webhook_sensor` asks for the run that reads its record; the index
# serves that one query on every tick and the pruning of old handled rows.
b1_events = sa.Table(
    "b1tw_b1_events",
    metadata,
    sa.Column("event_id", sa.String(100), primary_key=True),
    sa.Column("entity", sa.String(40), nullable=False),  # PurchaseInvoices, Items, ...
    sa.Column("action", sa.String(12), nullable=False),  # Created | Updated
    sa.Column("record_key", sa.String(64), nullable=False),  # DocEntry or ItemCode, as the snapshot store keys it
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True)),
    sa.Column("run_key", sa.String(80)),  # the run that reads it, or why none does
    sa.Index("ix_b1tw_b1_events_handled", "handled_at"),
)
