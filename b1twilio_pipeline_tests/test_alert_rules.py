"""Rule evaluation over snapshots: what is an event, what is the same event, what is not alertable."""

from datetime import UTC, date, datetime
from typing import Any

import yaml

from b1twilio_pipeline.alerts import evaluation as alert_rules
from b1twilio_pipeline.alerts.rules import Rule, parse_rules
from b1twilio_pipeline.b1.snapshot_store import Snapshot

RULES = parse_rules(yaml.safe_load("""
timezone: UTC
recipients:
  team: [{name: Dana, phone: "+15005550101"}]
rules:
  - {id: pi, kind: purchase_invoice_received, recipients: [team], min_amount: 100}
  - {id: overdue, kind: payment_overdue, days_overdue: 30, renotify_every_days: 7, recipients: [team]}
  - {id: overdue-once, kind: payment_overdue, days_overdue: 30, recipients: [team]}
  - {id: paid, kind: payment_received, recipients: [team]}
  - {id: po, kind: purchase_order_changed, recipients: [team]}
  - {id: stock-wh, kind: stock_below_reorder, warehouses: ["01"], recipients: [team]}
  - {id: stock-item, kind: stock_below_reorder, recipients: [team]}
"""), "rules.yaml")
TODAY = date(2026, 11, 25)


def rule(rule_id: str) -> Rule:
    return RULES.rule(rule_id)


def snap(payload: dict[str, Any], previous: dict[str, Any] | None = None) -> Snapshot:
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    return Snapshot("X", str(payload.get("DocEntry", payload.get("ItemCode"))), payload, previous, now, now)


def doc(**fields: Any) -> dict[str, Any]:
    return {"DocEntry": 1, "DocNum": 7001, "DocDate": "2026-11-25", "DocDueDate": "2026-12-25",
            "CreationDate": "2026-11-25", "CardCode": "V1", "CardName": "Acme", "DocTotal": 500.0,
            "DocCurrency": "EUR", "PaidToDate": 0.0, "DocumentStatus": "bost_Open", "Cancelled": "tNO", **fields}


def test_new_document_id_is_docnum_and_date_whatever_the_docentry() -> None:
    since = date(2026, 11, 22)
    first = alert_rules.new_document_candidates(rule("pi"), [snap(doc())], label="PI", since=since)
    again = alert_rules.new_document_candidates(rule("pi"), [snap(doc(DocEntry=99))], label="PI", since=since)
    assert [c.alert_id for c in first] == [c.alert_id for c in again] == ["pi:7001:2026-11-25"]


def test_cancelled_old_and_small_documents_are_not_new_receipts() -> None:
    since = date(2026, 11, 22)
    docs = [snap(doc(Cancelled="tYES")), snap(doc(CreationDate="2024-01-02", DocDate="2024-01-02")),
            snap(doc(DocTotal=99.0))]
    assert alert_rules.new_document_candidates(rule("pi"), docs, label="PI", since=since) == []


def test_v2_datetime_dates_are_read_as_dates() -> None:
    candidates = alert_rules.new_document_candidates(
        rule("pi"), [snap(doc(DocDate="2026-11-25T00:00:00Z", CreationDate="2026-11-25T00:00:00Z"))],
        label="PI", since=date(2026, 11, 22))
    assert candidates[0].fields["DocDate"] == "2026-11-25"


def test_overdue_needs_n_days_an_open_balance_and_reminds_every_7_days() -> None:
    invoices = [
        snap(doc(DocEntry=1, DocDueDate="2026-10-26")),  # 30 days: alert, reminder 0
        snap(doc(DocEntry=2, DocDueDate="2026-10-27")),  # 29 days: not yet
        snap(doc(DocEntry=3, DocDueDate="2026-10-01", PaidToDate=500.0)),  # paid in full
        snap(doc(DocEntry=4, DocDueDate="2026-10-01", DocumentStatus="bost_Close")),
        snap(doc(DocEntry=5, DocDueDate="2026-10-18", PaidToDate=120.5)),  # 38 days: reminder 1
    ]
    got = {c.alert_id: c.fields for c in alert_rules.overdue_candidates(rule("overdue"), invoices, today=TODAY)}
    assert set(got) == {"overdue:1:r0", "overdue:5:r1"}
    assert got["overdue:5:r1"]["open_amount"] == 379.5 and got["overdue:5:r1"]["days_overdue"] == 38
    once = alert_rules.overdue_candidates(rule("overdue-once"), invoices, today=TODAY)
    assert {c.alert_id for c in once} == {"overdue-once:1:r0", "overdue-once:5:r0"}


