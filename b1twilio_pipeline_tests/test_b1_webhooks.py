"""B1 webhooks, the fast path: the B1 simulator posts its changes to the receiver's /b1/events (Basic
authentication, batches, retries with the same event ids), the receiver keeps each event id once, and
`b1_webhook_sensor` asks for one change run that reads exactly the named documents, by key. The poll
after it finds nothing new, so nothing is sent twice. `b1twilio setup-b1-webhooks` subscribes B1
idempotently and says in one line when this B1 cannot."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.webhook_inbox import WebhookInbox
from b1twilio_pipeline.cli import main
from b1twilio_pipeline.core.database import engine_for
from b1twilio_pipeline.core.schema import b1_events
from b1twilio_pipeline.definitions import build_definitions
from b1twilio_pipeline.notifications.b1_events import MAX_BATCH_BYTES, B1Events
from b1twilio_pipeline.notifications.b1_webhook_setup import setup_b1_webhooks
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.public_urls import B1_EVENTS_PATH, STATUS_PATH, join
from b1twilio_pipeline.notifications.receiver import create_app
from b1twilio_pipeline.notifications.receiver_server import start_background
from b1twilio_pipeline_tests.fixtures_pipeline import PipelineFactory
from b1twilio_sim.deployment import free_port
from b1twilio_sim.sap_b1 import SapB1Simulator
from b1twilio_sim.twilio import DEMO_AUTH_TOKEN

pytestmark = pytest.mark.postgres

USER, PASSWORD = "b1-webhooks", "correct horse battery staple"
AP_PHONES = {"+15005550101", "+15005550102"}  # ap_team of the test rules: the supplier invoice rule texts them


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def event(event_id: str, kind: str = "sap.b1.PurchaseInvoices.Created.v1", **data: object) -> dict[str, object]:
    return {"id": event_id, "type": kind, "subject": "PurchaseInvoices(1)", "time": "2026-11-24T09:30:00Z",
            "data": data or {"DocEntry": 1}}


Receiver = Callable[..., str]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Start the receiver (the real ASGI app) for a store; returns its base URL, the public URL B1 calls."""
    stops: list[Callable[[], None]] = []

    def start(engine: sa.Engine, user: str | None = USER, password: str | None = PASSWORD) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        app = create_app(auth_token=DEMO_AUTH_TOKEN, status_url=join(url, STATUS_PATH), sink=DeliveryLog(engine),
                         b1_events=B1Events(WebhookInbox(engine), user, password))
        stops.append(start_background(app, port=port)[1])
        return url

    yield start
    for stop in stops:
        stop()


def stored(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(b1_events).order_by(b1_events.c.event_id)))


def test_only_the_configured_basic_credentials_may_post_and_nothing_else_is_stored(
        pg_store_url: str, receiver: Receiver) -> None:
    engine = engine_for(pg_store_url)
    url = join(receiver(engine), B1_EVENTS_PATH)
    batch = [event("e1")]
    refused = [
        httpx.post(url, json=batch),
        httpx.post(url, json=batch, headers=basic(USER, "wrong")),
        httpx.post(url, json=batch, headers=basic("someone", PASSWORD)),
        httpx.post(url, json=batch, headers={"Authorization": "Bearer " + PASSWORD}),
        httpx.post(url, json=batch, headers={"Authorization": "Basic not-base64!"}),
        httpx.post(url, json=batch, headers=basic(USER, PASSWORD + ":")),
    ]
    off = httpx.post(join(receiver(engine, None, None), B1_EVENTS_PATH), json=batch, headers=basic(USER, PASSWORD))

    assert [answer.status_code for answer in refused] == [401] * len(refused)
    assert refused[0].headers["www-authenticate"].startswith("Basic")
    assert PASSWORD not in refused[1].text
    assert off.status_code == 404 and "set B1_WEBHOOK_USERNAME and B1_WEBHOOK_PASSWORD" in off.text
    assert stored(engine) == []


