"""The audit view: who was told what, when, and did it arrive, as one table on the latest materialization
of `notifications/notification_deliveries` (the asset's page in the Dagster UI).

Each delivery run rewrites it from the ledger, so it shows the state now (the latest status of each
message or call), not the statuses one run happened to see. The run list is no place for this: there a
notification is one step among many of a batch run, and polling runs outnumber notification runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from b1twilio_pipeline.notifications.acknowledgements import Acknowledgement, Acknowledgements
from b1twilio_pipeline.notifications.ledger import Notification
from b1twilio_pipeline.notifications.ledger_reads import LedgerReads

WINDOW = timedelta(hours=24)
MAX_ROWS = 200
MAX_TEXT = 160
# Who, whether it arrived and when first: the UI shows the table in a column it cannot widen.
COLUMNS = (
    ("recipient", "name and masked phone"),
    ("status", "latest status: delivered (SMS) or completed (call) = it arrived; planned = not sent yet"),
    ("sent_utc", "when Twilio accepted it; empty while it is planned"),
    ("channel", "sms or voice"),
    ("rule", "the rule that fired"),
    ("document", "what it is about"),
    ("acknowledged", "who took the alert on (by SMS reply or keypress) and when"),
    ("message", "the text sent or spoken"),
    ("planned_utc", "when the alert became this notification"),
)


def _time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


def _record(n: Notification, ack: Acknowledgement | None) -> dg.TableRecord:
    text = n.body if len(n.body) <= MAX_TEXT else n.body[:MAX_TEXT - 1] + "…"
    return dg.TableRecord({
        "recipient": f"{n.recipient_name} {n.recipient_masked}", "status": n.status, "sent_utc": _time(n.sent_at),
        "channel": n.channel, "rule": n.rule_id, "document": n.document,
        "acknowledged": f"{ack.who}, {_time(ack.acknowledged_at)} ({ack.via})" if ack else "", "message": text,
        "planned_utc": _time(n.created_at),
    })


def audit_table(reads: LedgerReads, now: datetime) -> dg.TableMetadataValue:
    """The last `WINDOW` of notifications (at most `MAX_ROWS`), newest first."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string", description=text) for name, text in COLUMNS])
    shown = reads.recent(now - WINDOW, MAX_ROWS)
    acks = Acknowledgements(reads.engine).of_alerts([n.alert_id for n in shown])
    return dg.MetadataValue.table([_record(n, acks.get(n.alert_id)) for n in shown], schema=schema)
