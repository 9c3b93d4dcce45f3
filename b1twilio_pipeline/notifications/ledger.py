"""The notification ledger: every notification is a row before anything is sent, and moves through a small
state machine whose every transition is a compare-and-set, so any number of workers can share it.

    planned --claim(attempts = n)--> sending (lease owner, lease until)
    sending --complete--> <Twilio status> (SID recorded; delivery statuses follow)
    sending --release--> planned (retry later, with backoff; `ambiguous_since` kept when the attempt
                                  may have reached Twilio, so the next one asks Twilio before sending)
    sending --fail--> failed          (Twilio refused it for good)
    sending --review--> review        (a lookup found several candidates: a person decides)

After `max_attempts` failed attempts a row is failed for good, and the admins' alert about it is planned
in the same transaction as that transition.

A claim increments `attempts` and succeeds only if the row still has the attempt count the caller saw
and nobody holds a live lease: two workers, a re-executed run or a second daemon can never both send.
A worker that dies leaves its lease to expire; the next claim takes the row over and, because the row
was `sending`, looks Twilio up before sending again. Due work is found by state and time, never by a
sequence cursor (rows commit out of order on PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core import settings
from b1twilio_pipeline.core.company_scope import served_company
from b1twilio_pipeline.core.schema import alert_events, delivery_events, notifications
from b1twilio_pipeline.core.sql import aware, insert, utcnow
from b1twilio_pipeline.notifications.delivery_log import advance, delivery_event

PLANNED, SENDING, FAILED, REVIEW = "planned", "sending", "failed", "review"
# Final statuses and read receipts: each is written to the B1 audit table once.
REF_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: people type these codes back
SKIPPED = "skipped"  # an escalation whose alert was acknowledged before it went out
# An alert can be acknowledged this long after it was sent; a person's codes are unique over it.
ACK_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class RedrivePolicy:
    """How often and how long a notification is retried before it is declared failed."""

    max_attempts: int = 8
    first_retry: timedelta = timedelta(seconds=30)
    max_retry: timedelta = timedelta(minutes=30)
    lease: timedelta = timedelta(minutes=10)

    @classmethod
    def from_settings(cls) -> RedrivePolicy:
        now = settings.current()
        return cls(max_attempts=now.b1twilio_send_max_attempts,
                   first_retry=timedelta(seconds=now.b1twilio_send_retry_seconds),
                   lease=timedelta(seconds=now.b1twilio_send_lease_seconds))

    def retry_delay(self, failures: int) -> timedelta:
        """Exponential: first_retry, twice that, ... capped at max_retry."""
        return min(self.max_retry, self.first_retry * (2 ** max(0, failures - 1)))


@dataclass(frozen=True, kw_only=True)
class PlannedNotification:
    """What to send, to whom and not before when: a ledger row before anything is sent."""

    notification_id: str
    alert_id: str
    rule_id: str
    document: str
    recipient: str
    recipient_name: str
    recipient_masked: str
    channel: str
    body: str
    not_before: datetime
    escalation_of: str | None = None


@dataclass(frozen=True, kw_only=True)
class Notification(PlannedNotification):
    """A ledger row as stored, with its sending state."""

    seq: int
    ref: str | None
    status: str
    sid: str | None
    error_code: int | None
    error_message: str | None
    created_at: datetime
    attempt_started_at: datetime | None
    sent_at: datetime | None
    final_at: datetime | None
    escalated: bool
    run_id: str | None
    attempts: int
    failures: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    ambiguous_since: datetime | None

    @property
    def lookup_since(self) -> datetime | None:
        """Set when an earlier attempt may have reached Twilio without its SID being recorded."""
        return self.ambiguous_since


_TIMESTAMPS = ("not_before", "created_at", "attempt_started_at", "sent_at", "final_at", "next_attempt_at",
               "lease_until", "ambiguous_since")


def notification_from(row: Any) -> Notification:
    """A row of the notifications table as a Notification (timestamps aware)."""
    values = {f.name: getattr(row, f.name) for f in fields(Notification)}
    values.update({name: aware(values[name]) for name in _TIMESTAMPS}, escalated=bool(row.escalated))
    return Notification(**values)


def bounded_id(*parts: str, limit: int = 250) -> str:
    """Parts joined with `|`; when that is longer than the column allows, the tail becomes a hash, so ids
    stay stable and unique whatever the length of names in the rules file."""
    joined = "|".join(parts)
    if len(joined) <= limit:
        return joined
    return joined[:limit - 17] + "#" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def reference(notification_id: str, salt: int = 0) -> str:
    """A 6-character code derived from the notification id (A-Z and 2-9 without look-alikes) and the company
    this process serves: two companies' alerts on the same DocNum get different codes, so a reply to a
    number they share names one of them."""
    seed = f"{served_company() or ''}{notification_id}#{salt}"
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return "".join(REF_ALPHABET[(digest >> (5 * i)) & 31] for i in range(6))


class Ledger:
    """Planning and the sending state machine (delivery statuses are in `delivery_log`)."""

    def __init__(self, engine: Engine, policy: RedrivePolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or RedrivePolicy.from_settings()

    # -- planning -------------------------------------------------------------------------------
    def plan(self, planned: Sequence[PlannedNotification], *, alert_id: str | None = None) -> int:
        """Insert planned notifications (existing ids are left alone) and, in the same transaction, mark
        their alert as planned, so a crash never plans an alert half or twice. Returns how many were new."""
        with self.engine.begin() as conn:
            new = self.insert_planned(conn, planned)
            if alert_id is not None:
                conn.execute(sa.update(alert_events).where(alert_events.c.alert_id == alert_id)
                             .values(planned=True, plan_error=None))
        return new

    def escalate(self, notification_id: str, planned: Sequence[PlannedNotification]) -> int:
        """Record that `notification_id` was escalated and plan its escalation in one transaction; a second
        call (another worker, a retry) finds the flag already set and plans nothing."""
        with self.engine.begin() as conn:
            claimed = conn.execute(sa.update(notifications).where(
                notifications.c.notification_id == notification_id, notifications.c.escalated.is_(False))
                .values(escalated=True, updated_at=utcnow())).rowcount
            return self.insert_planned(conn, planned) if claimed else 0

    @staticmethod
    def insert_planned(conn: Connection, planned: Sequence[PlannedNotification], *, digest: bool = False) -> int:
        """Insert rows in the caller's transaction (existing ids are left alone); how many were new. Static:
        it needs no re-drive policy, so any stage planning in its own transaction can call it."""
        now = utcnow()
        new = 0
        for p in planned:
            stmt = insert(conn, notifications).values(
                **asdict(p), ref=Ledger._free_ref(conn, p), status=PLANNED, created_at=now, updated_at=now,
                next_attempt_at=p.not_before, escalated=False, attempts=0, failures=0, digest=digest,
            ).on_conflict_do_nothing(index_elements=[notifications.c.notification_id])
            new += conn.execute(stmt).rowcount or 0
        return new

    @staticmethod
    def _free_ref(conn: Connection, p: PlannedNotification) -> str:
        """A reference not used by another notification of the same recipient that is unfinished or can
        still be acknowledged: the code a person replies names exactly one alert."""
        c = notifications.c
        recent = sa.or_(c.final_at.is_(None), c.created_at >= utcnow() - ACK_WINDOW)
        taken = set(conn.scalars(sa.select(c.ref).where(c.recipient == p.recipient, recent, c.ref.is_not(None))))
        salt = 0
        while (ref := reference(p.notification_id, salt)) in taken:
            salt += 1
        return ref

    # -- finding work ---------------------------------------------------------------------------
    def due(self, now: datetime, limit: int = 1000) -> list[Notification]:
        """Planned rows whose time has come, and rows whose sending worker's lease ran out."""
        c = notifications.c
        query = (sa.select(notifications).where(sa.or_(
            sa.and_(c.status == PLANNED, c.next_attempt_at <= now),
            sa.and_(c.status == SENDING, sa.or_(c.lease_until.is_(None), c.lease_until < now)),
        )).order_by(c.next_attempt_at, c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [notification_from(r) for r in conn.execute(query)]

    def get(self, notification_id: str) -> Notification | None:
        return self._one(notifications.c.notification_id == notification_id)

    def by_sid(self, sid: str) -> Notification | None:
        return self._one(notifications.c.sid == sid)

    def by_ref(self, recipient: str, ref: str) -> Notification | None:
        return self._one(sa.and_(notifications.c.recipient == recipient, notifications.c.ref == ref))

    def _one(self, condition: Any) -> Notification | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(notifications).where(condition)
                               .order_by(notifications.c.seq.desc()).limit(1)).first()
        return notification_from(row) if row else None

    def sid_owner(self, sid: str) -> str | None:
        """The notification that recorded `sid`, if any: crash recovery never adopts someone else's."""
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(notifications.c.notification_id).where(notifications.c.sid == sid))

    def sending_elsewhere(self, n: Notification, now: datetime) -> bool:
        """Whether another notification to the same person and channel is being sent right now (its SID
        may not be recorded yet, so a lookup could mistake its call for ours)."""
        c = notifications.c
        query = sa.select(sa.func.count()).where(
            c.recipient == n.recipient, c.channel == n.channel, c.notification_id != n.notification_id,
            c.status == SENDING, c.lease_until >= now)
        with self.engine.connect() as conn:
            return bool(conn.scalar(query))

    # -- the sending state machine --------------------------------------------------------------
    def claim(self, notification_id: str, attempts: int, owner: str, now: datetime) -> Notification | None:
        """Take the row for one attempt, if it still has `attempts` claims and nobody holds a live lease.
        A row found `sending` (its worker died) keeps the time of that attempt in `ambiguous_since`."""
        n = self.get(notification_id)
        if n is None or n.attempts != attempts:
            return None
        c = notifications.c
        if n.status == PLANNED and n.next_attempt_at is not None and n.next_attempt_at <= now:
            guard = c.status == PLANNED
        elif n.status == SENDING and (n.lease_until is None or n.lease_until < now):
            guard = sa.and_(c.status == SENDING, sa.or_(c.lease_until.is_(None), c.lease_until < now))
        else:
            return None
        ambiguous = n.ambiguous_since or (n.attempt_started_at if n.status == SENDING else None)
        values = {"status": SENDING, "attempts": attempts + 1, "lease_owner": owner,
                  "lease_until": now + self.policy.lease, "attempt_started_at": now,
                  "ambiguous_since": ambiguous, "run_id": owner, "updated_at": now}
        with self.engine.begin() as conn:
            taken = conn.execute(sa.update(notifications).where(
                c.notification_id == notification_id, c.attempts == attempts, guard).values(**values)).rowcount
        return self.get(notification_id) if taken else None

    def complete(self, notification_id: str, owner: str, sid: str, status: str) -> bool:
        """Record the SID of the holder's attempt; statuses that arrived by callback before it (Twilio is
        fast) apply now. False when the holder lost its lease meanwhile."""
        c = notifications.c
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(notifications).where(
                c.notification_id == notification_id, c.status == SENDING, c.lease_owner == owner).values(
                sid=sid, status=status, sent_at=now, lease_owner=None, lease_until=None, ambiguous_since=None,
                error_code=None, error_message=None, updated_at=now)).rowcount
            if not done:
                return False
            for event in conn.execute(sa.select(delivery_events).where(delivery_events.c.sid == sid)
                                      .order_by(delivery_events.c.seq)).all():
                advance(conn, delivery_event(event))
        return True

    def release(self, n: Notification, owner: str, *, error_code: int | None, message: str,
                may_have_sent: bool, retry_at: datetime | None = None, count: bool = True) -> datetime | None:
        """Hand the row back for a later attempt after a failure that may pass (an outage, a missing
        secret); `count=False` when nothing failed (only waiting for another worker). Returns when it is
        due again, or None when the holder had lost its lease."""
        failures = n.failures + 1 if count else n.failures
        retry_at = retry_at or utcnow() + self.policy.retry_delay(failures)
        ambiguous = (n.ambiguous_since or n.attempt_started_at) if may_have_sent else n.ambiguous_since
        done = self._transition(n.notification_id, owner, status=PLANNED, next_attempt_at=retry_at,
                                failures=failures, error_code=error_code, error_message=message,
                                ambiguous_since=ambiguous)
        return retry_at if done else None

    def postpone(self, n: Notification, owner: str, until: datetime) -> bool:
        """Back to planned until `until` without counting a failure (quiet hours began meanwhile)."""
        return self._transition(n.notification_id, owner, status=PLANNED, next_attempt_at=until)

    def fail(self, n: Notification, owner: str, *, error_code: int | None, message: str, status: str = FAILED,
             admin_alerts: Sequence[PlannedNotification] = ()) -> bool:
        """Final: Twilio refused it for good, it failed `max_attempts` times, or (status `review`) a person
        must decide. The admins' alerts about it are planned in the same transaction."""
        return self._transition(n.notification_id, owner, status=status, error_code=error_code,
                                error_message=message, final_at=utcnow(), failures=n.failures + 1,
                                planned=admin_alerts)

    def skip(self, n: Notification, owner: str, reason: str) -> bool:
        """Final without sending: its alert was acknowledged before this escalation went out."""
        return self._transition(n.notification_id, owner, status=SKIPPED, error_message=reason, final_at=utcnow())

    def _transition(self, notification_id: str, owner: str, planned: Sequence[PlannedNotification] = (),
                    **values: Any) -> bool:
        """Move the holder's row on (only while `owner` holds it) and plan `planned` in the same transaction."""
        c = notifications.c
        values.update(lease_owner=None, lease_until=None, updated_at=utcnow())
        with self.engine.begin() as conn:
            done = bool(conn.execute(sa.update(notifications).where(
                c.notification_id == notification_id, c.status == SENDING, c.lease_owner == owner)
                .values(**values)).rowcount)
            if done:
                self.insert_planned(conn, planned)
        return done

    def alert_fields(self, alert_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.scalar(sa.select(alert_events.c.fields).where(alert_events.c.alert_id == alert_id))
        return json.loads(text) if text else {}

    def needs_escalation(self, limit: int = 200) -> list[Notification]:
        """Notifications that reached a final status and whose escalation was not decided yet."""
        c = notifications.c
        query = (sa.select(notifications).where(c.final_at.is_not(None), c.escalated.is_(False))
                 .order_by(c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [notification_from(r) for r in conn.execute(query)]
