"""Acknowledgements end to end: the Twilio simulator's handset replies to an SMS or presses 1 during a call,
the simulator posts the signed webhook to the real receiver, and the pipeline records who took the alert on
once (ledger, Dagster, B1 audit table) and stops escalating it. Forged, replayed and oversized inbound
requests change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.core.schema import acknowledgements, alert_events, digest_items
from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY
from b1twilio_pipeline.notifications.inbound import Inbound
from b1twilio_pipeline.notifications.public_urls import SMS_PATH, STATUS_PATH, VOICE_PATH, join
from b1twilio_pipeline.notifications.receiver import MAX_BODY_BYTES, create_app
from b1twilio_pipeline.notifications.receiver_server import start_background
from b1twilio_pipeline.notifications.sms_length import segments
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline, PipelineFactory
from b1twilio_sim.twilio import DEMO_AUTH_TOKEN

pytestmark = pytest.mark.postgres

BUYER = "+15005550105"  # Kim: the rule po-changed-escalating texts, then calls if the SMS fails
SAM = "+15005550103"  # overdue-30 calls Sam


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def acking_factory(pipeline_factory: PipelineFactory) -> Iterator[Callable[..., Pipeline]]:
    """Pipelines with the receiver listening for status callbacks, SMS replies and keypresses, and the
    Twilio simulator's number sending replies there."""
    stops: list[Callable[[], None]] = []

    def build(rules_text: str | None = None) -> Pipeline:
        port = _free_port()
        public_url = f"http://127.0.0.1:{port}"
        pipeline = pipeline_factory(public_url=public_url, rules_text=rules_text)
        pipeline.heard = []  # what the receiver reports to Dagster: each new acknowledgement once
        inbound = Inbound(pipeline.database.engine, lambda: load_rules(pipeline.rules_file),
                          lambda ack, n: pipeline.heard.append((ack.recipient_name, n.document)))
        app = create_app(auth_token=DEMO_AUTH_TOKEN, status_url=join(public_url, STATUS_PATH),
                         sink=pipeline.delivery_log(), public_url=public_url, inbound=inbound)
        stops.append(start_background(app, port=port)[1])
        pipeline.twilio.set_sms_url(join(public_url, SMS_PATH))
        pipeline.public_url = public_url
        return pipeline

    yield build
    for stop in stops:
        stop()


@pytest.fixture
def acking(acking_factory: Callable[..., Pipeline]) -> Pipeline:
    return acking_factory()


def _acks(pipeline: Pipeline) -> list[sa.Row]:
    with pipeline.database.engine.connect() as conn:
        return list(conn.execute(sa.select(acknowledgements)))


def _po_with_failing_sms(pipeline: Pipeline) -> None:
    pipeline.twilio.set_rules({BUYER: {"message": "undelivered", "error_code": 30003}})
    pipeline.sap.add_document("PurchaseOrders", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 3, "Price": 10}]})
    pipeline.flow()


def test_an_sms_reply_with_the_code_acknowledges_once_and_stops_the_escalation(acking: Pipeline) -> None:
    _po_with_failing_sms(acking)
    [sms] = acking.twilio.messages()
    code = sms["body"].rsplit("Reply ", 1)[1].split()[0]
    assert sms["body"].endswith(f"Reply {code} to acknowledge.")

    answer = acking.twilio.reply(BUYER, f" {code.lower()} ")  # case and spaces do not matter
    replay = acking.twilio.reply(BUYER, code)
    acking.twilio.advance()  # the SMS ends undelivered: without the acknowledgement, a call would follow
    acking.deliveries()
    runs = acking.notify()
    acking.deliveries()

    assert "Acknowledged: PurchaseOrders" in answer["twiml"] and "Thank you, Kim" in answer["twiml"]
    assert "Acknowledged: PurchaseOrders" in replay["twiml"]  # the same answer; recorded once (below)
    assert [(row.recipient_name, row.via) for row in _acks(acking)] == [("Kim", "sms-reply")]
    assert [name for name, _document in acking.heard] == ["Kim"]  # the replay is not reported again
    assert acking.twilio.calls() == [] and runs == []
    receipts = [row for row in acking.sap.udt_rows("B1TW_AUDIT") if row["U_Status"] == "acknowledged"]
    assert len(receipts) == 1 and receipts[0]["U_MsgSid"] == sms["sid"]
    assert BUYER[1:] not in str(receipts) and "*" in receipts[0]["U_Recipient"]
    event = acking.instance.get_latest_materialization_event(DELIVERIES_KEY)
    table = event.asset_materialization.metadata["who_was_told_what"]
    assert [row.data["acknowledged"].split(",")[0] for row in table.records] == [f"Kim {mask_phone(BUYER)}"]


