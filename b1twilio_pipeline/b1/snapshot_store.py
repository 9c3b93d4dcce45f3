"""The snapshot store: the latest version of every B1 record we read, keyed by (entity, DocEntry/ItemCode).

SQLAlchemy Core, so the same code runs on SQLite (quick start) and PostgreSQL (production); every write is
an idempotent upsert, so any number of run workers can share it and any run can be retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b1twilio_pipeline.core.schema import snapshots
from b1twilio_pipeline.core.sql import aware, chunks, insert, utcnow

# Entities whose records are documents with an open/closed state.
DOCUMENT_ENTITIES = frozenset({"Invoices", "PurchaseInvoices", "PurchaseOrders"})


def content_hash(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def is_open_document(doc: Mapping[str, Any]) -> bool:
    """Open and not cancelled: what the overdue rule and the receivables report look at."""
    return (doc.get("DocumentStatus") == "bost_Open" and doc.get("Cancelled") != "tYES"
            and doc.get("CancelStatus") not in ("csYes", "csCancellation"))


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
               chunk_size: int = 1000, on_hashed: Callable[[str, str], None] | None = None) -> UpsertCounts:
        """Insert new records, update changed ones, leave identical ones alone.

        Streams in chunks (an initial sync of 100,000 invoices never sits in memory at once); a record
        repeated by the window overlap or a `$skip` drift is counted once. `on_hashed` hears each record's
        key and content hash in the order they came: a full refresh fingerprints what it read from them
        instead of hashing every record a second time.
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
                n, u = self._upsert_chunk(entity, batch, on_hashed)
                new, updated, batch = new + n, updated + u, {}
        if batch:
            n, u = self._upsert_chunk(entity, batch, on_hashed)
            new, updated = new + n, updated + u
        return UpsertCounts(fetched, new, updated, len(seen) - new - updated)

    def _upsert_chunk(self, entity: str, batch: Mapping[str, Mapping[str, Any]],
                      on_hashed: Callable[[str, str], None] | None) -> tuple[int, int]:
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
                if on_hashed is not None:
                    on_hashed(key, digest)
                if key in existing and existing[key][0] == digest:
                    continue
                previous = existing[key][1] if key in existing else None
                new, updated = (new + 1, updated) if previous is None else (new, updated + 1)
                writes.append({"entity": entity, "key": key, "payload": json.dumps(payload, default=str),
                               "previous_payload": previous, "content_hash": digest,
                               "first_seen_at": now, "updated_at": now,
                               "is_open": is_open_document(payload) if entity in DOCUMENT_ENTITIES else None})
            if writes:
                stmt = insert(conn, snapshots)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[snapshots.c.entity, snapshots.c.key],
                    set_={name: stmt.excluded[name]
                          for name in ("payload", "previous_payload", "content_hash", "updated_at", "is_open")},
                ), writes)
        return new, updated

    def field_by_key(self, entity: str, keys: Iterable[str], field: str) -> dict[str, Any]:
        """One field of the given records, e.g. DocNum of the invoices a payment settles."""
        wanted = sorted(set(keys))
        found: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted, 500):
                for key, payload in conn.execute(sa.select(snapshots.c.key, snapshots.c.payload).where(
                        snapshots.c.entity == entity, snapshots.c.key.in_(chunk))):
                    found[key] = json.loads(payload).get(field)
        return found

    def iter_entity(self, entity: str, *, updated_after: datetime | None = None,
                    open_only: bool = False) -> Iterator[Snapshot]:
        """Stored records of an entity, streamed from the database (a server-side cursor on PostgreSQL),
        optionally only those changed after `updated_after` or only open documents."""
        query = sa.select(snapshots).where(snapshots.c.entity == entity)
        if updated_after is not None:
            query = query.where(snapshots.c.updated_at > updated_after)
        if open_only:
            query = query.where(snapshots.c.is_open.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=500).execute(
                query.order_by(snapshots.c.key))
            for row in rows:
                yield Snapshot(
                    entity=row.entity, key=row.key, payload=json.loads(row.payload),
                    previous=json.loads(row.previous_payload) if row.previous_payload else None,
                    first_seen_at=aware(row.first_seen_at), updated_at=aware(row.updated_at),
                )

    def stamps(self, entity: str, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(UpdateDate as YYYY-MM-DD, UpdateTime) of the stored version of each record: what the change
        probe compares with B1's."""
        found: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(keys)), 500):
                for key, payload in conn.execute(sa.select(snapshots.c.key, snapshots.c.payload).where(
                        snapshots.c.entity == entity, snapshots.c.key.in_(chunk))):
                    doc = json.loads(payload)
                    found[key] = (str(doc.get("UpdateDate") or "")[:10], str(doc.get("UpdateTime") or ""))
        return found

    def keys(self, entity: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(sa.select(snapshots.c.key).where(snapshots.c.entity == entity)))

    def open_keys(self, entity: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(sa.select(snapshots.c.key).where(
                snapshots.c.entity == entity, snapshots.c.is_open.is_(True))))

    def close_vanished(self, entity: str, keys: Iterable[str]) -> int:
        """Documents B1 no longer has (404: deleted, or the company database was restored from a backup):
        kept for the record, but no longer open, so no rule alerts on them again."""
        wanted = list(keys)
        with self.engine.begin() as conn:
            return sum(conn.execute(sa.update(snapshots).where(
                snapshots.c.entity == entity, snapshots.c.key.in_(chunk)).values(
                is_open=False, updated_at=utcnow())).rowcount or 0 for chunk in chunks(wanted, 500))
