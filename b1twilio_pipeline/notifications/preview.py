"""Dry run: what a rules file would send on the current B1 data, to whom (masked), on which channel and when
(quiet hours applied), sending nothing and writing nothing. Run it before deploying a changed rules file.

It is the pipeline itself on a scratch store: the B1 data (read through the real client, or with `offline`
taken from the snapshot store) goes into a temporary SQLite store, the same evaluators record alerts there
and the same planning turns them into notifications. Nothing reaches Twilio, the store or Dagster, and the
scratch store is deleted afterwards. A document alerted already in production is listed again: the preview
says what the rules produce on today's data, not what is new since the last run.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from b1twilio_pipeline.alerts.evaluators import EVALUATORS, AlertConfig
from b1twilio_pipeline.alerts.rules import RulesConfig, load_rules
from b1twilio_pipeline.alerts.rules.kinds import reads_by_entity
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.definitions import read_specs
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.core.database import dispose_engine, engine_for
from b1twilio_pipeline.notifications.ledger import PlannedNotification
from b1twilio_pipeline.notifications.plan import plan_for

# What a full read of an entity asks B1 for besides what changed since `since`: the states that alert
# without a change (an invoice becomes overdue, stock is below its reorder point).
STATE_FILTERS = {"Invoices": "DocumentStatus eq 'bost_Open'", "Items": "InventoryItem eq 'tYES'"}


@contextmanager
def scratch_engine() -> Iterator[Engine]:
    """A migrated SQLite store in a temporary folder, gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="b1twilio-preview-") as folder:
        url = f"sqlite:///{Path(folder) / 'preview.sqlite'}"
        try:
            yield engine_for(url)
        finally:
            dispose_engine(url)


def read_b1(session: SapB1Session, into: SnapshotStore, since: date, b1_timezone: str) -> int:
    """Every entity the rule kinds read: what changed since `since`, and the open invoices and items.
    Returns how many records were read."""
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.now(UTC) + timedelta(minutes=1)
    read = 0
    for spec in read_specs(reads_by_entity()).values():
        filters = [spec.window_filter(start, end, b1_timezone)] + (
            [STATE_FILTERS[spec.entity]] if spec.entity in STATE_FILTERS else [])
        for query in filters:
            counts = into.upsert(spec.entity, spec.key, session.get_all(
                spec.entity, filter=query, select=spec.select, orderby=spec.key))
            read += counts.new + counts.updated + counts.unchanged
    return read


def would_send(rules: RulesConfig, snapshots: SnapshotStore, scratch: Engine,
               now: datetime | None = None) -> list[PlannedNotification]:
    """The notifications the enabled rules plan on `snapshots`, first channel and first person of each
    chain as the pipeline would; alerts are recorded in `scratch` only."""
    alerts = AlertStore(scratch)
    for rule in rules.enabled_rules():
        EVALUATORS[rule.kind](rule, snapshots, alerts, AlertConfig())
    moment = now or datetime.now(UTC)
    planned: list[PlannedNotification] = []
    for event in alerts.unplanned():
        rule = rules.find_rule(event.rule_id)
        if rule is not None:
            # A digest rule's alert goes out with the digest: listed here one by one, at the digest's time.
            at = rule.digest.until(moment, rule.tz) if rule.digest is not None else moment
            planned += plan_for(rule, rules.initial_recipients(rule), event.alert_id, event.document,
                                event.fields, rule.first_channel, at)
    return sorted(planned, key=lambda n: (n.not_before, n.rule_id, n.document, n.recipient_name))


def preview_rows(planned: list[PlannedNotification], now: datetime, timezone: str) -> list[dict[str, str]]:
    """One row per notification for a table: when (now, or in the rules' time zone the time quiet hours or
    a digest hold it until), rule, document, to, channel, message."""
    zone = ZoneInfo(timezone)
    return [{
        "when": "now" if n.not_before <= now else f"{n.not_before.astimezone(zone):%Y-%m-%d %H:%M}",
        "rule": n.rule_id, "document": n.document, "to": f"{n.recipient_name} {n.recipient_masked}",
        "channel": n.channel, "message": n.body,
    } for n in planned]


def default_since() -> date:
    """Documents count as new for AlertConfig.new_document_max_age_days: that far back is enough."""
    return datetime.now(UTC).date() - timedelta(days=AlertConfig().new_document_max_age_days)


def preview(rules: RulesConfig, *, since: date, offline: bool, sap: SapB1Resource,
            database_url: str | None = None) -> tuple[list[dict[str, str]], int]:
    """(table rows, records read from B1) for `rules`: B1 read through `sap`, or with `offline` the
    snapshot store at `database_url` (read only)."""
    now = datetime.now(UTC)
    with scratch_engine() as scratch:
        if offline:
            snapshots, read = SnapshotStore(engine_for(database_url)), 0
        else:
            session = sap.session()
            try:
                snapshots = SnapshotStore(scratch)
                read = read_b1(session, snapshots, since, sap.resolved_timezone())
            finally:
                session.logout()
        return preview_rows(would_send(rules, snapshots, scratch, now), now, rules.timezone), read


def preview_command(args: argparse.Namespace) -> int:
    """`b1twilio preview [--rules FILE] [--since DATE] [--offline]`."""
    rules = load_rules(args.rules)
    since = args.since or default_since()
    rows, read = preview(rules, since=since, offline=args.offline, sap=SapB1Resource())
    source = "the snapshot store" if args.offline else f"{read} records read from B1"
    print(f"{rules.source}: {len(rows)} notification(s) would be sent ({source}, changes since {since}); "
          "nothing was sent or written")
    for row in rows:
        print(f"  {row['when']:<16} {row['channel']:<5} {row['to']:<24} {row['rule']:<24} {row['document']}: "
              f"{row['message']}")
    return 0
