"""Loud when blind: each condition that keeps the pipeline from alerting is caused for real (through the
simulators' admin APIs over HTTP, or runs that do not start), and the admins group hears exactly once when
it is reported and once when it is over, while its asset check goes red, then green.

Time moves by moving the recorded moments back (milestones, ledger due times), never by sleeping; sensors
tick as the daemon ticks them, their check evaluations reported as the daemon reports them.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.b1.errors import SapB1AuthError, SapB1Unavailable
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.ledger import PlannedNotification
from b1twilio_pipeline.notifications.self_monitoring_checks import SERVICE_LAYER_KEY
from b1twilio_pipeline.notifications.send import ADMIN_RULE, NOTIFICATIONS_KEY
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline, PipelineFactory

pytestmark = pytest.mark.postgres

ADMIN, DANA = "+15005550199", "+15005550101"
RULES = f"""
timezone: UTC
recipients:
  admins: [{{name: Ops, phone: "{ADMIN}"}}]
  ap_team: [{{name: Dana, phone: "{DANA}"}}]
  warehouse: [{{name: Lee, phone: "+15005550104"}}]
rules:
  - id: ap
    kind: purchase_invoice_received
    channel: sms
    recipients: [ap_team]
    template: "New supplier invoice {{DocNum}} from {{CardName}}"
  - id: reorder
    kind: stock_below_reorder
    channel: sms
    warehouses: ["01"]
    recipients: [warehouse]
    template: "Stock of {{ItemCode}} is {{InStock:g}}"
"""
BLIND_AFTER = 15  # B1TWILIO_BLIND_AFTER_MINUTES's default
INVOICE = {"CardCode": "V10000", "CardName": "Acme Components GmbH",
           "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]}


@pytest.fixture
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    return pipeline_factory(rules_text=RULES)


def _admin(simulator_url: str, operation: str, payload: dict) -> None:
    """A simulator's admin API, as a test harness in another process would call it."""
    httpx.post(f"{simulator_url}/_admin/{operation}", json=payload, timeout=10).raise_for_status()


def _minutes_pass(pipeline: Pipeline, minutes: int) -> None:
    """Time moves on: every recorded moment, and when each planned notification falls due, moves back."""
    with pipeline.database.engine.begin() as conn:
        conn.execute(sa.text("UPDATE b1tw_milestones SET at = at - :shift"), {"shift": timedelta(minutes=minutes)})
        conn.execute(sa.text("UPDATE b1tw_notifications SET next_attempt_at = next_attempt_at - :shift, "
                             "not_before = not_before - :shift WHERE status = 'planned'"),
                     {"shift": timedelta(minutes=minutes)})


def _watch(pipeline: Pipeline, *, runs: bool = True, ticks: int = 1) -> None:
    """Ticks of the notification sensor as the daemon makes them: check evaluations reported, and the runs it
    asks for executed (`runs=False`: the runs do not start)."""
    for _ in range(ticks):
        result = pipeline.tick("notification_sensor")
        for event in result.asset_events:
            pipeline.instance.report_runless_asset_event(event)
        for request in (result.run_requests or []) if runs else []:
            job = pipeline.defs.resolve_job_def(request.job_name or "notify_job")
            job.execute_in_process(run_config=request.run_config, instance=pipeline.instance, raise_on_error=False,
                                   tags={**request.tags, "dagster/run_key": request.run_key})


def _texts_to(pipeline: Pipeline, number: str) -> list[str]:
    return [m["body"] for m in pipeline.twilio.messages() if m["to"] == number]


def _evaluations(pipeline: Pipeline, asset_key: dg.AssetKey, name: str) -> list[bool]:
    """Whether each evaluation of a check passed, oldest first."""
    records = pipeline.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(asset_key, name), limit=50)
    return [record.event.asset_check_evaluation.passed for record in reversed(records)
            if record.event and record.event.asset_check_evaluation]


