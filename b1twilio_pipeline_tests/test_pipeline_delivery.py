"""Delivery side of the pipeline: signed status callbacks into the ledger and Dagster, escalation of failed
SMS to a voice call, and quiet hours holding SMS."""

import socket
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs

import dagster as dg
import pytest

from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.public_urls import STATUS_PATH
from b1twilio_pipeline.notifications.receiver import create_app
from b1twilio_pipeline.notifications.receiver_server import start_background
from b1twilio_pipeline.notifications.statuses import StatusEvent
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline, PipelineFactory
from b1twilio_sim.twilio import DEMO_AUTH_TOKEN

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def with_callbacks(pipeline_factory: PipelineFactory, pg_store_url: str) -> Iterator[Pipeline]:
    """The pipeline with Twilio status callbacks going to the real receiver, which writes to the ledger
    and reports each change to the Dagster instance."""
    port = _free_port()
    public_url = f"http://127.0.0.1:{port}{STATUS_PATH}"
    pipeline = pipeline_factory(status_callback_url=public_url)
    instance = pipeline.instance

    def report(event: StatusEvent) -> None:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=DELIVERIES_KEY, metadata={"sid": event.sid, "status": event.status}))

    app = create_app(auth_token=DEMO_AUTH_TOKEN, status_url=public_url, sink=pipeline.delivery_log(),
                     on_change=report)
    _, stop = start_background(app, port=port)
    yield pipeline
    stop()


def _add_purchase_invoice(pipeline: Pipeline) -> None:
    pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]})


def test_signed_callbacks_update_ledger_and_dagster_and_audit_once(with_callbacks: Pipeline) -> None:
    pipeline = with_callbacks
    pipeline.twilio.set_callback_mode("duplicate")  # Twilio may deliver a callback twice
    _add_purchase_invoice(pipeline)
    runs = pipeline.flow()
    pipeline.twilio.advance()
    assert pipeline.twilio.wait_callbacks(10)

    ledger = pipeline.ledger()
    sids = [m["sid"] for m in pipeline.twilio.messages()]
    assert len(sids) == 2 and len(pipeline.notifications(runs)) == 2
    for sid in sids:  # before any polling: the callbacks alone brought the final status
        assert ledger.by_sid(sid).status == "delivered"
        assert {e.source for e in DeliveryLog(pipeline.database.engine).history(sid)} == {"callback"}
    observed = pipeline.instance.fetch_observations(DELIVERIES_KEY, limit=50).records
    assert {r.asset_observation.metadata["sid"].value for r in observed} >= set(sids)

    pipeline.deliveries()
    pipeline.deliveries()
    rows = pipeline.sap.udt_rows("B1TW_AUDIT")
    delivered = sorted(r["U_MsgSid"] for r in rows if r["U_Status"] == "delivered")
    assert delivered == sorted(sids)


def test_failed_sms_escalates_to_a_voice_call(pipeline: Pipeline) -> None:
    buyer = "+15005550105"
    pipeline.twilio.set_rules({buyer: {"message": "undelivered", "error_code": 30003}})
    order = pipeline.sap.add_document("PurchaseOrders", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 3, "Price": 10}]})
    pipeline.flow()
    assert [m["to"] for m in pipeline.twilio.messages()] == [buyer]
    assert pipeline.twilio.calls() == []

    pipeline.twilio.advance()
    pipeline.deliveries()  # polls: undelivered -> plans the voice escalation
    runs = pipeline.notify()
    pipeline.deliveries()
    runs += pipeline.notify()  # nothing more: one escalation only

    calls = pipeline.twilio.calls()
    assert len(runs) == 1 and runs[0].success
    assert [c["to"] for c in calls] == [buyer]
    assert [e["channel"] for e in pipeline.notifications(runs)] == ["voice"]
    assert pipeline.sap.get_record("PurchaseOrders", order["DocEntry"]) is not None


def test_quiet_hours_hold_sms_until_they_end(pipeline: Pipeline) -> None:
    pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "CardName": "Northwind Traders",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 99}]})
    pipeline.flow()

    night_shift = [m for m in pipeline.twilio.messages() if m["to"] == "+15005550106"]
    held = [n for n in pipeline.ledger().due(utcnow() + timedelta(days=2))
            if n.rule_id == "new-customer-invoice-quiet"]
    assert night_shift == []
    assert len(held) == 1 and held[0].not_before > utcnow()


def test_unanswered_call_goes_to_the_next_person_on_call(pipeline: Pipeline) -> None:
    first, second = "+15005550107", "+15005550108"
    pipeline.twilio.set_rules({first: {"call": "no-answer"}})
    invoice = pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "CardName": "Northwind Traders",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 10, "Price": 150}]})
    pipeline.sap.add_document("IncomingPayments", {
        "CardCode": "C20000", "PaymentInvoices": [{"DocEntry": invoice["DocEntry"], "SumApplied": 1500}]})
    pipeline.flow()
    assert [c["to"] for c in pipeline.twilio.calls()] == [first]  # the chain starts with its head

    pipeline.twilio.advance()
    pipeline.deliveries()
    pipeline.notify()

    assert [c["to"] for c in pipeline.twilio.calls()] == [first, second]
    twiml = [parse_qs(r.body.decode())["Twiml"][0] for r in pipeline.twilio.api_requests()
             if r.path.endswith("/Calls.json")]
    assert f"for invoices {invoice['DocNum']}" in twiml[1] and "1,500.00" in twiml[1]


def _checks(run: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in run.get_asset_check_evaluations()}


def test_delivery_check_stays_red_until_the_on_call_chain_reaches_someone(pipeline: Pipeline) -> None:
    first, second = "+15005550107", "+15005550108"
    pipeline.twilio.set_rules({first: {"call": "no-answer"}})
    invoice = pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "CardName": "Northwind Traders",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 10, "Price": 150}]})
    pipeline.sap.add_document("IncomingPayments", {
        "CardCode": "C20000", "PaymentInvoices": [{"DocEntry": invoice["DocEntry"], "SumApplied": 1500}]})
    pipeline.flow()
    pipeline.twilio.advance()

    reported = _checks(pipeline.deliveries())["no_delivery_exceptions"]
    quiet_run = _checks(pipeline.deliveries())["no_delivery_exceptions"]  # no new status in this run
    assert not reported.passed and not quiet_run.passed
    assert quiet_run.metadata["unresolved_exceptions"].value == 1
    assert "no-answer" in quiet_run.metadata["exceptions"].value

    pipeline.notify()  # the next person on call
    pipeline.twilio.advance()
    answered = _checks(pipeline.deliveries())["no_delivery_exceptions"]
    assert [c["to"] for c in pipeline.twilio.calls()] == [first, second]
    assert answered.passed and answered.metadata["unresolved_exceptions"].value == 0

    # The audit view on the asset's latest materialization: both calls, newest first, with their outcome.
    event = pipeline.instance.get_latest_materialization_event(DELIVERIES_KEY)
    table = event.asset_materialization.metadata["who_was_told_what"]
    calls = [record.data for record in table.records if record.data["channel"] == "voice"]
    assert [(row["recipient"].split()[0], row["status"]) for row in calls] == [
        ("Bo", "completed"), ("Ada", "no-answer")]
    assert all(row["sent_utc"] and row["rule"] and "1500555010" not in row["recipient"] for row in calls)
    held = [record.data for record in table.records if record.data["status"] == "planned"]
    assert [(row["recipient"].split()[0], row["sent_utc"]) for row in held] == [("Max", "")]  # quiet hours