def test_an_escalation_planned_before_the_acknowledgement_is_not_sent(acking: Pipeline) -> None:
    _po_with_failing_sms(acking)
    acking.twilio.advance()
    acking.deliveries()  # undelivered: the voice call to Kim is planned
    acking.twilio.reply(BUYER, "OK")  # and then Kim replies: the SMS reached her after all
    runs = acking.notify()

    assert acking.twilio.calls() == []
    [skipped] = acking.notifications(runs)
    assert skipped["channel"] == "voice" and skipped["outcome"] == "skipped"
    assert "Kim" in skipped["error"] and "acknowledged the alert" in skipped["error"]


def test_ok_takes_the_newest_alert_and_anything_else_gets_help(acking: Pipeline) -> None:
    _po_with_failing_sms(acking)
    help_answer = acking.twilio.reply(BUYER, "what is this?")
    stop = acking.twilio.reply(BUYER, "STOP")  # Twilio's keyword: Twilio answers it, we do not
    stranger = _post_signed(join(acking.public_url, SMS_PATH), {
        "MessageSid": "SM" + "c" * 32, "AccountSid": acking.twilio.account_sid, "From": "+15005550199",
        "To": acking.twilio.messages()[0]["from"], "Body": "OK"})
    assert _acks(acking) == []
    ok = acking.twilio.reply(BUYER, "ok")

    assert "Reply with the code" in help_answer["twiml"]
    assert "<Message>" not in stop["twiml"]
    assert stranger.status_code == 200 and "no alert to acknowledge" in stranger.text
    assert "Acknowledged" in ok["twiml"] and len(_acks(acking)) == 1


def _overdue_invoice(pipeline: Pipeline, days: int) -> dict:
    """An invoice `days` past due, last changed long ago: the state refresh finds it."""
    due = pipeline.sap.clock.now().date() - timedelta(days=days)
    old = (due - timedelta(days=30)).isoformat()
    return pipeline.sap.add_document("Invoices", {
        "CardCode": "C20000", "CardName": "Northwind Traders", "DocDate": old, "DocDueDate": due.isoformat(),
        "UpdateDate": old, "UpdateTime": "09:00:00", "DocTotal": 1000.0, "PaidToDate": 0.0})


def test_pressing_1_during_the_call_acknowledges_it(acking: Pipeline) -> None:
    acking.twilio.set_rules({SAM: {"press": "1"}})
    invoice = _overdue_invoice(acking, 40)
    acking.refresh_state()
    acking.evaluate()
    acking.notify()
    acking.twilio.advance()  # answered: the handset presses 1
    acking.deliveries()

    [call] = [c for c in acking.twilio.calls() if c["to"] == SAM]
    [twiml] = [parse_qs(r.body.decode())["Twiml"][0] for r in acking.twilio.api_requests()
               if r.path.endswith("/Calls.json")]
    assert f'action="{acking.public_url}{VOICE_PATH}"' in twiml and "Press 1 to acknowledge." in twiml
    assert [(row.recipient_name, row.via, row.via_sid) for row in _acks(acking)] == [("Sam", "keypress", call["sid"])]
    receipts = [row for row in acking.sap.udt_rows("B1TW_AUDIT") if row["U_Status"] == "acknowledged"]
    assert [row["U_MsgSid"] for row in receipts] == [call["sid"]]
    assert str(invoice["DocNum"]) in receipts[0]["U_DocRef"]