def _service_layer_checks(pipeline: Pipeline) -> dict[str, list[bool]]:
    return {name: _evaluations(pipeline, SERVICE_LAYER_KEY, name)
            for name in ("b1_reachable", "polled_item_stock", "polled_purchase_invoices")}


def test_b1_not_answering_is_told_once_and_its_end_once(pipeline: Pipeline) -> None:
    before = _service_layer_checks(pipeline)
    pipeline.tick("b1_change_sensor")  # B1 answers
    _admin(pipeline.sap.url, "faults", {"fail_all": True, "fail_status": 503})
    with pytest.raises(SapB1Unavailable):
        pipeline.tick("b1_change_sensor")
    _watch(pipeline)  # not answering for seconds: nobody is told yet
    quiet_at_first = _texts_to(pipeline, ADMIN)
    _minutes_pass(pipeline, BLIND_AFTER + 1)
    with pytest.raises(SapB1Unavailable):
        pipeline.tick("b1_change_sensor")
    _watch(pipeline, ticks=3)  # the incident opens, its alert goes out, and nothing more
    told = _texts_to(pipeline, ADMIN)
    _admin(pipeline.sap.url, "faults", {"fail_all": False})
    pipeline.tick("b1_change_sensor")
    _watch(pipeline, ticks=3)

    assert quiet_at_first == []
    assert len(told) == 1 and told[0].startswith("b1twilio: SAP B1 has not answered since")
    texts = _texts_to(pipeline, ADMIN)
    assert len(texts) == 2 and texts[1].startswith("b1twilio: SAP B1 answers again")
    checks = {name: found[len(before[name]):] for name, found in _service_layer_checks(pipeline).items()}
    # One incident explains every entity: no message and no red check per entity.
    assert checks == {"b1_reachable": [False, True], "polled_item_stock": [], "polled_purchase_invoices": []}


def test_b1_refusing_the_login_is_told_once_and_its_end_once(pipeline: Pipeline) -> None:
    before = _service_layer_checks(pipeline)
    pipeline.tick("b1_change_sensor")
    password = pipeline.sap.password
    _admin(pipeline.sap.url, "password", {"password": "changed-by-the-b1-admin"})  # sessions end too
    with pytest.raises(SapB1AuthError):
        pipeline.tick("b1_change_sensor")
    _minutes_pass(pipeline, BLIND_AFTER + 1)
    with pytest.raises(SapB1AuthError):
        pipeline.tick("b1_change_sensor")
    _watch(pipeline, ticks=3)
    told = _texts_to(pipeline, ADMIN)
    _admin(pipeline.sap.url, "password", {"password": password})  # the admin sets it back
    pipeline.tick("b1_change_sensor")
    _watch(pipeline, ticks=3)

    assert len(told) == 1 and "refusing the login" in told[0]
    texts = _texts_to(pipeline, ADMIN)
    assert len(texts) == 2 and texts[1].startswith("b1twilio: SAP B1 answers again")
    checks = {name: found[len(before[name]):] for name, found in _service_layer_checks(pipeline).items()}
    assert checks["b1_reachable"] == [False, True]


def test_an_entity_b1_will_not_answer_about_is_told_once_and_the_others_go_on(pipeline: Pipeline) -> None:
    before = _service_layer_checks(pipeline)
    pipeline.tick("b1_change_sensor")
    _admin(pipeline.sap.url, "faults", {"fail_resource": "Items", "fail_status": 400})
    pipeline.tick("b1_change_sensor")
    _minutes_pass(pipeline, BLIND_AFTER + 1)
    pipeline.sap.add_document("PurchaseInvoices", INVOICE)
    still_reading = pipeline.tick("b1_change_sensor")  # Items refused again, the invoice is seen
    _watch(pipeline, ticks=3)
    told = _texts_to(pipeline, ADMIN)
    _admin(pipeline.sap.url, "faults", {"fail_resource": ""})
    pipeline.tick("b1_change_sensor")
    _watch(pipeline, ticks=3)

    assert still_reading.run_requests
    assert len(told) == 1 and "has not answered the question about Items since" in told[0]
    texts = _texts_to(pipeline, ADMIN)
    assert len(texts) == 2 and texts[1].startswith("b1twilio: Items is polled again")
    checks = {name: found[len(before[name]):] for name, found in _service_layer_checks(pipeline).items()}
    assert checks == {"b1_reachable": [], "polled_item_stock": [False, True], "polled_purchase_invoices": []}


