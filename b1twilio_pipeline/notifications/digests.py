"""Digests in the ledger: a rule's alerts for one person join one open digest notification (planned, not due
yet) instead of each becoming an SMS; when the digest falls due it is sent like any notification, through
the same claims, lookups and receipts, so it is exactly once for the same reasons.

The digest's text is rewritten as each alert joins, from the lines of its alerts in the order they joined:
a count, up to `max_items` lines while the SMS stays within `MAX_SEGMENTS` (the acknowledgement suffix
reserved), then "and N more". Every alert stays accounted for in `b1tw_digest_items`, and one code
acknowledges them all (`acknowledgements`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core.schema import alert_events, digest_items, notifications
from b1twilio_pipeline.core.sql import insert, utcnow
from b1twilio_pipeline.notifications.ledger import PLANNED, Ledger, PlannedNotification, bounded_id
from b1twilio_pipeline.notifications.sms_length import segments

MAX_SEGMENTS = 3
RESERVED = len(" Reply XXXXXXXX to acknowledge.")  # what the sender appends to an SMS


def compose(rule_id: str, lines: Sequence[str], max_items: int) -> str:
    """'3 alerts (rule): line; line; line', or with '... and N more.' past `max_items` or the length."""
    def text(shown: Sequence[str]) -> str:
        more = len(lines) - len(shown)
        return (f"{len(lines)} alert{'s' if len(lines) > 1 else ''} ({rule_id}): " + "; ".join(shown)
                + (f"; and {more} more." if more else ""))

    shown: list[str] = []
    for line in lines[:max_items]:
        if shown and segments(text([*shown, line]) + "x" * RESERVED) > MAX_SEGMENTS:
            break
        shown.append(line)
    return text(shown)


class Digests:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, item: PlannedNotification, *, until: datetime, max_items: int) -> str:
        """Put `item` (one alert for one person, its body the line to list) into the person's open digest
        of the rule, opening one due at `until` if there is none; marks the alert planned in the same
        transaction. Returns the digest's notification id."""
        with self.engine.begin() as conn:
            digest_id = self._open_digest(conn, item) or self._new_digest(conn, item, until)
            conn.execute(insert(conn, digest_items).values(
                notification_id=digest_id, alert_id=item.alert_id, line=item.body, added_at=utcnow(),
            ).on_conflict_do_nothing(index_elements=[digest_items.c.notification_id, digest_items.c.alert_id]))
            lines = list(conn.scalars(sa.select(digest_items.c.line).where(digest_items.c.notification_id == digest_id)
                                      .order_by(digest_items.c.added_at, digest_items.c.alert_id)))
            conn.execute(sa.update(notifications).where(notifications.c.notification_id == digest_id)
                         .values(body=compose(item.rule_id, lines, max_items), updated_at=utcnow()))
            conn.execute(sa.update(alert_events).where(alert_events.c.alert_id == item.alert_id)
                         .values(planned=True, plan_error=None))
        return digest_id

    def _open_digest(self, conn: Connection, item: PlannedNotification) -> str | None:
        """The person's digest of the rule that is still gathering (planned and not due), locked."""
        c = notifications.c
        return conn.scalar(sa.select(c.notification_id).where(
            c.rule_id == item.rule_id, c.recipient == item.recipient, c.digest.is_(True), c.status == PLANNED,
            c.next_attempt_at > utcnow()).order_by(c.seq.desc()).limit(1).with_for_update())

    def _new_digest(self, conn: Connection, item: PlannedNotification, until: datetime) -> str:
        digest = replace(item, notification_id=bounded_id("digest", item.rule_id, item.recipient, until.isoformat()),
                         document=f"digest of {item.rule_id}", not_before=until, escalation_of=None)
        Ledger.insert_planned(conn, [digest], digest=True)
        return digest.notification_id