def _signed(url: str, params: dict[str, str], token: str = DEMO_AUTH_TOKEN) -> str:
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _post_signed(url: str, params: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=urlencode(params), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": _signed(url, params)})


def test_forged_changed_and_oversized_inbound_requests_change_nothing(acking: Pipeline) -> None:
    _po_with_failing_sms(acking)
    [sms] = acking.twilio.messages()
    code = sms["body"].rsplit("Reply ", 1)[1].split()[0]
    url = join(acking.public_url, SMS_PATH)
    genuine = {"MessageSid": "SM" + "a" * 32, "AccountSid": acking.twilio.account_sid, "From": BUYER,
               "To": sms["from"], "Body": "nothing to see"}
    signature = _signed(url, genuine)
    changed = {**genuine, "Body": code}  # replayed with another body: the signature no longer matches
    forged = _signed(url, changed, token="not-the-auth-token")
    oversized = {**changed, "Body": code + " " * MAX_BODY_BYTES}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    answers = [
        httpx.post(url, content=urlencode(changed), headers={**headers, "X-Twilio-Signature": signature}),
        httpx.post(url, content=urlencode(changed), headers={**headers, "X-Twilio-Signature": forged}),
        httpx.post(url, content=urlencode(changed), headers=headers),
        httpx.post(url, content=urlencode(oversized),
                   headers={**headers, "X-Twilio-Signature": _signed(url, oversized)}),
        httpx.post(join(acking.public_url, VOICE_PATH), content=urlencode({"CallSid": "CA" + "b" * 32, "Digits": "1"}),
                   headers={**headers, "X-Twilio-Signature": forged}),
    ]
    assert [answer.status_code for answer in answers] == [403, 403, 403, 413, 403]
    assert _acks(acking) == []


def test_an_acknowledged_overdue_invoice_is_not_reminded_again(acking: Pipeline) -> None:
    acking.rules_file.write_text(acking.rules_file.read_text().replace("renotify_every_days: 7",
                                                                       "renotify_every_days: 1"))
    taken, other = _overdue_invoice(acking, 40), _overdue_invoice(acking, 40)
    acking.refresh_state()
    acking.evaluate()
    acking.notify()
    calls = [c for c in acking.twilio.calls() if c["to"] == SAM]
    first = next(c for c in calls if str(taken["DocNum"]) in c["twiml"])  # the two calls went out at once
    pressed = acking.twilio.press(call_sid=first["sid"], digits="1")

    # A day more overdue (the due dates move back a day in B1): both are due a reminder, only the
    # invoice nobody acknowledged gets one.
    later = (acking.sap.clock.now().date() - timedelta(days=41)).isoformat()
    for invoice in (taken, other):
        acking.sap.update_document("Invoices", invoice["DocEntry"], {"DocDueDate": later})
    acking.refresh_state()
    acking.evaluate()
    acking.notify()

    assert "Acknowledged" in pressed["twiml"] and len(calls) == 2
    reminders = [c["twiml"] for c in acking.twilio.calls() if c["sid"] not in {call["sid"] for call in calls}]
    assert len(reminders) == 1 and str(other["DocNum"]) in reminders[0] and "41 days overdue" in reminders[0]


POLICY_RULES = """
timezone: UTC
recipients:
  on_call:
    - {name: Ada, phone: "+15005550107"}
    - {name: Bo, phone: "+15005550108"}
rules:
  - id: ap-invoice
    kind: purchase_invoice_received
    channel: sms
    recipients: [on_call]
    template: "New supplier invoice {DocNum} from {CardName}"
    escalation:
      - {after_minutes: 10, channel: voice}
      - {after_minutes: 20, to: next_recipient}
"""
ADA, BO = "+15005550107", "+15005550108"


def _minutes_pass(pipeline: Pipeline, minutes: int) -> None:
    """The clock moves on: what was due within `minutes` is due now (the ledger's times, moved back)."""
    with pipeline.database.engine.begin() as conn:
        conn.execute(sa.text("UPDATE b1tw_notifications SET next_attempt_at = next_attempt_at - :shift, "
                             "not_before = not_before - :shift WHERE status = 'planned'"),
                     {"shift": timedelta(minutes=minutes)})


def _invoice_with_policy(acking_factory: Callable[..., Pipeline]) -> Pipeline:
    pipeline = acking_factory(rules_text=POLICY_RULES)
    pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]})
    pipeline.flow()
    return pipeline


