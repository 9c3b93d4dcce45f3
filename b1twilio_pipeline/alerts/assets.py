"""Alert candidates per rule kind, and the notification plan derived from them.

Each alert asset evaluates the enabled rules of its kind over the snapshot store and records alert events
under deterministic ids (see `alert_rules`), so evaluating twice records nothing new. `notification_plan`
turns each new alert into one ledger row per recipient, with the quiet-hours hold already computed; the
notification sensor launches a run for each row when it is due.
"""

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from b1twilio_pipeline.alerts import evaluation as alert_rules
from b1twilio_pipeline.alerts.evaluation import Candidate
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import Rule
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.b1.entities import ENTITY_BY_NAME, snapshot_key
from b1twilio_pipeline.b1.snapshot_store import Snapshot, SnapshotStore
from b1twilio_pipeline.b1.state import OPEN_INVOICES_KEY, STOCK_LEVELS_KEY
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.sql import utcnow

ALERTS_GROUP = "alerts"


class AlertConfig(dg.Config):
    """A document counts as new for this many days after its creation date (the first sync must not
    announce years of history, a backfill of a missed window still alerts)."""

    new_document_max_age_days: int = 3


def _since(rule: Rule, config: AlertConfig) -> date:
    return datetime.now(rule.tz).date() - timedelta(days=config.new_document_max_age_days)


def _recent(store: SnapshotStore, entity: str, config: AlertConfig) -> list[Snapshot]:
    """Snapshots stored lately: new documents were stored lately, however old their window."""
    return list(store.iter_entity(entity, updated_after=utcnow() - timedelta(
        days=config.new_document_max_age_days + 1)))


Evaluator = Callable[[Rule, SnapshotStore, AlertStore, AlertConfig], int]


def _record(alerts: AlertStore, rule: Rule, candidates: Sequence[Candidate]) -> int:
    return alerts.record(rule.id, rule.kind, [(c.alert_id, c.document, c.fields) for c in candidates])


def _purchase_invoices(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    docs = _recent(store, "PurchaseInvoices", config)
    return _record(alerts, rule, alert_rules.new_document_candidates(
        rule, docs, label="PurchaseInvoices", since=_since(rule, config)))


def _sales_invoices(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    docs = _recent(store, "Invoices", config)
    return _record(alerts, rule, alert_rules.new_document_candidates(
        rule, docs, label="Invoices", since=_since(rule, config)))


def _overdue(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    today = datetime.now(rule.tz).date()
    invoices = store.iter_entity("Invoices", open_only=True)
    return _record(alerts, rule, alert_rules.overdue_candidates(rule, invoices, today=today))


def _payments(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    payments = _recent(store, "IncomingPayments", config)
    wanted = {str(line.get("DocEntry")) for p in payments for line in p.payload.get("PaymentInvoices") or []}
    numbers = store.field_by_key("Invoices", wanted, "DocNum")
    return _record(alerts, rule, alert_rules.payment_candidates(
        rule, payments, since=_since(rule, config), invoice_numbers=numbers))


def _purchase_orders(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
    orders = _recent(store, "PurchaseOrders", config)
    return _record(alerts, rule, alert_rules.purchase_order_candidates(rule, orders, since=_since(rule, config)))


def _stock(rule: Rule, store: SnapshotStore, alerts: AlertStore, config: AlertConfig) -> int:
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


ALERT_KINDS: dict[str, tuple[str, tuple[dg.AssetKey, ...], Evaluator]] = {
    "purchase_invoice_received": ("purchase_invoice_alerts",
                                  (snapshot_key(ENTITY_BY_NAME["purchase_invoices"]),), _purchase_invoices),
    "sales_invoice_created": ("sales_invoice_alerts",
                              (snapshot_key(ENTITY_BY_NAME["sales_invoices"]),), _sales_invoices),
    "payment_overdue": ("payment_overdue_alerts",
                        (snapshot_key(ENTITY_BY_NAME["sales_invoices"]), OPEN_INVOICES_KEY), _overdue),
    "payment_received": ("payment_received_alerts",
                         (snapshot_key(ENTITY_BY_NAME["incoming_payments"]),
                          snapshot_key(ENTITY_BY_NAME["sales_invoices"])), _payments),
    "purchase_order_changed": ("purchase_order_alerts",
                               (snapshot_key(ENTITY_BY_NAME["purchase_orders"]),), _purchase_orders),
    "stock_below_reorder": ("stock_alerts",
                            (snapshot_key(ENTITY_BY_NAME["item_stock"]), STOCK_LEVELS_KEY), _stock),
}


# The entities whose changes a kind alerts on (watched by the change sensor while such a rule is enabled).
# Overdue reminders follow the state refresh and the calendar instead: nothing to watch.
WATCHED_BY_KIND: dict[str, tuple[str, ...]] = {
    "purchase_invoice_received": ("purchase_invoices",),
    "sales_invoice_created": ("sales_invoices",),
    "payment_overdue": (),
    "payment_received": ("incoming_payments",),
    "purchase_order_changed": ("purchase_orders",),
    "stock_below_reorder": ("item_stock",),
}
# Kinds about a state that can become true with the calendar alone.
CALENDAR_KINDS = frozenset({"payment_overdue"})


def build_alert_asset(kind: str, rules_markdown: str) -> dg.AssetsDefinition:
    name, deps, evaluate = ALERT_KINDS[kind]

    @dg.asset(
        key=dg.AssetKey(["alerts", name]),
        deps=list(deps),
        group_name=ALERTS_GROUP,
        kinds={"python", "sql"},
        description=f"Alert candidates of the enabled `{kind}` rules, recorded once per event.",
        metadata={"rules": dg.MetadataValue.md(rules_markdown)},
    )
    def _alerts(context: dg.AssetExecutionContext, config: AlertConfig, rules: RulesResource,
                database: DatabaseResource) -> dg.MaterializeResult:
        loaded = rules.load()
        per_rule = {rule.id: evaluate(rule, SnapshotStore(database.engine), AlertStore(database.engine), config)
                    for rule in loaded.enabled_rules(kind)}
        total = sum(per_rule.values())
        context.log.info(f"{kind}: {total} new alert(s) {per_rule}")
        return dg.MaterializeResult(metadata={
            "new_alerts": total, "rules_evaluated": len(per_rule),
            "new_alerts_per_rule": dg.MetadataValue.json(per_rule),
        })

    return _alerts
