"""The delivery guarantee under faults, on PostgreSQL: nothing planned is dropped (re-drive with backoff,
then failed and the admins told), nothing is sent twice (compare-and-set claims, lookups before resends),
and no single bad row or out-of-order commit holds up the others."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.core.schema import notifications
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.ledger import FAILED, PLANNED, PlannedNotification
from b1twilio_pipeline.notifications.ledger_reads import LedgerReads
from b1twilio_pipeline.notifications.send import Sender
from b1twilio_pipeline_tests.fixtures_pipeline import TEST_RULES, Pipeline, PipelineFactory

pytestmark = pytest.mark.postgres

DANA, RAY = "+15005550101", "+15005550102"
ADMIN = "+15005550199"
WITH_ADMINS = TEST_RULES.replace("recipients:\n", f'recipients:\n  admins:\n    - {{name: Ops, phone: "{ADMIN}"}}\n', 1)


@pytest.fixture(autouse=True)
def fast_redrive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1TWILIO_SEND_RETRY_SECONDS", "1")


def _supplier_invoice(pipeline: Pipeline) -> dict:
    return pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]})


def _sms_to(pipeline: Pipeline, number: str) -> list[dict]:
    return [m for m in pipeline.twilio.messages() if m["to"] == number]


def _after_backoff(pipeline: Pipeline) -> list[dg.ExecuteInProcessResult]:
    time.sleep(1.2)
    return pipeline.notify()


def test_twilio_outage_longer_than_every_retry_is_redriven_and_sent_once(pipeline: Pipeline) -> None:
    _supplier_invoice(pipeline)
    pipeline.twilio.set_faults(fail_all=True, fail_status=503)
    first = pipeline.flow()
    assert first[0].success and pipeline.twilio.messages() == []
    ledger = pipeline.ledger()
    waiting = [n for n in ledger.due(utcnow() + timedelta(minutes=1))]
    assert {n.status for n in waiting} == {PLANNED} and all(n.lookup_since for n in waiting)
    assert all("HTTP 503" in (n.error_message or "") for n in waiting)

    assert pipeline.notify() == []  # not due yet: backing off
    pipeline.twilio.set_faults()
    redriven = _after_backoff(pipeline)

    assert [len(_sms_to(pipeline, number)) for number in (DANA, RAY)] == [1, 1]
    assert {e["outcome"] for e in pipeline.notifications(redriven)} == {"sent"}
    assert _after_backoff(pipeline) == []


def test_accepted_then_gateway_timeout_sends_once(pipeline: Pipeline) -> None:
    _supplier_invoice(pipeline)
    pipeline.twilio.set_faults(accept_then_fail_next=2, fail_status=504)
    runs = pipeline.flow()
    assert [len(_sms_to(pipeline, number)) for number in (DANA, RAY)] == [1, 1]
    assert {e["outcome"] for e in pipeline.notifications(runs)} == {"adopted"}
    assert _after_backoff(pipeline) == []


def test_missing_phone_secret_names_the_fix_and_sends_once_it_is_set(pipeline_factory: PipelineFactory,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHONE_DANA", raising=False)
    pipeline = pipeline_factory(rules_text=TEST_RULES.replace('{name: Dana, phone: "+15005550101"}',
                                                              "{name: Dana, phone_ref: dana}"))
    _supplier_invoice(pipeline)
    pipeline.flow()
    assert _sms_to(pipeline, RAY) and not _sms_to(pipeline, DANA)
    waiting = pipeline.ledger().due(utcnow() + timedelta(minutes=1))
    assert len(waiting) == 1 and "b1twilio secrets set PHONE_DANA" in (waiting[0].error_message or "")
    assert waiting[0].recipient_masked == "[PHONE_DANA]"

    monkeypatch.setenv("PHONE_DANA", DANA)
    _after_backoff(pipeline)
    assert len(_sms_to(pipeline, DANA)) == 1


def test_recipient_removed_from_the_rules_then_restored_is_told_once(pipeline: Pipeline) -> None:
    _supplier_invoice(pipeline)
    pipeline.plan_unsent()
    pipeline.rules_file.write_text(TEST_RULES.replace('    - {name: Ray, phone: "+15005550102"}\n', ""))
    pipeline.notify()
    assert _sms_to(pipeline, DANA) and not _sms_to(pipeline, RAY)
    waiting = pipeline.ledger().due(utcnow() + timedelta(minutes=1))
    assert "'Ray'" in (waiting[0].error_message or "") and "add them back" in (waiting[0].error_message or "")

    pipeline.rules_file.write_text(TEST_RULES)
    pipeline.make_due()
    pipeline.notify()
    assert len(_sms_to(pipeline, RAY)) == 1


def test_after_the_attempt_limit_it_is_failed_visible_and_the_admins_are_told(
        pipeline_factory: PipelineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1TWILIO_SEND_MAX_ATTEMPTS", "2")
    pipeline = pipeline_factory(rules_text=WITH_ADMINS)
    _supplier_invoice(pipeline)
    pipeline.twilio.set_faults(fail_all=True, fail_status=503)
    pipeline.flow()
    last = _after_backoff(pipeline)  # the second failure is the last
    assert not last[0].success
    failure = last[0].get_run_failure_event().event_specific_data.error.message  # type: ignore[union-attr]
    assert "2 notification(s) did not go out and the admins were told" in failure
    assert "gave up after 2 failed attempts" in failure and "\n" not in failure.strip()

    pipeline.twilio.set_faults()
    pipeline.notify()
    admin_sms = _sms_to(pipeline, ADMIN)
    assert len(admin_sms) == 2 and all("did not go out" in m["body"] for m in admin_sms)
    assert not _sms_to(pipeline, DANA) and not _sms_to(pipeline, RAY)
    checks = {c.check_name: c.passed for c in pipeline.deliveries().get_asset_check_evaluations()}
    assert checks["no_failed_notifications"] is False
    failed = LedgerReads(pipeline.database.engine).unresolved_failures(utcnow() - timedelta(hours=1))
    assert {n.status for n in failed} == {FAILED}


def test_permanent_rejection_fails_at_once_and_tells_the_admins(pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory(rules_text=WITH_ADMINS)
    pipeline.twilio.set_rules({DANA: {"reject": 21614}})
    _supplier_invoice(pipeline)
    pipeline.flow()
    pipeline.notify()
    assert len(_sms_to(pipeline, RAY)) == 1 and len(_sms_to(pipeline, ADMIN)) == 1
    assert "21614" in _sms_to(pipeline, ADMIN)[0]["body"] and DANA not in _sms_to(pipeline, ADMIN)[0]["body"]


def test_two_workers_on_the_same_notifications_send_each_once(pipeline: Pipeline) -> None:
    """Two workers (a re-executed run, a second daemon) holding the same due list at the same moment;
    the whole run twice at once runs under the daemon in the fault suite."""
    _supplier_invoice(pipeline)
    pipeline.plan_unsent()
    due = [(n.notification_id, n.attempts) for n in pipeline.ledger().due(utcnow())]
    pipeline.twilio.set_latency(0.5)  # both workers are in flight together
    rules = RulesResource(path=str(pipeline.rules_file)).load()
    twilio = pipeline.defs.resources["twilio"]
    outcomes: list[object] = []

    def work(owner: str) -> None:
        sender = Sender(pipeline.ledger(), twilio, rules, owner)
        outcomes.extend(sender.process(notification_id, attempts) for notification_id, attempts in due)

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [len(_sms_to(pipeline, number)) for number in (DANA, RAY)] == [1, 1]
    assert sorted(o.result for o in outcomes if o is not None) == ["sent", "sent"]  # type: ignore[attr-defined]
    assert outcomes.count(None) == 2  # the other worker's claims were refused


def test_escalation_is_decided_and_planned_in_one_transaction(pipeline: Pipeline) -> None:
    _supplier_invoice(pipeline)
    pipeline.flow()
    ledger = pipeline.ledger()
    sent = ledger.by_sid(pipeline.twilio.messages()[0]["sid"])
    assert sent is not None
    broken = PlannedNotification(  # a channel longer than its column: the insert fails on PostgreSQL
        notification_id="x", alert_id=sent.alert_id, rule_id=sent.rule_id, document=sent.document,
        recipient=sent.recipient, recipient_name="X", recipient_masked="X", channel="carrier-pigeon", body="b",
        not_before=utcnow())
    with pytest.raises(sa.exc.DBAPIError):
        ledger.escalate(sent.notification_id, [broken])
    assert ledger.get(sent.notification_id).escalated is False  # the decision rolled back with the plan
    assert ledger.escalate(sent.notification_id, []) == 0 and ledger.get(sent.notification_id).escalated


def test_rows_committed_out_of_order_are_all_picked_up(pipeline: Pipeline) -> None:
    ledger = pipeline.ledger()

    def planned(n: int) -> PlannedNotification:
        return PlannedNotification(
            notification_id=f"manual:{n}|person:ap_team/Dana|sms", alert_id=f"manual:{n}",
            rule_id="ap-new-supplier-invoice", document=f"PurchaseInvoices {n}", recipient="person:ap_team/Dana",
            recipient_name="Dana", recipient_masked="+15******101", channel="sms", body=f"text {n}",
            not_before=utcnow())

    slow = pipeline.database.engine.connect()
    transaction = slow.begin()
    ledger.insert_planned(slow, [planned(1)])  # takes the lower sequence number, commits last
    ledger.plan([planned(2)])
    pipeline.notify()
    transaction.commit()
    slow.close()
    pipeline.notify()
    assert sorted(m["body"].split(" (ref")[0] for m in pipeline.twilio.messages()) == ["text 1", "text 2"]


def test_overlong_names_and_unset_references_do_not_block_planning(pipeline_factory: PipelineFactory,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHONE_" + "X" * 60, raising=False)
    long_name = "Dana " + "von " * 27 + "Someone"  # 120 characters, the longest a name may be
    pipeline = pipeline_factory(rules_text=TEST_RULES.replace(
        '{name: Ray, phone: "+15005550102"}', f"{{name: {long_name}, phone_ref: {'x' * 60}}}"))
    _supplier_invoice(pipeline)
    pipeline.flow()
    rows = pipeline.ledger().due(utcnow() + timedelta(minutes=1))
    assert len(_sms_to(pipeline, DANA)) == 1  # planned and sent although the other row is unusual
    assert rows[0].recipient_name == long_name and rows[0].recipient_masked == f"[PHONE_{'X' * 60}]"


def test_receipts_are_polled_oldest_poll_first_and_not_forever(pipeline: Pipeline) -> None:
    pipeline.twilio.set_rules({DANA: {"message": "sent"}, RAY: {"message": "sent"}})  # no carrier receipt
    _supplier_invoice(pipeline)
    pipeline.flow()
    pipeline.twilio.advance()
    deliveries = DeliveryLog(pipeline.database.engine)
    now = utcnow()
    first = deliveries.due_for_poll(now, limit=1)
    deliveries.mark_polled(first[0][0], now)
    second = deliveries.due_for_poll(now, limit=1)
    assert second and second != first  # the one polled least recently comes first

    with pipeline.database.engine.begin() as conn:  # both were sent three days ago
        conn.execute(sa.update(notifications).values(sent_at=now - timedelta(hours=73)))
    pipeline.deliveries()
    assert deliveries.due_for_poll(utcnow() + timedelta(hours=1)) == []
    assert {m["status"] for m in pipeline.twilio.messages()} == {"sent"}
    polls_before = len(pipeline.twilio.api_requests())
    pipeline.deliveries()
    assert len(pipeline.twilio.api_requests()) == polls_before


def test_quiet_hours_that_began_while_the_run_waited_hold_the_message(pipeline: Pipeline) -> None:
    _supplier_invoice(pipeline)
    pipeline.plan_unsent()  # planned for now (the rule has no quiet hours yet), the first attempt failed
    now = utcnow()
    quiet = f'quiet_hours: {{start: "{now - timedelta(hours=1):%H:%M}", end: "{now + timedelta(hours=1):%H:%M}"}}'
    pipeline.rules_file.write_text(TEST_RULES.replace(
        "    recipients: [ap_team]\n", f"    recipients: [ap_team]\n    {quiet}\n", 1))

    pipeline.notify()  # the run starts inside the quiet hours that began after planning

    assert pipeline.twilio.messages() == []
    held = pipeline.ledger().due(now + timedelta(hours=2))
    assert len(held) == 2 and all(n.failures == 1 and n.next_attempt_at > now + timedelta(minutes=50)
                                  for n in held)


def test_an_alert_that_cannot_be_planned_does_not_hold_up_the_others(pipeline: Pipeline) -> None:
    alerts = pipeline.alerts()
    broken = {"DocNum": 1, "DocTotal": "not a number", "CardName": "X", "DocCurrency": "EUR"}  # {DocTotal:,.2f}
    alerts.record("ap-new-supplier-invoice", "purchase_invoice_received",
                  [("ap-new-supplier-invoice:1:2026-11-25", "PurchaseInvoices 1", broken)])
    _supplier_invoice(pipeline)
    pipeline.detect()

    plan = pipeline.evaluate().asset_materializations_for_node("alerts__notification_plan")[0].metadata
    assert plan["not_planned"].value == 1 and "cannot render template" in plan["not_planned_alerts"].value
    pipeline.notify()
    assert len(_sms_to(pipeline, DANA)) == 1 and len(_sms_to(pipeline, RAY)) == 1  # the valid alert went out
    assert [a.alert_id for a in alerts.unplanned()] == ["ap-new-supplier-invoice:1:2026-11-25"]


def test_stored_records_stream_from_postgres_instead_of_loading_whole(pipeline: Pipeline) -> None:
    snapshots = pipeline.snapshots()
    snapshots.upsert("Invoices", "DocEntry", ({"DocEntry": n, "DocumentStatus": "bost_Open", "Comments": "x" * 200}
                                              for n in range(3000)))
    rows = snapshots.iter_entity("Invoices", open_only=True)
    next(rows)  # the first row is here; the rest must still be on the server
    with pipeline.database.engine.connect() as other:
        fetching = other.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'FETCH %'"))
    rows.close()
    assert fetching == 1  # a server-side cursor, read 500 rows at a time
