"""Notification state machine (claims, failures, leases, re-drive, lookup before resend), bounded
delivery polling, unbounded free-text columns, open-document flag and alert planning errors.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("b1tw_snapshots") as table:
        table.add_column(sa.Column("is_open", sa.Boolean))
        table.create_index("ix_b1tw_snapshots_open", ["entity", "is_open"])
    # Documents stored before this release: derive the flag from their payload once.
    rows = op.get_bind().execute(sa.text(
        "SELECT entity, key, payload FROM b1tw_snapshots WHERE entity IN "
        "('Invoices', 'PurchaseInvoices', 'PurchaseOrders')")).all()
    for entity, key, payload in rows:
        op.get_bind().execute(sa.text(
            "UPDATE b1tw_snapshots SET is_open = :open WHERE entity = :entity AND key = :key"),
            {"open": _is_open(payload), "entity": entity, "key": key})

    with op.batch_alter_table("b1tw_alert_events") as table:
        table.alter_column("document", type_=sa.Text, existing_nullable=False)
        table.add_column(sa.Column("plan_error", sa.Text))

    with op.batch_alter_table("b1tw_notifications") as table:
        for column in ("document", "recipient", "recipient_name", "recipient_masked"):
            table.alter_column(column, type_=sa.Text, existing_nullable=False)
        table.add_column(sa.Column("ref", sa.String(8)))
        table.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        for column in ("next_attempt_at", "lease_until", "ambiguous_since", "updated_at", "polled_at",
                       "next_poll_at"):
            table.add_column(sa.Column(column, TZ))
        table.add_column(sa.Column("lease_owner", sa.String(64)))
        table.create_index("ix_b1tw_notifications_due", ["status", "next_attempt_at"])
        table.create_index("ix_b1tw_notifications_recipient_ref", ["recipient", "ref"])
    # Rows planned by the previous release are due when their quiet-hours hold ends, as before; a row it
    # left `sending` is looked up at Twilio before anything is sent again.
    op.execute("UPDATE b1tw_notifications SET next_attempt_at = not_before, updated_at = created_at")
    op.execute("UPDATE b1tw_notifications SET ambiguous_since = attempt_started_at "
               "WHERE status = 'sending' AND sid IS NULL")


def _is_open(payload: str) -> bool:
    import json

    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    return (isinstance(doc, dict) and doc.get("DocumentStatus") == "bost_Open" and doc.get("Cancelled") != "tYES"
            and doc.get("CancelStatus") not in ("csYes", "csCancellation"))
