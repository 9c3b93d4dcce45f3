"""End-to-end behaviour of the pipeline against both simulators, in a PostgreSQL-backed Dagster instance:
B1 change -> snapshot -> alert -> notification (sent by the same run) -> Twilio -> delivery status -> B1 audit
table."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from urllib.parse import parse_qs

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.utils import make_new_run_id

from b1twilio_pipeline.b1.sensors import WINDOW
from b1twilio_pipeline.core.automation import SENT
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.ledger import SENDING, Ledger, RedrivePolicy
from b1twilio_pipeline.notifications.send import outgoing_text
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline
from b1twilio_pipeline_tests.fixtures_twilio import SIM_FROM_NUMBER

pytestmark = pytest.mark.postgres

AP_PHONES = {"+15005550101", "+15005550102"}


def _sms_to(pipeline: Pipeline, numbers: set[str]) -> list[dict]:
    return [m for m in pipeline.twilio.messages() if m["to"] in numbers]


def _call_twiml(pipeline: Pipeline) -> list[str]:
    """The inline TwiML of every call request the Twilio simulator received."""
    return [parse_qs(r.body.decode())["Twiml"][0] for r in pipeline.twilio.api_requests()
            if r.method == "POST" and r.path.endswith("/Calls.json")]


def _add_supplier_invoice(pipeline: Pipeline, **fields: object) -> dict:
    return pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH", "DocCurrency": "EUR",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 10, "Price": 123.45}], **fields})


def test_new_supplier_invoice_is_texted_once_to_each_recipient(pipeline: Pipeline) -> None:
    invoice = _add_supplier_invoice(pipeline)

    runs = pipeline.flow()

    # The run that read the change sent its notifications at once: no second run, no wait for a sensor;
    # tagged as notification history, so retention keeps it as long as the notification runs.
    assert len(runs) == 1 and runs[0].success and runs[0].dagster_run.job_name == "b1_change_job"
    assert pipeline.instance.get_run_by_id(runs[0].run_id).tags[SENT] == "2"  # type: ignore[union-attr]
    sent = _sms_to(pipeline, AP_PHONES)
    assert {m["to"] for m in sent} == AP_PHONES
    for message in sent:
        assert "Acme Components GmbH" in message["body"]
        assert str(invoice["DocNum"]) in message["body"]
        assert "1,234.50 EUR" in message["body"]
        assert re.search(r"\(ref [A-Z2-9]{6}\)$", message["body"])
    events = pipeline.notifications(runs)
    assert {e["recipient"] for e in events} == {"Dana", "Ray"}
    for event in events:  # the asset's events are the audit trail: who, what, which SID; phone masked
        assert event["rule"] == "ap-new-supplier-invoice"
        assert event["document"] == f"PurchaseInvoices {invoice['DocNum']}"
        assert event["twilio_sid"] in {m["sid"] for m in sent} and event["outcome"] == "sent"
        assert event["recipient_phone"].startswith("+15") and "*" in event["recipient_phone"]
    assert "+15005550101" not in str(events) + str(runs[0].dagster_run.tags)
    # The one sensor watching the ledger now wants the statuses, and nothing more sent.
    waiting = pipeline.tick("notification_sensor").run_requests
    assert [request.job_name for request in waiting] == ["delivery_job"]


def test_rerun_backfill_restart_and_update_send_nothing_more(pipeline: Pipeline) -> None:
    invoice = _add_supplier_invoice(pipeline)
    pipeline.flow()
    assert len(_sms_to(pipeline, AP_PHONES)) == 2

    pipeline.flow()  # the same window polled again
    partitions = pipeline.defs.resolve_job_def("snapshot_job").partitions_def
    window = partitions.get_partition_key_for_timestamp(pipeline.sap.clock.now().timestamp())
    pipeline.run_job("snapshot_job", tags={"dagster/asset_partition_range_start": window,
                                           "dagster/asset_partition_range_end": window})  # a backfill over it
    pipeline.cursors.pop("notification_sensor")  # the sensor restarts from scratch
    pipeline.evaluate()
    for run in pipeline.notify():  # whatever it asks for again is refused by the ledger
        assert run.success
    pipeline.sap.update_document("PurchaseInvoices", invoice["DocEntry"], {"Comments": "approved"})
    pipeline.flow()  # a changed document is not a new receipt

    assert len(_sms_to(pipeline, AP_PHONES)) == 2


def test_same_docnum_and_date_handed_over_twice_is_one_event(pipeline: Pipeline) -> None:
    first = _add_supplier_invoice(pipeline)
    # B1 has no idempotency guarantee: the same DocNum and date arrive again under another DocEntry.
    pipeline.sap.add_document("PurchaseInvoices", {
        "DocNum": first["DocNum"], "DocDate": first["DocDate"], "CardCode": "V10000",
        "CardName": "Acme Components GmbH", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 1}]})
    pipeline.flow()
    assert len(_sms_to(pipeline, AP_PHONES)) == 2


def test_overdue_invoice_places_one_voice_call_with_amount_and_due_date(pipeline: Pipeline) -> None:
    today = pipeline.sap.clock.now().date()
    due = today - timedelta(days=40)
    # Last changed long before the pipeline existed: only the state refresh can see it.
    invoice = pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "CardName": "Northwind Traders", "DocCurrency": "EUR",
        "DocDate": (due - timedelta(days=30)).isoformat(), "DocDueDate": due.isoformat(),
        "UpdateDate": (due - timedelta(days=30)).isoformat(), "UpdateTime": "09:00:00",
        "DocTotal": 1000.0, "PaidToDate": 250.0})

    pipeline.refresh_state()
    runs = [pipeline.evaluate(), *pipeline.notify()]
    pipeline.refresh_state()
    runs += [pipeline.evaluate(), *pipeline.notify()]

    calls = [c for c in pipeline.twilio.calls() if c["to"] == "+15005550103"]
    # The run that evaluated the invoice placed the call: no notification run was needed.
    assert len(runs) == 2 and len(calls) == 1 and len(pipeline.notifications(runs)) == 1
    twiml = _call_twiml(pipeline)[0]
    assert "750.00" in twiml and due.isoformat() in twiml and str(invoice["DocNum"]) in twiml
    assert "40 days overdue" in twiml


def test_stock_alerts_once_per_fall_below_reorder_point(pipeline: Pipeline) -> None:
    pipeline.sap.add_document("Items", {
        "ItemCode": "B200", "ItemName": "Pallet wrap",
        "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 50, "MinimalStock": 20}]})
    warehouse_sms = {"+15005550104"}

    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    assert _sms_to(pipeline, warehouse_sms) == []

    pipeline.sap.set_item_stock("B200", "01", 5)
    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    assert len(_sms_to(pipeline, warehouse_sms)) == 1
    assert "B200 Pallet wrap in 01 is 5, below reorder point 20" in _sms_to(pipeline, warehouse_sms)[0]["body"]

    pipeline.sap.set_item_stock("B200", "01", 3)  # still below: the same episode
    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    assert len(_sms_to(pipeline, warehouse_sms)) == 1

    pipeline.sap.set_item_stock("B200", "01", 40)  # recovered
    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    pipeline.sap.set_item_stock("B200", "01", 2)  # and fell again
    pipeline.refresh_state(); pipeline.evaluate(); pipeline.notify()  # noqa: E702
    assert len(_sms_to(pipeline, warehouse_sms)) == 2


def test_delivery_receipt_reaches_ledger_dagster_and_b1_audit_once(pipeline: Pipeline) -> None:
    _add_supplier_invoice(pipeline)
    runs = pipeline.flow()
    pipeline.twilio.advance()  # delivered at Twilio; no callback URL configured: polling finds it

    pipeline.deliveries()
    pipeline.deliveries()

    ledger = pipeline.ledger()
    sid = pipeline.notifications(runs)[0]["twilio_sid"]
    assert ledger.by_sid(sid).status == "delivered"
    assert [e.status for e in DeliveryLog(pipeline.database.engine).history(sid)] == ["delivered"]
    audit_rows = pipeline.sap.udt_rows("B1TW_AUDIT")
    assert sorted(row["U_Status"] for row in audit_rows) == ["delivered", "delivered"]
    assert {row["U_MsgSid"] for row in audit_rows} == {m["sid"] for m in _sms_to(pipeline, AP_PHONES)}
    assert all("+1500555010" not in str(row) for row in audit_rows)
    event = pipeline.instance.get_latest_materialization_event(dg.AssetKey(["notifications",
                                                                            "notification_deliveries"]))
    assert event is not None


def test_undelivered_sms_is_a_delivery_exception(pipeline: Pipeline) -> None:
    pipeline.twilio.set_rules({"+15005550101": {"message": "undelivered", "error_code": 30003}})
    _add_supplier_invoice(pipeline)
    pipeline.flow()
    pipeline.twilio.advance()

    result = pipeline.deliveries()

    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert checks == {"no_delivery_exceptions": False, "no_failed_notifications": True}
    statuses = sorted(row["U_Status"] for row in pipeline.sap.udt_rows("B1TW_AUDIT"))
    assert statuses == ["delivered", "undelivered"]


def test_crash_between_send_and_sid_neither_loses_nor_duplicates(pipeline: Pipeline) -> None:
    _add_supplier_invoice(pipeline)
    pipeline.plan_unsent()
    # A later run claimed the notification, Twilio accepted the SMS, then the worker died before it
    # recorded the SID; its lease has run out.
    dead = Ledger(pipeline.database.engine, RedrivePolicy(lease=timedelta(0)))
    victim = dead.due(utcnow())[0]
    claimed = dead.claim(victim.notification_id, victim.attempts, "dead-run", utcnow())
    assert claimed is not None and claimed.status == SENDING
    phone = "+15005550101" if "Dana" in victim.recipient_name else "+15005550102"
    accepted = TwilioResource(
        account_sid=pipeline.twilio.account_sid, auth_token=pipeline.twilio.auth_token,
        from_number=SIM_FROM_NUMBER, api_base_url=pipeline.twilio.url, status_callback_url="",
    ).send_sms(phone, outgoing_text(claimed, acknowledgeable=False))

    runs = pipeline.notify()  # the other recipient's notification, and the dead worker's taken over
    # Dagster's run retry (or an operator) re-executes that run with the same config: nothing more.
    retry = pipeline.run_job("notify_job", run_config=runs[0].dagster_run.run_config)

    assert len(runs) == 1 and runs[0].success and retry.success
    assert len(_sms_to(pipeline, AP_PHONES)) == 2  # one each: the interrupted one was adopted, not resent
    ledger = pipeline.ledger()
    assert ledger.get(victim.notification_id).sid == accepted.sid
    outcomes = {e["notification_id"]: e["outcome"] for e in pipeline.notifications(runs)}
    assert outcomes[victim.notification_id] == "adopted" and sorted(outcomes.values()) == ["adopted", "sent"]
    assert pipeline.notifications([retry]) == []


def test_missed_window_is_filled_by_a_backfill_and_alerts_then(pipeline: Pipeline) -> None:
    partitions = pipeline.defs.resolve_job_def("snapshot_job").partitions_def
    now = pipeline.sap.clock.now()
    missed_at = now - timedelta(hours=2)
    _add_supplier_invoice(pipeline, UpdateDate=missed_at.date().isoformat(),
                          UpdateTime=missed_at.strftime("%H:%M:%S"))
    pipeline.flow()  # the current window does not contain it
    assert _sms_to(pipeline, AP_PHONES) == []

    first = partitions.get_partition_key_for_timestamp((missed_at - timedelta(minutes=30)).timestamp())
    last = partitions.get_partition_key_for_timestamp((missed_at + timedelta(minutes=30)).timestamp())
    pipeline.run_job("snapshot_job", tags={"dagster/asset_partition_range_start": first,
                                           "dagster/asset_partition_range_end": last})
    pipeline.evaluate()
    pipeline.notify()

    assert len(_sms_to(pipeline, AP_PHONES)) == 2


def test_a_window_whose_run_died_is_read_again_within_minutes(pipeline: Pipeline) -> None:
    invoice = _add_supplier_invoice(pipeline)
    partitions = pipeline.defs.resolve_job_def("b1_change_job").partitions_def
    window = partitions.get_partition_key_for_timestamp(time.time())  # type: ignore[union-attr]
    reading = dg.DagsterRun(job_name="b1_change_job", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED,
                            tags={WINDOW: window})
    pipeline.instance.add_run(reading)  # a run reading that window, started before the invoice was saved

    waiting = pipeline.tick("b1_change_sensor")
    assert not waiting.run_requests and "wait for the run reading it" in waiting.skip_reason.skip_message
    # Its worker was SIGKILLed three minutes ago: the run stays STARTED (the default launcher cannot tell).
    engine = sa.create_engine(pipeline.instance.run_storage.postgres_url)  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET update_timestamp = update_timestamp - interval '3 minutes' "
                             "WHERE run_id = :run_id"), {"run_id": reading.run_id})
    engine.dispose()

    runs = pipeline.detect()  # the dead run no longer holds the window back
    assert len(runs) == 1 and {m["to"] for m in _sms_to(pipeline, AP_PHONES)} == AP_PHONES
    assert all(str(invoice["DocNum"]) in m["body"] for m in _sms_to(pipeline, AP_PHONES))
