"""One evaluator per rule kind: it reads the snapshots its kind needs, finds the alert candidates (see
`evaluation` for the rules themselves) and records them as alert events under deterministic ids, so
evaluating twice records nothing new. Register a new kind's evaluator with `@evaluates(TheKind)`."""

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from b1twilio_pipeline.alerts import evaluation as alert_rules
from b1twilio_pipeline.alerts.evaluation import Candidate
from b1twilio_pipeline.alerts.rules import Rule
from b1twilio_pipeline.alerts.rules.kinds import (
    PaymentOverdue,
    PaymentReceived,
    PurchaseInvoiceReceived,
    PurchaseOrderChanged,
    SalesInvoiceCreated,
    StockBelowReorder,
)
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.b1.snapshot_store import Snapshot, SnapshotStore
from b1twilio_pipeline.core.sql import utcnow


class AlertConfig(dg.Config):
    """A document counts as new for this many days after its creation date (the first sync must not
    announce years of history, a backfill of a missed window still alerts)."""

    new_document_max_age_days: int = 3


Evaluator = Callable[[Any, SnapshotStore, AlertStore, AlertConfig], int]
EVALUATORS: dict[str, Evaluator] = {}


def evaluates(kind: type[Rule]) -> Callable[[Evaluator], Evaluator]:
    def register(evaluator: Evaluator) -> Evaluator:
        EVALUATORS[kind.model_fields["kind"].default] = evaluator
        return evaluator

    return register


def _since(rule: Rule, config: AlertConfig) -> date:
    return datetime.now(rule.tz).date() - timedelta(days=config.new_document_max_age_days)


def _recent(store: SnapshotStore, entity: str, config: AlertConfig) -> list[Snapshot]:
    """Snapshots stored lately: new documents were stored lately, however old their window."""
    return list(store.iter_entity(entity, updated_after=utcnow() - timedelta(
        days=config.new_document_max_age_days + 1)))


def _record(alerts: AlertStore, rule: Rule, candidates: Sequence[Candidate]) -> int:
    return alerts.record(rule.id, rule.kind, [(c.alert_id, c.document, c.fields) for c in candidates])


@evaluates(PurchaseInvoiceReceived)
def purchase_invoices(rule: PurchaseInvoiceReceived, store: SnapshotStore, alerts: AlertStore,
                      config: AlertConfig) -> int:
    docs = _recent(store, "PurchaseInvoices", config)
    return _record(alerts, rule, alert_rules.new_document_candidates(
        rule, docs, label="PurchaseInvoices", since=_since(rule, config)))


@evaluates(SalesInvoiceCreated)
def sales_invoices(rule: SalesInvoiceCreated, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    docs = _recent(store, "Invoices", config)
    return _record(alerts, rule, alert_rules.new_document_candidates(
        rule, docs, label="Invoices", since=_since(rule, config)))


@evaluates(PaymentOverdue)
def overdue(rule: PaymentOverdue, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    today = datetime.now(rule.tz).date()
    invoices = store.iter_entity("Invoices", open_only=True)
    taken_on = alerts.acknowledged_documents(rule.id) if rule.renotify_every_days else set()
    return _record(alerts, rule, [candidate for candidate in alert_rules.overdue_candidates(rule, invoices, today=today)
                                  if candidate.document not in taken_on])


@evaluates(PaymentReceived)
def payments(rule: PaymentReceived, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    received = _recent(store, "IncomingPayments", config)
    wanted = {str(line.get("DocEntry")) for p in received for line in p.payload.get("PaymentInvoices") or []}
    numbers = store.field_by_key("Invoices", wanted, "DocNum")
    return _record(alerts, rule, alert_rules.payment_candidates(
        rule, received, since=_since(rule, config), invoice_numbers=numbers))


@evaluates(PurchaseOrderChanged)
def purchase_orders(rule: PurchaseOrderChanged, store: SnapshotStore, alerts: AlertStore,
                    config: AlertConfig) -> int:
    orders = _recent(store, "PurchaseOrders", config)
    return _record(alerts, rule, alert_rules.purchase_order_candidates(rule, orders, since=_since(rule, config)))


@evaluates(StockBelowReorder)
def stock(rule: StockBelowReorder, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    known = alerts.stock_sides(rule.id)
    new = 0
    for level in alert_rules.stock_levels(rule, store.iter_entity("Items")):
        if known.get((level.item_code, level.warehouse)) == level.below:
            continue

        def alert(episode: int, level: alert_rules.StockLevel = level) -> tuple[str, str, dict[str, Any]]:
            return (f"{rule.id}:{level.item_code}:{level.warehouse}:e{episode}",
                    f"Items {level.item_code}/{level.warehouse}", level.fields())

        new += alerts.record_stock_level(rule.id, rule.kind, level.item_code, level.warehouse, level.below, alert)
    return new
