"""B1's webhook events, kept once per event id until a run reads the records they name.

B1's Webhook Messenger posts batches: JSON arrays of `{"id", "type": "sap.b1.<Entity>.<Action>.v1",
"subject", "time", "data": {"DocEntry": n}}` (`{"ItemCode": "..."}` for items). `parse_batch` keeps what the
pipeline can use: events of the entity sets it reads (`entities.ENTITIES`), created or updated, naming one
record by its key. Everything in a batch comes from outside and is untrusted: an event whose id or key has
the wrong type or length is skipped and counted as malformed, never stored; an unknown type or entity is
skipped as ignored. Deletions are ignored too: there is nothing left to read by key, and the state
refresh closes documents B1 no longer has.

`WebhookInbox.add` stores each event id once, because B1 retries and replays (the same id again changes
nothing); `b1_webhook_sensor` reads the waiting events with `pending`, one indexed query per tick, and
marks them handled with the key of the run that reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b1twilio_pipeline.b1.entities import ENTITIES
from b1twilio_pipeline.core.schema import b1_events
from b1twilio_pipeline.core.sql import chunks, insert, utcnow

_TYPE = re.compile(r"^sap\.b1\.(?P<entity>[A-Za-z][A-Za-z0-9_]{0,39})\.(?P<action>[A-Za-z]{1,12})\.v1$")
READ_ACTIONS = frozenset({"Created", "Updated"})
KEY_FIELDS = {spec.entity: spec.key for spec in ENTITIES}
MAX_ID = 100  # b1tw_b1_events.event_id
MAX_ITEM_CODE = 50  # OITM.ItemCode
MAX_DOC_ENTRY = 2**31 - 1  # B1 keys documents by a 32-bit integer
# Handled events are kept this long: a replay within it is recognised; one after it is read once more,
# which costs a request and sends nothing (the snapshot store finds the record unchanged).
KEEP_HANDLED = timedelta(days=7)


class MalformedBatch(ValueError):
    """The body is not a batch of events at all (answered with 400; B1 would only resend it)."""


@dataclass(frozen=True)
class B1Event:
    """One usable event: which record of which entity set B1 created or updated."""

    event_id: str
    entity: str
    action: str
    key: str  # the DocEntry (as text) or the ItemCode: how the snapshot store keys records


@dataclass
class Batch:
    """What a batch held: the usable events, and what was skipped (counted for B1's answer and the log)."""

    events: list[B1Event] = field(default_factory=list)
    ignored: int = 0  # unknown types or entity sets, deletions
    malformed: list[str] = field(default_factory=list)  # why each skipped event was unusable


def _text(value: object, limit: int) -> str | None:
    """A printable string of 1 to `limit` characters, else None."""
    if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
        return value
    return None


def _key(entity: str, data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    value = data.get(KEY_FIELDS[entity])
    if KEY_FIELDS[entity] == "DocEntry":
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DOC_ENTRY:
            return str(value)
        return None
    code = _text(value, MAX_ITEM_CODE)
    return code if code is not None and code == code.strip() else None


def parse_batch(payload: object) -> Batch:
    """The usable events of a decoded body, each id once, with counts of what was skipped and why."""
    if not isinstance(payload, list):
        raise MalformedBatch("the body must be a JSON array of events")
    batch, seen = Batch(), set()
    for position, item in enumerate(payload):
        if not isinstance(item, dict):
            batch.malformed.append(f"event {position} is not an object")
            continue
        event_id, kind = _text(item.get("id"), MAX_ID), item.get("type")
        if event_id is None or not isinstance(kind, str):
            batch.malformed.append(f"event {position} has no usable id or type")
            continue
        match = _TYPE.match(kind)
        if match is None or match["entity"] not in KEY_FIELDS or match["action"] not in READ_ACTIONS:
            batch.ignored += 1
            continue
        key = _key(match["entity"], item.get("data"))
        if key is None:
            batch.malformed.append(f"event {event_id!r}: data.{KEY_FIELDS[match['entity']]} is not a key")
        elif event_id not in seen:
            seen.add(event_id)
            batch.events.append(B1Event(event_id, match["entity"], match["action"], key))
    return batch


class WebhookInbox:
    """The events B1 sent, each id once, waiting (handled_at NULL) until a run is asked to read them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, events: Sequence[B1Event]) -> int:
        """Store the events whose id is new; returns how many. Drops handled events past KEEP_HANDLED."""
        now, new = utcnow(), 0
        with self.engine.begin() as conn:
            for chunk in chunks(events, 500):
                rows = [{"event_id": e.event_id, "entity": e.entity, "action": e.action, "record_key": e.key,
                         "received_at": now} for e in chunk]
                stmt = insert(conn, b1_events).values(rows)
                new += len(conn.execute(stmt.on_conflict_do_nothing(index_elements=[b1_events.c.event_id])
                                        .returning(b1_events.c.event_id)).all())
            conn.execute(sa.delete(b1_events).where(b1_events.c.handled_at < now - KEEP_HANDLED))
        return new

    def pending(self, limit: int) -> list[B1Event]:
        """At most `limit` events no run was asked for yet, oldest first."""
        c = b1_events.c
        query = (sa.select(c.event_id, c.entity, c.action, c.record_key).where(c.handled_at.is_(None))
                 .order_by(c.received_at, c.event_id).limit(limit))
        with self.engine.connect() as conn:
            return [B1Event(*row) for row in conn.execute(query)]

    def mark_handled(self, event_ids: Iterable[str], run_key: str) -> None:
        """Record that `run_key` reads these events' records (or, for a reason in its place, that none will)."""
        wanted, now = sorted(set(event_ids)), utcnow()
        with self.engine.begin() as conn:
            for chunk in chunks(wanted, 500):
                conn.execute(sa.update(b1_events).where(b1_events.c.event_id.in_(chunk),
                                                        b1_events.c.handled_at.is_(None))
                             .values(handled_at=now, run_key=run_key[:80]))
