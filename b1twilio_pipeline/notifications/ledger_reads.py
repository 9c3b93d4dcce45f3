"""The ledger read for people, not for sending: what the delivery checks, the audit view and the receiver
ask. Nothing here changes a row; the state machine is `ledger`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b1twilio_pipeline.core.schema import acknowledgements, notifications
from b1twilio_pipeline.notifications.ledger import ACK_WINDOW, FAILED, REVIEW, Notification, notification_from
from b1twilio_pipeline.notifications.statuses import DELIVERY_CHANNELS, EXCEPTIONS, REACHED


class LedgerReads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def unresolved_failures(self, since: datetime) -> list[Notification]:
        """Notifications failed for good or waiting for review, decided since `since`."""
        c = notifications.c
        query = (sa.select(notifications).where(c.status.in_((FAILED, REVIEW)), c.sid.is_(None),
                                                c.final_at >= since).order_by(c.seq))
        with self.engine.connect() as conn:
            return [notification_from(r) for r in conn.execute(query)]

    def awaiting_acknowledgement(self, recipients: Sequence[str], now: datetime) -> list[Notification]:
        """Notifications sent to these recipients within ACK_WINDOW whose alert nobody acknowledged yet,
        newest first: what a reply from their phone can acknowledge."""
        c = notifications.c
        acked = sa.exists().where(acknowledgements.c.alert_id == c.alert_id)
        query = (sa.select(notifications).where(c.recipient.in_(list(recipients)), c.sid.is_not(None),
                                                c.sent_at >= now - ACK_WINDOW, ~acked)
                 .order_by(c.sent_at.desc(), c.seq.desc()))
        with self.engine.connect() as conn:
            return [notification_from(r) for r in conn.execute(query)]

    def recent(self, since: datetime, limit: int = 200) -> list[Notification]:
        """Notifications planned since `since`, newest first: the audit view's rows."""
        c = notifications.c
        query = sa.select(notifications).where(c.created_at >= since).order_by(c.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [notification_from(r) for r in conn.execute(query)]

    def unresolved_exceptions(self, since: datetime) -> list[Notification]:
        """Delivery exceptions (statuses.EXCEPTIONS) final since `since` that none of their escalations made up
        for: no notification escalated from them (directly or down the on-call chain) reached its person.
        Another recipient of the same alert being reached does not count: each person was to be told."""
        c = notifications.c
        query = (sa.select(notifications).where(c.sid.is_not(None), c.final_at >= since,
                                                _any_status(notifications, EXCEPTIONS)).order_by(c.seq))
        with self.engine.connect() as conn:
            found = [notification_from(r) for r in conn.execute(query)]
            if not found:
                return []
            family = conn.execute(sa.select(c.notification_id, c.escalation_of, _any_status(notifications, REACHED))
                                  .where(c.alert_id.in_(sorted({n.alert_id for n in found})))).all()
        parent = {row[0]: row[1] for row in family}
        made_up: set[str] = set()
        for notification_id, _, reached in family:
            ancestor = parent.get(notification_id) if reached else None
            while ancestor is not None and ancestor not in made_up:
                made_up.add(ancestor)
                ancestor = parent.get(ancestor)
        return [n for n in found if n.notification_id not in made_up]


def _any_status(table: sa.FromClause, statuses: dict[str, frozenset[str]]) -> sa.ColumnElement[bool]:
    """The row's status is one of `statuses` for its channel."""
    return sa.or_(*(sa.and_(table.c.channel == channel, table.c.status.in_(sorted(statuses[channel])))
                    for channel in DELIVERY_CHANNELS))
