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
from sqlalchemy.exc import SQLAlchemyError

from b1twilio_pipeline.alerts import evaluation as alert_rules
from b1twilio_pipeline.alerts.evaluation import Candidate
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import Recipient, Rule
from b1twilio_pipeline.b1.snapshot_store import AlertStore, Snapshot, SnapshotStore
from b1twilio_pipeline.b1.snapshots import (
    ENTITY_BY_NAME,
    OPEN_INVOICES_KEY,
    STOCK_LEVELS_KEY,
    snapshot_key,
)
from b1twilio_pipeline.core.markdown import markdown_table
from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.core.store_resource import StoreResource
from b1twilio_pipeline.notifications.ledger import PlannedNotification, bounded_id

ALERTS_GROUP = "alerts"
NOTIFICATION_PLAN_KEY = dg.AssetKey(["alerts", "notification_plan"])


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
                store: StoreResource) -> dg.MaterializeResult:
        loaded = rules.load()
        per_rule = {rule.id: evaluate(rule, store.snapshots(), store.alerts(), config)
                    for rule in loaded.enabled_rules(kind)}
        total = sum(per_rule.values())
        context.log.info(f"{kind}: {total} new alert(s) {per_rule}")
        return dg.MaterializeResult(metadata={
            "new_alerts": total, "rules_evaluated": len(per_rule),
            "new_alerts_per_rule": dg.MetadataValue.json(per_rule),
        })

    return _alerts


def masked_phone_of(recipient: Recipient) -> str:
    """The number masked (+49*******678); a reference whose number is not stored yet shows its name."""
    try:
        return mask_phone(recipient.resolve_phone())
    except ConfigurationError:
        return recipient.masked


def plan_for(rule: Rule, recipients: Sequence[Recipient], alert_id: str, document: str,
             fields: dict[str, Any], channel: str, now: datetime,
             escalation_of: str | None = None) -> list[PlannedNotification]:
    """One ledger row per recipient, held until quiet hours end unless the rule may ring now."""
    body = rule.render(fields)
    return [
        PlannedNotification(
            notification_id=bounded_id(alert_id, person.key, channel),
            alert_id=alert_id, rule_id=rule.id, document=document, recipient=person.key,
            recipient_name=person.name, recipient_masked=masked_phone_of(person), channel=channel, body=body,
            not_before=rule.hold_until(now, person.tz, channel) or now, escalation_of=escalation_of,
        )
        for person in recipients
    ]


@dg.asset(
    key=NOTIFICATION_PLAN_KEY,
    deps=[dg.AssetKey(["alerts", name]) for name, _, _ in ALERT_KINDS.values()],
    group_name=ALERTS_GROUP,
    kinds={"python", "sql"},
    description="Each new alert becomes one notification per recipient in the ledger (recorded before "
                "anything is sent), held until quiet hours end where the rule says so.",
)
def notification_plan(context: dg.AssetExecutionContext, rules: RulesResource,
                      store: StoreResource) -> dg.MaterializeResult:
    config = rules.load()
    alerts, ledger = store.alerts(), store.ledger()
    planned = held = 0
    now = utcnow()
    problems: list[dict[str, str]] = []
    for event in alerts.unplanned():
        rule = config.find_rule(event.rule_id)
        try:
            rows = [] if rule is None or not rule.enabled else plan_for(
                rule, config.initial_recipients(rule), event.alert_id, event.document, event.fields,
                rule.first_channel, now)
            planned += ledger.plan(rows, alert_id=event.alert_id)
        except (ValueError, ConfigurationError, SQLAlchemyError) as error:
            # One alert that cannot be planned (a template that no longer fits its fields, a database
            # that refuses a value) must not hold up every alert after it: record why and go on.
            reason = " ".join(str(error).split())[:300]
            alerts.record_plan_error(event.alert_id, reason)
            problems.append({"alert": event.alert_id, "rule": event.rule_id, "why": reason})
            context.log.warning(f"alert {event.alert_id} not planned: {reason}")
            continue
        held += sum(1 for row in rows if row.not_before > now)
    context.log.info(f"planned {planned} notification(s), {held} held by quiet hours")
    return dg.MaterializeResult(metadata={
        "planned": planned, "held_by_quiet_hours": held, "not_planned": len(problems),
        "not_planned_alerts": dg.MetadataValue.md(markdown_table(problems, empty="None."))})
