"""B1 data is input from outside: malformed records are quarantined (reported, skipped) and never stop a
window, a refresh or a rule kind; vanished documents do not break the state refresh; every way a customer
pays counts toward a payment rule's minimum."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import yaml

from b1twilio_pipeline.alerts.evaluation import overdue_candidates
from b1twilio_pipeline.alerts.rules import parse_rules
from b1twilio_pipeline.b1.snapshot_store import Snapshot
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline_tests.fixtures_pipeline import TEST_RULES, Pipeline

pytestmark = pytest.mark.postgres

AP_PHONES = {"+15005550101", "+15005550102"}


def _supplier_invoice(pipeline: Pipeline, **fields: object) -> dict:
    return pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}], **fields})


def test_malformed_records_are_quarantined_and_the_rest_of_the_window_alerts(pipeline: Pipeline) -> None:
    good = _supplier_invoice(pipeline)
    no_key = [_supplier_invoice(pipeline) for _ in range(2)]
    for doc in no_key:  # two records without a key must not collapse into one key "None"
        pipeline.sap.corrupt_record("PurchaseInvoices", doc["DocEntry"], {"DocEntry": None})
    bad_total = _supplier_invoice(pipeline)
    pipeline.sap.corrupt_record("PurchaseInvoices", bad_total["DocEntry"], {"DocTotal": "n/a"})

    result = pipeline.poll()

    checks = [c for c in result.get_asset_check_evaluations()
              if c.asset_key.path[-1] == "purchase_invoices"]
    assert len(checks) == 1 and checks[0].passed is False
    assert checks[0].metadata["quarantined"].value == 3
    listed = checks[0].metadata["records"].value
    assert "no DocEntry" in listed and f"| {bad_total['DocEntry']} | DocTotal 'n/a' is not a number |" in listed
    pipeline.evaluate()
    pipeline.notify()
    bodies = [m["body"] for m in pipeline.twilio.messages() if m["to"] in AP_PHONES]
    assert len(bodies) == 2 and all(str(good["DocNum"]) in body for body in bodies)


def test_a_malformed_due_date_skips_that_invoice_only() -> None:
    rules = parse_rules(yaml.safe_load(TEST_RULES))
    today = utcnow().date()

    def invoice(key: str, due: str) -> Snapshot:
        return Snapshot("Invoices", key, {"DocEntry": int(key), "DocNum": int(key), "DocDueDate": due,
                                          "DocumentStatus": "bost_Open", "DocTotal": 100.0, "PaidToDate": 0.0},
                        None, utcnow(), utcnow())

    found = overdue_candidates(rules.rule("overdue-30"), [
        invoice("1", "31/12/2026"), invoice("2", (today - timedelta(days=40)).isoformat())], today=today)
    assert [c.fields["DocEntry"] for c in found] == [2]


def test_an_invoice_gone_from_b1_does_not_break_the_state_refresh(pipeline: Pipeline) -> None:
    due = pipeline.sap.clock.now().date() - timedelta(days=40)
    doomed = pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "DocDueDate": due.isoformat(), "DocTotal": 500.0})
    pipeline.refresh_state()
    pipeline.sap.delete_record("Invoices", doomed["DocEntry"])  # a restore from an older backup

    vanished = [pipeline.refresh_state().asset_materializations_for_node("b1__open_invoices_state")[0]
                .metadata["vanished_from_b1"].value for _ in range(2)]

    assert vanished == [1, 0]  # noticed once, closed, and the refresh keeps working
    assert list(pipeline.snapshots().iter_entity("Invoices", open_only=True)) == []
    pipeline.evaluate()
    pipeline.notify()
    assert pipeline.twilio.calls() == []


def test_cheques_and_card_payments_count_toward_the_minimum(pipeline: Pipeline) -> None:
    invoice = pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 10, "Price": 150}]})
    pipeline.sap.add_document("IncomingPayments", {
        "CardCode": "C20000", "PaymentInvoices": [{"DocEntry": invoice["DocEntry"], "SumApplied": 1500}],
        "PaymentChecks": [{"CheckSum": 900.0}], "PaymentCreditCards": [{"CreditSum": 600.0}]})

    pipeline.flow()

    calls = [parse_qs(r.body.decode())["Twiml"][0] for r in pipeline.twilio.api_requests()
             if r.method == "POST" and r.path.endswith("/Calls.json")]
    assert len(calls) == 1 and "1,500.00" in calls[0]  # the big-payment rule (at least 1,000) called
