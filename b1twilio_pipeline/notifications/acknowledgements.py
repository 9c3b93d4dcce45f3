"""Acknowledgements: a person says "I have it" by replying to an SMS or pressing 1 during a call.

An acknowledgement belongs to the alert, not to one message: the first one wins and is recorded once (a
replayed webhook or a second person's reply finds it and changes nothing). In the same transaction it
becomes a delivery event of the acknowledged message or call with status `acknowledged`, so the delivery
run reports it and the B1 audit write-back gives it its own receipt, exactly like a delivery status.

What it stops: escalations not yet decided or not yet sent (`deliveries._escalate`, `send.Sender`) and the
rule's re-notifications of the same document (`alerts.store.AlertStore.acknowledged_documents`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b1twilio_pipeline.core.schema import acknowledgements, delivery_events, digest_items
from b1twilio_pipeline.core.sql import aware, insert
from b1twilio_pipeline.notifications.ledger import Notification

ACKNOWLEDGED = "acknowledged"  # the delivery event's status, and the B1 receipt's
VIA_SMS, VIA_KEYPRESS = "sms-reply", "keypress"


@dataclass(frozen=True)
class Acknowledgement:
    alert_id: str
    notification_id: str
    recipient_name: str
    recipient_masked: str
    via: str
    acknowledged_at: datetime

    @property
    def who(self) -> str:
        return f"{self.recipient_name} {self.recipient_masked}"


def _acknowledgement(row: sa.Row) -> Acknowledgement:
    return Acknowledgement(row.alert_id, row.notification_id, row.recipient_name, row.recipient_masked, row.via,
                           aware(row.acknowledged_at))


class Acknowledgements:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, n: Notification, *, via: str, via_sid: str, at: datetime) -> tuple[Acknowledgement, bool]:
        """Acknowledge `n`'s alert as its recipient, unless someone already did: (the acknowledgement that
        stands, whether it is this one, new)."""
        with self.engine.begin() as conn:
            # A digest lists several alerts: its one code acknowledges each of them.
            listed = conn.scalars(sa.select(digest_items.c.alert_id)
                                  .where(digest_items.c.notification_id == n.notification_id)).all()
            created = 0
            for alert_id in dict.fromkeys([n.alert_id, *listed]):
                created += conn.execute(insert(conn, acknowledgements).values(
                    alert_id=alert_id, notification_id=n.notification_id, recipient=n.recipient,
                    recipient_name=n.recipient_name, recipient_masked=n.recipient_masked, via=via, via_sid=via_sid,
                    acknowledged_at=at,
                ).on_conflict_do_nothing(index_elements=[acknowledgements.c.alert_id])).rowcount or 0
            if created and n.sid:
                conn.execute(insert(conn, delivery_events).values(
                    sid=n.sid, status=ACKNOWLEDGED, channel=n.channel, error_code=None, source=via,
                    received_at=at, reported=False, audited=False,
                ).on_conflict_do_nothing(index_elements=[delivery_events.c.sid, delivery_events.c.status]))
            row = conn.execute(sa.select(acknowledgements).where(acknowledgements.c.alert_id == n.alert_id)).one()
        return _acknowledgement(row), created > 0

    def of_alerts(self, alert_ids: Sequence[str]) -> dict[str, Acknowledgement]:
        if not alert_ids:
            return {}
        query = sa.select(acknowledgements).where(acknowledgements.c.alert_id.in_(sorted(set(alert_ids))))
        with self.engine.connect() as conn:
            return {row.alert_id: _acknowledgement(row) for row in conn.execute(query)}

    def get(self, alert_id: str) -> Acknowledgement | None:
        return self.of_alerts([alert_id]).get(alert_id)
