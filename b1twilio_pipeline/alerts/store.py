"""Alert events (one per business event and rule, under a deterministic alert id, so evaluating twice
records nothing new) and the per-item stock episodes that decide when a stock alert may repeat."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core.schema import acknowledgements, alert_events, stock_state
from b1twilio_pipeline.core.sql import aware, insert, utcnow


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
        """Alerts not planned yet, oldest first; those whose planning failed before come last, so one bad
        alert never holds up the others."""
        c = alert_events.c
        query = (sa.select(alert_events).where(c.planned.is_(False))
                 .order_by(c.plan_error.is_not(None), c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [
                AlertEvent(r.seq, r.alert_id, r.rule_id, r.kind, r.document, json.loads(r.fields),
                           aware(r.detected_at))
                for r in conn.execute(query)
            ]

    def acknowledged_documents(self, rule_id: str) -> set[str]:
        """Documents of `rule_id` whose alert somebody acknowledged (by SMS reply or keypress): the rule
        does not remind anyone of them again."""
        query = (sa.select(alert_events.c.document).join(
            acknowledgements, acknowledgements.c.alert_id == alert_events.c.alert_id)
            .where(alert_events.c.rule_id == rule_id))
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def record_plan_error(self, alert_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(alert_events).where(alert_events.c.alert_id == alert_id)
                         .values(plan_error=error))

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
                conn.execute(insert(conn, stock_state).values(
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
        stmt = insert(conn, alert_events).values(
            alert_id=alert_id, rule_id=rule_id, kind=kind, document=document,
            fields=json.dumps(fields, default=str), detected_at=utcnow(), planned=False,
        ).on_conflict_do_nothing(index_elements=[alert_events.c.alert_id])
        return conn.execute(stmt).rowcount or 0


