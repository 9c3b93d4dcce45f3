"""The pipeline's own database: B1 snapshots, alert events, the notification ledger, delivery events and
audit write-backs. SQLAlchemy Core, so the same code runs on SQLite (quick start) and PostgreSQL
(production). It is kept apart from Dagster's own storage; every write is an idempotent upsert so any
number of run workers can share it and any run can be retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.delivery_status import StatusEvent, is_final, should_advance
from b1twilio_pipeline.settings import setting

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
)

alert_events = sa.Table(
    "b1tw_alert_events",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("alert_id", sa.String(200), nullable=False, unique=True),
    sa.Column("rule_id", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("document", sa.String(80), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("planned", sa.Boolean, nullable=False, default=False),
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
    sa.Column("document", sa.String(80), nullable=False),
    sa.Column("recipient", sa.String(120), nullable=False),  # Recipient.key: never the number itself
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
    sa.Column("escalated", sa.Boolean, nullable=False, default=False),
    sa.Column("run_id", sa.String(64)),
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

# Final statuses and read receipts: each is written to the B1 audit table once.
AUDITED_STATUSES = ("delivered", "undelivered", "failed", "read", "canceled", "completed", "busy",
                    "no-answer")

# Notification states before Twilio has a SID for them.
PLANNED, SENDING, SKIPPED = "planned", "sending", "skipped"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def content_hash(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def default_database_url() -> str:
    path = Path.home() / ".local" / "share" / "b1twilio" / "store.sqlite"
    return f"sqlite:///{path}"


def create_store_engine(url: str | None = None) -> Engine:
    """Engine for `url`, else B1TWILIO_DATABASE_URL, else a SQLite file; tables are created if missing."""
    url = url or setting("B1TWILIO_DATABASE_URL") or default_database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def _insert(conn: Connection, table: sa.Table) -> Any:
    """Dialect-specific INSERT that supports ON CONFLICT (SQLite and PostgreSQL both do)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


@dataclass(frozen=True)
class UpsertCounts:
    fetched: int
    new: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class Snapshot:
    entity: str
    key: str
    payload: dict[str, Any]
    previous: dict[str, Any] | None
    first_seen_at: datetime
    updated_at: datetime