def test_unknown_types_are_ignored_malformed_events_skipped_and_big_bodies_refused(
        pg_store_url: str, receiver: Receiver) -> None:
    engine = engine_for(pg_store_url)
    url, auth = join(receiver(engine), B1_EVENTS_PATH), basic(USER, PASSWORD)
    batch = [
        event("known", DocEntry=7),
        event("item", "sap.b1.Items.Updated.v1", ItemCode="A'001"),
        event("partner", "sap.b1.BusinessPartners.Created.v1", CardCode="C1"),  # an entity set we do not read
        event("deleted", "sap.b1.PurchaseInvoices.Deleted.v1", DocEntry=8),  # nothing left to read
        event("odd", "sap.b1.PurchaseInvoices.Created.v2", DocEntry=9),
        event("text-key", DocEntry="7"),
        event("bool-key", DocEntry=True),
        event("too-big-key", DocEntry=2**40),
        event("long-code", "sap.b1.Items.Updated.v1", ItemCode="A" * 51),
        event("x" * 101, DocEntry=10),
        {"id": 5, "type": "sap.b1.PurchaseInvoices.Created.v1", "data": {"DocEntry": 11}},
        "not an event",
    ]

    answer = httpx.post(url, json=batch, headers=auth)
    oversized = httpx.post(url, content=b"[" + b" " * MAX_BATCH_BYTES + b"]", headers=auth)
    not_a_batch = [httpx.post(url, content=body, headers=auth)
                   for body in (b"{}", b"nonsense", b"[" * 100_000 + b"]" * 100_000)]

    assert answer.status_code == 200
    assert answer.json() == {"stored": 2, "repeated": 0, "ignored": 3, "malformed": 7}
    assert [(row.event_id, row.entity, row.record_key) for row in stored(engine)] == [
        ("item", "Items", "A'001"), ("known", "PurchaseInvoices", "7")]
    assert oversized.status_code == 413
    assert [reply.status_code for reply in not_a_batch] == [400, 400, 400]
    assert len(stored(engine)) == 2