def test_overdue_open_amount_uses_foreign_currency_totals() -> None:
    invoice = snap(doc(DocDueDate="2026-09-01", DocTotal=1000.0, DocTotalFc=1100.0, PaidToDateFC=100.0))
    [candidate] = alert_rules.overdue_candidates(rule("overdue"), [invoice], today=TODAY)
    assert candidate.fields["open_amount"] == 1000.0


def test_payment_lists_the_invoices_it_settles_by_docnum() -> None:
    payment = snap({"DocEntry": 3, "DocNum": 9001, "DocType": "rCustomer", "DocDate": "2026-11-25",
                    "CardCode": "C1", "CardName": "Northwind", "DocCurrency": "EUR", "CashSum": 0,
                    "TransferSum": 250.0, "Cancelled": "tNO",
                    "PaymentInvoices": [{"DocEntry": 11, "SumApplied": 200}, {"DocEntry": 12, "SumApplied": 50}]})
    [candidate] = alert_rules.payment_candidates(rule("paid"), [payment], since=date(2026, 11, 22),
                                                 invoice_numbers={"11": 5011, "12": 5012})
    assert candidate.fields["amount"] == 250.0 and candidate.fields["invoices"] == "5011, 5012"


def test_purchase_order_alerts_on_creation_and_on_tracked_changes_only() -> None:
    created = doc(UpdateDate="2026-11-25", DocumentLines=[{"ItemCode": "A", "Quantity": 1, "Price": 500}])
    changed = {**created, "DocTotal": 620.0}
    cosmetic = {**created, "Comments": "typo fixed"}
    since = date(2026, 11, 22)
    [new] = alert_rules.purchase_order_candidates(rule("po"), [snap(created)], since=since)
    [update] = alert_rules.purchase_order_candidates(rule("po"), [snap(changed, created)], since=since)
    assert new.fields["change"] == "created"
    assert update.fields["change"] == "DocTotal 500.00 -> 620.00" and update.alert_id != new.alert_id
    assert alert_rules.purchase_order_candidates(rule("po"), [snap(cosmetic, created)], since=since) == []


def test_an_old_purchase_order_first_seen_after_a_change_is_not_called_new() -> None:
    old = doc(DocDate="2026-10-01", CreationDate="2026-10-01", UpdateDate="2026-11-25",
              DocumentLines=[{"ItemCode": "A", "Quantity": 1, "Price": 500}])
    [first_seen] = alert_rules.purchase_order_candidates(rule("po"), [snap(old)], since=date(2026, 11, 22))
    assert first_seen.fields["change"] == alert_rules.FIRST_SEEN_CHANGE


def test_stock_levels_per_warehouse_or_per_item() -> None:
    item = snap({"ItemCode": "A1", "ItemName": "Bolt", "QuantityOnStock": 30, "MinInventory": 40,
                 "ItemWarehouseInfoCollection": [
                     {"WarehouseCode": "01", "InStock": 5, "MinimalStock": 10},
                     {"WarehouseCode": "02", "InStock": 25, "MinimalStock": 10}]})
    per_warehouse = alert_rules.stock_levels(rule("stock-wh"), [item])
    per_item = alert_rules.stock_levels(rule("stock-item"), [item])
    assert [(s.warehouse, s.below) for s in per_warehouse] == [("01", True)]
    assert [(s.warehouse, s.below) for s in per_item] == [("all", True)]
    no_reorder_point = snap({"ItemCode": "A2", "ItemName": "Nut", "QuantityOnStock": 0, "MinInventory": 0})
    assert [s.below for s in alert_rules.stock_levels(rule("stock-item"), [no_reorder_point])] == [False]


def test_aging_summary_buckets_open_amounts_per_customer() -> None:
    from b1twilio_pipeline.reporting.receivables import aging_frame, aging_summary

    invoices = [
        snap(doc(DocEntry=1, CardName="Acme", DocDueDate="2026-11-10", DocTotal=100.0)),  # 15 days
        snap(doc(DocEntry=2, CardName="Acme", DocDueDate="2026-08-01", DocTotal=300.0, PaidToDate=50.0)),
        snap(doc(DocEntry=3, CardName="Zeta", DocDueDate="2026-10-01", DocTotal=40.0)),  # 55 days
        snap(doc(DocEntry=4, CardName="Paid", DocDueDate="2026-10-01", DocTotal=40.0, PaidToDate=40.0)),
        snap(doc(DocEntry=5, CardName="NotDue", DocDueDate="2026-12-01")),
    ]
    summary = aging_summary(aging_frame(invoices, TODAY)).set_index("customer")
    assert list(summary.index) == ["Acme", "Zeta"]
    assert summary.loc["Acme", "1-30 days"] == 100.0 and summary.loc["Acme", "over 90 days"] == 250.0
    assert summary.loc["Acme", "total"] == 350.0 and summary.loc["Zeta", "31-60 days"] == 40.0
    assert aging_summary(aging_frame([], TODAY)).empty