def test_an_unacknowledged_alert_climbs_its_escalation_policy(acking_factory: Callable[..., Pipeline]) -> None:
    pipeline = _invoice_with_policy(acking_factory)
    before = pipeline.notify()  # the steps are planned, not due
    _minutes_pass(pipeline, 10)
    pipeline.notify()
    after_10 = [(c["to"]) for c in pipeline.twilio.calls()]
    _minutes_pass(pipeline, 10)
    pipeline.notify()

    assert [m["to"] for m in pipeline.twilio.messages()] == [ADA, BO]  # Ada first, then Bo (next in line)
    assert before == [] and after_10 == [ADA]  # after 10 minutes: Ada by voice
    assert [c["to"] for c in pipeline.twilio.calls()] == [ADA]


def test_an_acknowledged_alert_stops_climbing(acking_factory: Callable[..., Pipeline]) -> None:
    pipeline = _invoice_with_policy(acking_factory)
    answer = pipeline.twilio.reply(ADA, "OK")
    _minutes_pass(pipeline, 30)
    runs = pipeline.notify()

    assert "Acknowledged" in answer["twiml"]
    assert [m["to"] for m in pipeline.twilio.messages() if m["direction"] == "outbound-api"] == [ADA]
    assert pipeline.twilio.calls() == []
    assert sorted(n["outcome"] for n in pipeline.notifications(runs)) == ["skipped", "skipped"]


DIGEST_RULES = """
timezone: UTC
recipients:
  ap_team:
    - {name: Dana, phone: "+15005550101"}
rules:
  - id: ap-digest
    kind: purchase_invoice_received
    channel: sms
    recipients: [ap_team]
    template: "{DocNum} {CardName} {DocTotal:,.2f} {DocCurrency}"
    digest: {every_minutes: 30, max_items: 5}
"""
DANA = "+15005550101"


def test_thirty_alerts_make_one_digest_sms_that_one_code_acknowledges(
        acking_factory: Callable[..., Pipeline]) -> None:
    pipeline = acking_factory(rules_text=DIGEST_RULES)
    numbers = [pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH",
        "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 10 + i}]})["DocNum"] for i in range(30)]
    pipeline.flow()  # gathered, not sent: the digest is due 30 minutes after its first alert
    early = pipeline.twilio.messages()
    _minutes_pass(pipeline, 30)
    pipeline.notify()
    [sms] = pipeline.twilio.messages()
    answer = pipeline.twilio.reply(DANA, sms["body"].rsplit("Reply ", 1)[1].split()[0])

    assert early == [] and sms["to"] == DANA
    assert sms["body"].startswith("30 alerts (ap-digest): ") and "; and 25 more. Reply " in sms["body"]
    listed_lines = sms["body"].split(": ", 1)[1].split("; and ")[0].split("; ")
    assert len(listed_lines) == 5 and len({int(line.split()[0]) for line in listed_lines} & set(numbers)) == 5
    assert segments(sms["body"]) <= 3
    with pipeline.database.engine.connect() as conn:  # every document accounted for, and acknowledged
        listed = conn.scalar(sa.select(sa.func.count()).select_from(digest_items))
        unplanned = conn.scalar(sa.select(sa.func.count()).select_from(alert_events)
                                .where(alert_events.c.planned.is_(False)))
    assert listed == 30 and unplanned == 0
    assert "Acknowledged: digest of ap-digest" in answer["twiml"] and len(_acks(pipeline)) == 30
