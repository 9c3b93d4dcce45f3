"""Every status a message or call went through, once each: from status callbacks and from polling Twilio,
in whatever order they come. `advance` moves a notification's status only forward (see `statuses`), so
replays and late statuses change nothing. It also knows what is due for a poll, what is not yet reported
to Dagster and what is not yet written to the B1 audit table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core.schema import delivery_events, notifications
from b1twilio_pipeline.core.sql import aware, chunks, insert, utcnow
from b1twilio_pipeline.notifications.statuses import StatusEvent, is_final, should_advance

# Final statuses, read receipts and acknowledgements: each is written to the B1 audit table once.
AUDITED_STATUSES = ("delivered", "undelivered", "failed", "read", "canceled", "completed", "busy", "no-answer",
                    "acknowledged")


@dataclass(frozen=True)
class DeliveryEvent:
    seq: int
    sid: str
    status: str
    channel: str
    error_code: int | None
    source: str
    received_at: datetime


def delivery_event(row: Any) -> DeliveryEvent:
    return DeliveryEvent(row.seq, row.sid, row.status, row.channel, row.error_code, row.source,
                         aware(row.received_at))


def advance(conn: Connection, event: StatusEvent | DeliveryEvent) -> bool:
    """Move the notification of the event's SID on to its status, unless that would be backwards."""
    row = conn.execute(sa.select(notifications.c.status, notifications.c.channel)
                       .where(notifications.c.sid == event.sid)).first()
    if row is None or not should_advance(row.channel, row.status, event.status):
        return False
    values: dict[str, Any] = {"status": event.status, "updated_at": utcnow()}
    if event.error_code is not None:
        values["error_code"] = event.error_code
    if is_final(row.channel, event.status):
        values["final_at"] = event.received_at
    conn.execute(sa.update(notifications).where(notifications.c.sid == event.sid).values(**values))
    return True


class DeliveryLog:
    """The delivery events of the ledger's notifications."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def apply_status(self, event: StatusEvent) -> bool:
        """Record a status from a callback or a poll. Replays are no-ops; a status never moves a
        notification backwards. True when anything changed."""
        with self.engine.begin() as conn:
            inserted = conn.execute(insert(conn, delivery_events).values(
                sid=event.sid, status=event.status, channel=event.channel, error_code=event.error_code,
                source=event.source, received_at=event.received_at, reported=False, audited=False,
            ).on_conflict_do_nothing(index_elements=[delivery_events.c.sid, delivery_events.c.status])
            ).rowcount or 0
            advanced = advance(conn, event)
            return bool(inserted) or advanced

    def due_for_poll(self, now: datetime, limit: int = 200) -> list[tuple[str, str]]:
        """(sid, channel) of sent notifications without a final status whose next poll is due, least
        recently polled first, so old unanswered ones never crowd out new ones."""
        c = notifications.c
        query = (sa.select(c.sid, c.channel).where(
            c.sid.is_not(None), c.final_at.is_(None), sa.or_(c.next_poll_at.is_(None), c.next_poll_at <= now))
            .order_by(c.polled_at.is_not(None), c.polled_at, c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [(r.sid, r.channel) for r in conn.execute(query)]

    def mark_polled(self, sid: str, now: datetime) -> None:
        """Poll again after a tenth of the message's age (at least 15 s, at most 30 min)."""
        c = notifications.c
        with self.engine.begin() as conn:
            sent_at = aware(conn.scalar(sa.select(c.sent_at).where(c.sid == sid))) or now
            interval = min(timedelta(minutes=30), max(timedelta(seconds=15), (now - sent_at) / 10))
            conn.execute(sa.update(notifications).where(c.sid == sid)
                         .values(polled_at=now, next_poll_at=now + interval))

    def expire_unconfirmed(self, now: datetime, max_age: timedelta) -> int:
        """Stop waiting for receipts older than `max_age`: the last status (e.g. `sent`) becomes final."""
        c = notifications.c
        with self.engine.begin() as conn:
            return conn.execute(sa.update(notifications).where(
                c.sid.is_not(None), c.final_at.is_(None), c.sent_at < now - max_age)
                .values(final_at=now, updated_at=now)).rowcount or 0

    def history(self, sid: str) -> list[DeliveryEvent]:
        query = sa.select(delivery_events).where(delivery_events.c.sid == sid).order_by(delivery_events.c.seq)
        with self.engine.connect() as conn:
            return [delivery_event(r) for r in conn.execute(query)]

    def unreported(self, limit: int = 1000) -> list[DeliveryEvent]:
        return self._events(delivery_events.c.reported.is_(False), limit)

    def unaudited(self, limit: int = 1000) -> list[DeliveryEvent]:
        c = delivery_events.c
        return self._events(sa.and_(c.audited.is_(False), c.status.in_(AUDITED_STATUSES)), limit)

    def _events(self, condition: Any, limit: int) -> list[DeliveryEvent]:
        query = sa.select(delivery_events).where(condition).order_by(delivery_events.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [delivery_event(r) for r in conn.execute(query)]

    def mark_reported(self, seqs: Iterable[int]) -> None:
        self._flag_events(seqs, reported=True)

    def mark_audited(self, seqs: Iterable[int]) -> None:
        self._flag_events(seqs, audited=True)

    def _flag_events(self, seqs: Iterable[int], **values: bool) -> None:
        ids = list(seqs)
        with self.engine.begin() as conn:
            for chunk in chunks(ids, 500):
                conn.execute(sa.update(delivery_events).where(delivery_events.c.seq.in_(chunk)).values(**values))

    def pending_work(self, now: datetime) -> dict[str, int]:
        """Counts the delivery sensor needs to decide whether a delivery run is worth launching."""
        c, e = notifications.c, delivery_events.c
        with self.engine.connect() as conn:
            poll_due = conn.scalar(sa.select(sa.func.count()).where(
                c.sid.is_not(None), c.final_at.is_(None),
                sa.or_(c.next_poll_at.is_(None), c.next_poll_at <= now))) or 0
            unreported = conn.scalar(sa.select(sa.func.count()).where(e.reported.is_(False))) or 0
            unaudited = conn.scalar(sa.select(sa.func.count()).where(
                e.audited.is_(False), e.status.in_(AUDITED_STATUSES))) or 0
            undecided = conn.scalar(sa.select(sa.func.count()).where(
                c.final_at.is_not(None), c.escalated.is_(False))) or 0
            version = conn.scalar(sa.select(sa.func.max(c.updated_at)))
        return {"poll_due": poll_due, "unreported": unreported, "unaudited": unaudited, "undecided": undecided,
                "version": int(aware(version).timestamp()) if version else 0}