def test_setup_is_idempotent_the_simulator_posts_batches_with_basic_auth_and_retries_with_the_same_ids(
        sap_sim_factory: Callable[..., SapB1Simulator], pg_store_url: str, receiver: Receiver,
        rules_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sap = sap_sim_factory(seed=False)
    engine = engine_for(pg_store_url)
    public_url = receiver(engine)
    for name, value in {"B1_SERVICE_LAYER_URL": sap.base_url, "B1_COMPANY_DB": sap.company_db,
                        "B1_USERNAME": sap.username, "B1_PASSWORD": sap.password, "B1TWILIO_CONFIG": str(rules_file),
                        "B1TWILIO_PUBLIC_URL": public_url, "B1_WEBHOOK_USERNAME": USER,
                        "B1_WEBHOOK_PASSWORD": "an old password"}.items():
        monkeypatch.setenv(name, value)

    def setup() -> tuple[int, str, str]:
        status = main(["setup-b1-webhooks"])
        out, err = capsys.readouterr()
        return status, out, err

    created = setup()
    invoices = [sap.add_document("PurchaseInvoices", {"CardCode": "V10000"}) for _ in range(3)]
    for _ in range(200):  # until the first post, refused: B1 holds the old password
        if sap.webhooks.deliveries:
            break
        sap.webhooks.wait_idle(0.05)
    monkeypatch.setenv("B1_WEBHOOK_PASSWORD", PASSWORD)
    updated = setup()  # the rotated password reaches B1's subscription: the next retry is accepted
    assert sap.webhooks.wait_idle(30)
    [subscription] = httpx.get(f"{sap.url}/_admin/webhooks").json()["subscriptions"]
    httpx.post(f"{sap.url}/_admin/webhooks", json={"support": "absent"})
    too_old = setup()
    httpx.post(f"{sap.url}/_admin/webhooks", json={"support": "disabled"})
    not_enabled = setup()

    assert created[0] == 0 and " created: " in created[1] and "PurchaseInvoices" in created[1]
    assert updated[0] == 0 and " updated: " in updated[1] and created[1].count("\n") == 1
    assert subscription["WebhookURL"] == join(public_url, B1_EVENTS_PATH)
    assert {"BusinessObject": "Items", "TransactionType": "Updated"} in subscription["EventCollection"]
    first, *_, last = sap.webhooks.deliveries
    assert (first["status"], last["status"]) == (401, 200)
    assert first["events"] == last["events"] and len(first["events"]) == 3  # one batch, retried unchanged
    rows = stored(engine)
    assert sorted(row.event_id for row in rows) == sorted(e["id"] for e in first["events"])
    assert sorted(row.record_key for row in rows) == sorted(str(i["DocEntry"]) for i in invoices)
    for status, out, err in (too_old, not_enabled):
        assert (status, out) == (2, "") and err.startswith("error: ") and err.count("\n") == 1, err
        assert PASSWORD not in err
    assert "10.0 FP 2602" in too_old[2] and "polling keeps" in too_old[2]
    assert "-21100" in not_enabled[2] and "enable webhooks for company" in not_enabled[2]


def _b1_reads(sap: SapB1Simulator) -> list[tuple[str, str]]:
    """(entity set, $filter) of every read the pipeline made of B1 since the log was reset."""
    reads = []
    for entry in sap.requests:
        parts = urlsplit(entry.path)
        if entry.method == "GET":
            reads.append((parts.path.rsplit("/", 1)[1], parse_qs(parts.query).get("$filter", [""])[0]))
    return reads


def test_a_webhook_reads_exactly_its_document_at_once_and_the_poll_sends_nothing_more(
        pipeline_factory: PipelineFactory, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1_WEBHOOK_USERNAME", USER)
    monkeypatch.setenv("B1_WEBHOOK_PASSWORD", PASSWORD)
    pipeline = pipeline_factory()
    sensor = pipeline.defs.resolve_sensor_def("b1_webhook_sensor")
    public_url = receiver(pipeline.database.engine)
    with SapB1Session(pipeline.sap.base_url, pipeline.sap.company_db, pipeline.sap.username,
                      pipeline.sap.password) as session:
        setup_b1_webhooks(session, load_rules(pipeline.rules_file), public_url, USER, PASSWORD)
    pipeline.sap.reset_requests()

    invoice = pipeline.sap.add_document("PurchaseInvoices", {"CardCode": "V10000", "CardName": "Acme"})
    assert pipeline.sap.webhooks.wait_idle(10)
    [posted] = pipeline.sap.webhooks.deliveries
    tick = pipeline.tick("b1_webhook_sensor")
    replay = httpx.post(join(public_url, B1_EVENTS_PATH), json=posted["events"], headers=basic(USER, PASSWORD))
    again = pipeline.tick("b1_webhook_sensor")  # after B1 replayed the batch
    [request] = tick.run_requests
    run = pipeline.defs.resolve_job_def("b1_change_job").execute_in_process(
        instance=pipeline.instance, partition_key=request.partition_key, asset_selection=request.asset_selection,
        run_config=request.run_config, tags={**request.tags, "dagster/run_key": request.run_key})
    pipeline.notify()
    reads = _b1_reads(pipeline.sap)
    polls = pipeline.flow()  # the poll: B1 and the store agree, so no run
    texted = [m for m in pipeline.twilio.messages() if m["to"] in AP_PHONES]

    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 3
    assert replay.json()["repeated"] == 1 and not again.run_requests  # B1's replay is processed once
    assert request.run_key.startswith("webhook:") and request.tags["b1twilio/trigger"] == "webhook"
    assert run.success
    assert reads == [("PurchaseInvoices", f"DocEntry eq {invoice['DocEntry']}")]  # that one document, by key
    assert {m["to"] for m in texted} == AP_PHONES and len(texted) == 2
    assert polls == [] and len(pipeline.twilio.messages()) == 2  # the poll read and sent nothing more


def test_without_webhook_credentials_the_sensor_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B1_WEBHOOK_USERNAME", raising=False)
    sensor = build_definitions().resolve_sensor_def("b1_webhook_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_with_the_webhook_endpoint_down_polling_delivers_everything_once(
        pipeline_factory: PipelineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1_WEBHOOK_USERNAME", USER)
    monkeypatch.setenv("B1_WEBHOOK_PASSWORD", PASSWORD)
    pipeline = pipeline_factory()
    down = f"http://127.0.0.1:{free_port()}"  # subscribed, but no receiver listens there
    with SapB1Session(pipeline.sap.base_url, pipeline.sap.company_db, pipeline.sap.username,
                      pipeline.sap.password) as session:
        setup_b1_webhooks(session, load_rules(pipeline.rules_file), down, USER, PASSWORD)

    invoices = [pipeline.sap.add_document("PurchaseInvoices", {"CardCode": "V10000", "CardName": "Acme"})
                for _ in range(2)]
    quiet = pipeline.tick("b1_webhook_sensor")  # B1's posts went nowhere: nothing arrived
    first = pipeline.flow()  # the poll, the source of truth
    second = pipeline.flow()
    texted = [m for m in pipeline.twilio.messages() if m["to"] in AP_PHONES]

    assert not quiet.run_requests and len(first) == 1 and second == []
    assert len(texted) == 4
    for invoice in invoices:  # each invoice to each person once
        assert sorted(m["to"] for m in texted if f" {invoice['DocNum']} " in m["body"]) == sorted(AP_PHONES)