class SnapshotStore:
    """Latest known version of every B1 record, keyed by (entity, DocEntry/ItemCode)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def upsert(self, entity: str, key_field: str, rows: Iterable[Mapping[str, Any]],
               chunk_size: int = 1000) -> UpsertCounts:
        """Insert new records, update changed ones, leave identical ones alone.

        Streams in chunks (an initial sync of 100,000 invoices never sits in memory at once); a record
        repeated by the window overlap or a `$skip` drift is counted once.
        """
        fetched = new = updated = 0
        seen: set[str] = set()
        batch: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            fetched += 1
            key = str(row[key_field])
            seen.add(key)
            batch[key] = row
            if len(batch) >= chunk_size:
                n, u = self._upsert_chunk(entity, batch)
                new, updated, batch = new + n, updated + u, {}
        if batch:
            n, u = self._upsert_chunk(entity, batch)
            new, updated = new + n, updated + u
        return UpsertCounts(fetched, new, updated, len(seen) - new - updated)

    def _upsert_chunk(self, entity: str, batch: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
        new = updated = 0
        now = utcnow()
        with self.engine.begin() as conn:
            existing = {
                key: (digest, payload)
                for key, digest, payload in conn.execute(
                    sa.select(snapshots.c.key, snapshots.c.content_hash, snapshots.c.payload).where(
                        snapshots.c.entity == entity, snapshots.c.key.in_(list(batch))
                    )
                )
            }
            writes: list[dict[str, Any]] = []
            for key, row in batch.items():
                payload = dict(row)
                digest = content_hash(payload)
                if key in existing and existing[key][0] == digest:
                    continue
                previous = existing[key][1] if key in existing else None
                new, updated = (new + 1, updated) if previous is None else (new, updated + 1)
                writes.append({"entity": entity, "key": key, "payload": json.dumps(payload, default=str),
                               "previous_payload": previous, "content_hash": digest,
                               "first_seen_at": now, "updated_at": now})
            if writes:
                stmt = _insert(conn, snapshots)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[snapshots.c.entity, snapshots.c.key],
                    set_={name: stmt.excluded[name]
                          for name in ("payload", "previous_payload", "content_hash", "updated_at")},
                ), writes)
        return new, updated

    def field_by_key(self, entity: str, keys: Iterable[str], field: str) -> dict[str, Any]:
        """One field of the given records, e.g. DocNum of the invoices a payment settles."""
        wanted = sorted(set(keys))
        found: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(wanted, 500):
                for key, payload in conn.execute(sa.select(snapshots.c.key, snapshots.c.payload).where(
                        snapshots.c.entity == entity, snapshots.c.key.in_(chunk))):
                    found[key] = json.loads(payload).get(field)
        return found

    def iter_entity(self, entity: str, *, updated_after: datetime | None = None) -> Iterator[Snapshot]:
        query = sa.select(snapshots).where(snapshots.c.entity == entity)
        if updated_after is not None:
            query = query.where(snapshots.c.updated_at > updated_after)
        with self.engine.connect() as conn:
            for row in conn.execute(query.order_by(snapshots.c.key)):
                yield Snapshot(
                    entity=row.entity, key=row.key, payload=json.loads(row.payload),
                    previous=json.loads(row.previous_payload) if row.previous_payload else None,
                    first_seen_at=_aware(row.first_seen_at), updated_at=_aware(row.updated_at),
                )


@dataclass(frozen=True)
class AlertEvent:
    seq: int
    alert_id: str
    rule_id: str
    kind: str
    document: str
    fields: dict[str, Any]
    detected_at: datetime


class AlertStore:
    """Alert events (one per business event and rule, keyed by a deterministic alert id) and the
    per-item stock episode state that decides when a stock alert may repeat."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, rule_id: str, kind: str, candidates: Sequence[tuple[str, str, Mapping[str, Any]]]) -> int:
        """Record (alert_id, document, fields) candidates; an alert id seen before is ignored.
        Returns how many were new."""
        if not candidates:
            return 0
        with self.engine.begin() as conn:
            return sum(self._insert_alert(conn, rule_id, kind, alert_id, document, fields)
                       for alert_id, document, fields in candidates)

    def unplanned(self, limit: int = 1000) -> list[AlertEvent]:
        query = (sa.select(alert_events).where(alert_events.c.planned.is_(False))
                 .order_by(alert_events.c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [
                AlertEvent(r.seq, r.alert_id, r.rule_id, r.kind, r.document, json.loads(r.fields),
                           _aware(r.detected_at))
                for r in conn.execute(query)
            ]

    def mark_planned(self, conn: Connection, alert_id: str) -> None:
        conn.execute(sa.update(alert_events).where(alert_events.c.alert_id == alert_id).values(planned=True))

    def stock_sides(self, rule_id: str) -> dict[tuple[str, str], bool]:
        """(item, warehouse) -> below, as last recorded: only changes need a transaction."""
        query = sa.select(stock_state.c.item_code, stock_state.c.warehouse, stock_state.c.below).where(
            stock_state.c.rule_id == rule_id)
        with self.engine.connect() as conn:
            return {(r.item_code, r.warehouse): bool(r.below) for r in conn.execute(query)}

    def record_stock_level(self, rule_id: str, kind: str, item_code: str, warehouse: str, below: bool,
                           alert: Callable[[int], tuple[str, str, Mapping[str, Any]]]) -> bool:
        """Record the item's side of its reorder point; when it has just fallen below (first time, or
        again after a recovery) record the alert `alert(episode)` in the same transaction, so a crash
        can neither lose the episode's alert nor count the episode twice. True when an alert was new."""
        key = (stock_state.c.rule_id == rule_id) & (stock_state.c.item_code == item_code) & (
            stock_state.c.warehouse == warehouse)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(stock_state).where(key).with_for_update()).first()
            if row is not None and row.below == below:
                return False
            episode = (row.episode if row else 0) + (1 if below else 0)
            if row is None:
                conn.execute(_insert(conn, stock_state).values(
                    rule_id=rule_id, item_code=item_code, warehouse=warehouse, below=below, episode=episode))
            else:
                conn.execute(sa.update(stock_state).where(key).values(below=below, episode=episode))
            if not below:
                return False
            alert_id, document, fields = alert(episode)
            return bool(self._insert_alert(conn, rule_id, kind, alert_id, document, fields))

    @staticmethod
    def _insert_alert(conn: Connection, rule_id: str, kind: str, alert_id: str, document: str,
                      fields: Mapping[str, Any]) -> int:
        stmt = _insert(conn, alert_events).values(
            alert_id=alert_id, rule_id=rule_id, kind=kind, document=document,
            fields=json.dumps(fields, default=str), detected_at=utcnow(), planned=False,
        ).on_conflict_do_nothing(index_elements=[alert_events.c.alert_id])
        return conn.execute(stmt).rowcount or 0


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
    status: str
    sid: str | None
    error_code: int | None
    created_at: datetime
    attempt_started_at: datetime | None
    escalated: bool
    run_id: str | None


_TIMESTAMPS = ("not_before", "created_at", "attempt_started_at")


def _notification(row: Any) -> Notification:
    values = {f.name: getattr(row, f.name) for f in fields(Notification)}
    values.update({name: _aware(values[name]) for name in _TIMESTAMPS}, escalated=bool(row.escalated))
    return Notification(**values)


@dataclass(frozen=True)
class DeliveryEvent:
    seq: int
    sid: str
    status: str
    channel: str
    error_code: int | None
    source: str
    received_at: datetime


class Ledger:
    """The notification ledger: a notification is recorded before it is sent and completed with the
    Twilio SID after, and every status a message or call went through is kept once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- planning -------------------------------------------------------------------------------
    def plan(self, planned: Sequence[PlannedNotification], *, alert_store: AlertStore | None = None,
             alert_id: str | None = None) -> int:
        """Insert planned notifications (existing ids are left alone) and, in the same transaction,
        mark their alert as planned, so a crash never plans an alert half or twice."""
        now = utcnow()
        new = 0
        with self.engine.begin() as conn:
            for p in planned:
                stmt = _insert(conn, notifications).values(
                    **asdict(p), status=PLANNED, created_at=now, escalated=False,
                ).on_conflict_do_nothing(index_elements=[notifications.c.notification_id])
                new += conn.execute(stmt).rowcount or 0
            if alert_store is not None and alert_id is not None:
                alert_store.mark_planned(conn, alert_id)
        return new

    def due(self, now: datetime, *, after_seq: int = 0, released_after: datetime | None = None,
            limit: int = 500) -> list[Notification]:
        """Planned notifications whose hold has passed: new ones (seq > after_seq) and held ones
        released since `released_after`."""
        c = notifications.c
        fresh = c.seq > after_seq
        condition = fresh if released_after is None else sa.or_(fresh, c.not_before > released_after)
        query = (sa.select(notifications).where(c.status == PLANNED, c.not_before <= now, condition)
                 .order_by(c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [_notification(r) for r in conn.execute(query)]

    def get(self, notification_id: str) -> Notification | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(notifications).where(notifications.c.notification_id == notification_id)).first()
        return _notification(row) if row else None

    def by_sid(self, sid: str) -> Notification | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(notifications).where(notifications.c.sid == sid)).first()
        return _notification(row) if row else None

    # -- sending --------------------------------------------------------------------------------
    def mark_sending(self, notification_id: str, run_id: str | None) -> None:
        """Recorded before the Twilio call: after a crash, this says 'ask Twilio before resending'."""
        self._update(notification_id, status=SENDING, attempt_started_at=utcnow(), run_id=run_id)

    def mark_sent(self, notification_id: str, sid: str, status: str) -> None:
        """Record the SID; statuses that arrived by callback before it (Twilio is fast) apply now."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(notifications).where(notifications.c.notification_id == notification_id)
                         .values(sid=sid, status=status, sent_at=utcnow()))
            early = conn.execute(sa.select(delivery_events).where(delivery_events.c.sid == sid)
                                 .order_by(delivery_events.c.seq)).all()
            for event in early:
                self._advance(conn, _delivery(event))

    def mark_failed(self, notification_id: str, status: str, error_code: int | None, message: str) -> None:
        self._update(notification_id, status=status, error_code=error_code, error_message=message,
                     final_at=utcnow())

    def mark_escalated(self, notification_id: str) -> None:
        self._update(notification_id, escalated=True)

    def _update(self, notification_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(notifications)
                         .where(notifications.c.notification_id == notification_id).values(**values))

    # -- delivery status ------------------------------------------------------------------------
    def apply_status(self, event: StatusEvent) -> bool:
        """Record a status from a callback or a poll. Replays are no-ops; a status never moves a
        notification backwards. True when anything changed."""
        with self.engine.begin() as conn:
            inserted = conn.execute(_insert(conn, delivery_events).values(
                sid=event.sid, status=event.status, channel=event.channel, error_code=event.error_code,
                source=event.source, received_at=event.received_at, reported=False, audited=False,
            ).on_conflict_do_nothing(index_elements=[delivery_events.c.sid, delivery_events.c.status])
            ).rowcount or 0
            advanced = self._advance(conn, event)
            return bool(inserted) or advanced

    @staticmethod
    def _advance(conn: Connection, event: StatusEvent | DeliveryEvent) -> bool:
        row = conn.execute(sa.select(notifications.c.status, notifications.c.channel)
                           .where(notifications.c.sid == event.sid)).first()
        if row is None or not should_advance(row.channel, row.status, event.status):
            return False
        values: dict[str, Any] = {"status": event.status}
        if event.error_code is not None:
            values["error_code"] = event.error_code
        if is_final(row.channel, event.status):
            values["final_at"] = event.received_at
        conn.execute(sa.update(notifications).where(notifications.c.sid == event.sid).values(**values))
        return True

    def alert_fields(self, alert_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.scalar(sa.select(alert_events.c.fields).where(alert_events.c.alert_id == alert_id))
        return json.loads(text) if text else {}

    def open_sids(self, limit: int = 1000) -> list[tuple[str, str]]:
        """(sid, channel) of sent notifications whose status is not final yet, for polling Twilio."""
        c = notifications.c
        query = sa.select(c.sid, c.channel, c.status).where(c.sid.is_not(None), c.final_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.seq).limit(limit)).all()
        return [(r.sid, r.channel) for r in rows if not is_final(r.channel, r.status)]

    def history(self, sid: str) -> list[DeliveryEvent]:
        query = sa.select(delivery_events).where(delivery_events.c.sid == sid).order_by(delivery_events.c.seq)
        with self.engine.connect() as conn:
            return [_delivery(r) for r in conn.execute(query)]

    def unreported(self, limit: int = 1000) -> list[DeliveryEvent]:
        return self._events(delivery_events.c.reported.is_(False), limit)

    def unaudited(self, limit: int = 1000) -> list[DeliveryEvent]:
        c = delivery_events.c
        return self._events(sa.and_(c.audited.is_(False), c.status.in_(AUDITED_STATUSES)), limit)

    def _events(self, condition: Any, limit: int) -> list[DeliveryEvent]:
        query = sa.select(delivery_events).where(condition).order_by(delivery_events.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [_delivery(r) for r in conn.execute(query)]

    def mark_reported(self, seqs: Iterable[int]) -> None:
        self._flag_events(seqs, reported=True)

    def mark_audited(self, seqs: Iterable[int]) -> None:
        self._flag_events(seqs, audited=True)

    def _flag_events(self, seqs: Iterable[int], **values: bool) -> None:
        ids = list(seqs)
        if not ids:
            return
        with self.engine.begin() as conn:
            for chunk in _chunks(ids, 500):
                conn.execute(sa.update(delivery_events).where(delivery_events.c.seq.in_(chunk)).values(**values))

    def needs_escalation(self, limit: int = 200) -> list[Notification]:
        """Notifications that reached a final status and whose escalation was not decided yet
        (`mark_escalated` records the decision, whether or not anything was escalated)."""
        c = notifications.c
        query = (sa.select(notifications).where(c.final_at.is_not(None), c.escalated.is_(False))
                 .order_by(c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [_notification(r) for r in conn.execute(query)]

    def pending_work(self) -> dict[str, int]:
        """Counts the delivery sensor needs to decide whether a delivery run is worth launching."""
        with self.engine.connect() as conn:
            open_count = conn.scalar(sa.select(sa.func.count()).where(
                notifications.c.sid.is_not(None), notifications.c.final_at.is_(None))) or 0
            unreported = conn.scalar(sa.select(sa.func.count()).where(
                delivery_events.c.reported.is_(False))) or 0
            unaudited = conn.scalar(sa.select(sa.func.count()).where(
                delivery_events.c.audited.is_(False), delivery_events.c.status.in_(AUDITED_STATUSES))) or 0
            max_event = conn.scalar(sa.select(sa.func.max(delivery_events.c.seq))) or 0
        return {"open": open_count, "unreported": unreported, "unaudited": unaudited,
                "max_event_seq": max_event}


def _delivery(row: Any) -> DeliveryEvent:
    return DeliveryEvent(row.seq, row.sid, row.status, row.channel, row.error_code, row.source,
                         _aware(row.received_at))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def ledger_from_settings() -> Ledger:
    """The ledger on B1TWILIO_DATABASE_URL, for the status-callback receiver."""
    return Ledger(create_store_engine())