def test_twilio_refusing_the_credentials_is_shown_and_told_when_it_is_over(pipeline: Pipeline) -> None:
    before = _evaluations(pipeline, NOTIFICATIONS_KEY, "twilio_accepts_credentials")
    token = pipeline.twilio.auth_token
    _admin(pipeline.twilio.url, "credentials", {"auth_token": "rotated-in-the-console"})
    pipeline.sap.add_document("PurchaseInvoices", INVOICE)
    pipeline.detect()  # the invoice is read and its SMS planned; Twilio refuses to send it
    _watch(pipeline, ticks=2)
    red = _evaluations(pipeline, NOTIFICATIONS_KEY, "twilio_accepts_credentials")[len(before):]
    planned_meanwhile = [n for n in pipeline.ledger().due(utcnow() + timedelta(days=1)) if n.rule_id == ADMIN_RULE]
    _admin(pipeline.twilio.url, "credentials", {"auth_token": token})  # the new token is in place
    _minutes_pass(pipeline, 1)  # the refused SMS's backoff (30 s) is over
    _watch(pipeline, ticks=3)  # Dana's SMS goes out, the incident closes, the admins hear of it

    assert red == [False] and planned_meanwhile == []  # no SMS can tell of it while it lasts
    assert len(_texts_to(pipeline, DANA)) == 1
    [told] = _texts_to(pipeline, ADMIN)
    assert told.startswith("b1twilio: Twilio accepts the pipeline's credentials again; it refused them from")
    assert _evaluations(pipeline, NOTIFICATIONS_KEY, "twilio_accepts_credentials")[len(before):] == [False, True]


def test_notifications_the_runs_do_not_take_are_told_once_and_once_when_they_go_out(pipeline: Pipeline) -> None:
    before = _evaluations(pipeline, NOTIFICATIONS_KEY, "no_stuck_notifications")
    dana = load_rules(pipeline.rules_file).recipients["ap_team"][0]
    pipeline.ledger().plan([PlannedNotification(
        notification_id="ap|PurchaseInvoices 7|dana", alert_id="ap|PurchaseInvoices 7", rule_id="ap",
        document="PurchaseInvoices 7", recipient=dana.key, recipient_name=dana.name, recipient_masked=dana.masked,
        channel="sms", body="New supplier invoice 7 from Acme Components GmbH", not_before=utcnow())])
    _watch(pipeline, runs=False)  # due: the sensor asks for a run, which never starts
    _minutes_pass(pipeline, BLIND_AFTER + 1)
    _watch(pipeline, runs=False, ticks=2)  # stuck: the incident opens once, its alert is planned once
    planned = [n for n in pipeline.ledger().due(utcnow()) if n.rule_id == ADMIN_RULE]
    _watch(pipeline, ticks=3)  # the runs start: the invoice and the alert go out, then the recovery

    [alert] = planned
    assert alert.body.startswith("b1twilio: 1 notification(s) due since") and "have not gone out" in alert.body
    assert len(_texts_to(pipeline, DANA)) == 1
    texts = _texts_to(pipeline, ADMIN)
    assert len(texts) == 2 and texts[0].startswith(alert.body)
    assert texts[1].startswith("b1twilio: Notifications go out again")
    assert _evaluations(pipeline, NOTIFICATIONS_KEY, "no_stuck_notifications")[len(before):] == [False, True]
