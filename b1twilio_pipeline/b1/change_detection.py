"""Cheap change detection: one small question to B1 per watched entity, so an idle pipeline launches no
runs and a change is read within seconds.

For entities with change stamps the question is "which records were stamped since my cursor (less a
minute of overlap)?", asking only for the key and the stamp, at most `PROBE_TOP` records. The answer is
compared with the snapshot store: a record whose stamp differs from the stored one (or that is not stored)
is a pending change, and the window holding its stamp needs a snapshot run. Comparing with the store
rather than trusting a cursor makes a failed run self-healing: its changes are still pending at the next
probe. IncomingPayments carry no stamps: for them the question is "which DocEntry is above the highest I
have?", and a new payment is read by the open window (the payments asset reads by DocDate with a day of
overlap).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.filters import changed_since_filter
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.b1.snapshots import EntitySpec

PROBE_TOP = 200
OVERLAP = timedelta(minutes=1)
STAMPS = ("UpdateDate", "UpdateTime")

# A window's partition key for a moment, or None when no window holds it (before the first one).
WindowOf = Callable[[datetime], str | None]


@dataclass(frozen=True)
class Change:
    entity: str
    key: str
    stamp: str
    window: str


@dataclass(frozen=True)
class Probe:
    """What one question to B1 found, and where the next question starts."""

    changes: list[Change]
    cursor: str


def _stamp_of(row: dict, zone: ZoneInfo) -> datetime | None:
    try:
        day = str(row.get("UpdateDate") or "")[:10]
        clock = str(row.get("UpdateTime") or "00:00:00")
        return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=zone)
    except ValueError:
        return None  # malformed: the snapshot run quarantines it


def probe_stamped(session: SapB1Session, store: SnapshotStore, spec: EntitySpec, since: datetime,
                  window_of: WindowOf) -> Probe:
    """Records of `spec.entity` stamped since `since` whose stored version differs. The next cursor is the
    oldest pending stamp (so an unfinished read is asked again), else the newest stamp seen."""
    zone = ZoneInfo(session.timezone)
    rows = list(session.get_all(
        spec.entity, filter=changed_since_filter(since - OVERLAP, b1_timezone=session.timezone),
        select=(spec.key, *STAMPS), orderby=",".join(STAMPS), top=PROBE_TOP))
    stamped = [(str(row[spec.key]), row, moment) for row in rows
               if row.get(spec.key) is not None and (moment := _stamp_of(row, zone)) is not None]
    stored = store.stamps(spec.entity, (key for key, _, _ in stamped))
    changes: list[Change] = []
    pending_at: list[datetime] = []
    for key, row, moment in stamped:
        if stored.get(key) == (str(row["UpdateDate"])[:10], str(row["UpdateTime"])):
            continue
        window = window_of(moment)
        if window is not None:
            changes.append(Change(spec.entity, key, moment.isoformat(), window))
            pending_at.append(moment)
    if pending_at:
        cursor = min(pending_at)
    elif stamped:
        newest = max(moment for _, _, moment in stamped)
        # A full answer whose records are all stored: move past its minute, or the same records would
        # fill every later answer too (their window run read the whole minute anyway).
        cursor = newest + timedelta(minutes=1) if len(rows) >= PROBE_TOP else newest
    else:
        cursor = since
    return Probe(changes, max(cursor, since).isoformat())


def probe_new(session: SapB1Session, store: SnapshotStore, spec: EntitySpec, after: int | None,
              now: datetime, window_of: WindowOf) -> Probe:
    """Records of an entity without change stamps whose key is above `after` and not stored yet; they are
    read by the window open now. The next cursor is the highest key once all of them are stored."""
    if after is None:
        after = max((int(key) for key in store.keys(spec.entity) if key.isdigit()), default=0)
    rows = list(session.get_all(spec.entity, filter=f"{spec.key} gt {after}", select=(spec.key,),
                                orderby=spec.key, top=PROBE_TOP))
    keys = [str(row[spec.key]) for row in rows if isinstance(row.get(spec.key), int)]
    stored = store.stamps(spec.entity, keys)
    window = window_of(now)
    changes = [Change(spec.entity, key, "new", window) for key in keys if key not in stored and window]
    cursor = after if changes else max((int(key) for key in keys), default=after)
    return Probe(changes, str(cursor))
