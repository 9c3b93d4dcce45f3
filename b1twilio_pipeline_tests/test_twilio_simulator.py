"""The Twilio simulator's HTTP contract: Twilio's shapes, auth, errors, lifecycles, callbacks, admin."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from b1twilio_pipeline.notifications.sms_length import segments
from b1twilio_pipeline_tests.fixtures_twilio import SIM_FROM_NUMBER, CallbackSink
from b1twilio_sim.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, TwilioSimulator

SPEC = Path(__file__).parent / "data" / "twilio" / "twilio_api_v2010.json"
TO = "+15558675310"
SM_SID = re.compile(r"^SM[0-9a-f]{32}$")
CA_SID = re.compile(r"^CA[0-9a-f]{32}$")


def api(sim: TwilioSimulator, path: str, *, auth: tuple[str, str] | None = None) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=sim.url, auth=auth or (sim.account_sid, sim.auth_token), timeout=5)
    return client, f"/2010-04-01/Accounts/{sim.account_sid}/{path}"


def send_message(sim: TwilioSimulator, **form: Any) -> httpx.Response:
    client, path = api(sim, "Messages.json")
    with client:
        form = {"To": TO, "From": SIM_FROM_NUMBER, "Body": "Invoice 42 arrived", **form}
        return client.post(path, data=form)


def spec_properties(schema: str) -> set[str]:
    if not SPEC.exists():
        pytest.skip("Twilio OpenAPI spec not available")
    return set(json.loads(SPEC.read_text())["components"]["schemas"][schema]["properties"])


@pytest.mark.parametrize(("body", "parts"), [
    ("€" * 80, "1"),  # an extension character is two septets: 160 fit in one SMS
    ("€" * 81, "2"),
    ("a" * 160, "1"),
    ("ü" * 70 + "ł", "2"),  # one character outside GSM-7: UCS-2, 70 units alone, 67 per part
    ("😀" * 35, "1"),  # beyond the BMP: two units each
    ("😀" * 36, "2"),
])
def test_segments_are_counted_as_twilio_bills_them(twilio_sim: TwilioSimulator, body: str, parts: str) -> None:
    message = send_message(twilio_sim, Body=body).json()
    assert message["num_segments"] == parts and segments(body) == int(parts)  # the product counts alike


def test_message_create_answers_twilio_shape(twilio_sim: TwilioSimulator) -> None:
    answer = send_message(twilio_sim)
    assert answer.status_code == 201
    message = answer.json()
    assert spec_properties("api.v2010.account.message") <= set(message)
    assert SM_SID.match(message["sid"])
    assert message["status"] == "queued"
    assert message["num_segments"] == "1" and message["num_media"] == "0"
    assert message["to"] == TO and message["from"] == SIM_FROM_NUMBER
    assert message["direction"] == "outbound-api" and message["error_code"] is None
    assert parsedate_to_datetime(message["date_created"]).utcoffset() is not None
    assert message["uri"] == f"/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages/{message['sid']}.json"


def test_messaging_service_message_is_accepted(twilio_sim: TwilioSimulator) -> None:
    service = "MG" + "0" * 32
    message = send_message(twilio_sim, From="", MessagingServiceSid=service).json()
    assert message["status"] == "accepted" and message["messaging_service_sid"] == service
    twilio_sim.advance()
    history = [step["status"] for step in twilio_sim.record(message["sid"])["status_history"]]
    assert history == ["accepted", "queued", "sent", "delivered"]


def test_call_create_answers_twilio_shape(twilio_sim: TwilioSimulator) -> None:
    client, path = api(twilio_sim, "Calls.json")
    with client:
        answer = client.post(path, data={"To": TO, "From": SIM_FROM_NUMBER, "Twiml": "<Response/>"})
    assert answer.status_code == 201
    call = answer.json()
    assert spec_properties("api.v2010.account.call") <= set(call)
    assert CA_SID.match(call["sid"]) and call["status"] == "queued"


@pytest.mark.parametrize("auth", [("AC" + "1" * 32, "x"), None])
def test_wrong_or_missing_auth_is_401_code_20003(twilio_sim: TwilioSimulator, auth: Any) -> None:
    path = f"{twilio_sim.url}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json"
    kwargs = {"auth": (twilio_sim.account_sid, "wrong-token")} if auth else {}
    answer = httpx.post(path, data={"To": TO, "From": SIM_FROM_NUMBER, "Body": "x"}, **kwargs)
    assert answer.status_code == 401
    assert answer.json()["code"] == 20003
    assert answer.json()["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert twilio_sim.messages() == []


def test_api_key_auth_and_foreign_account_path(twilio_sim: TwilioSimulator) -> None:
    key, secret = "SK" + "a" * 32, "key-secret"
    twilio_sim.api_keys[key] = secret
    client, path = api(twilio_sim, "Messages.json", auth=(key, secret))
    with client:
        assert client.get(path).status_code == 200
        other = client.get("/2010-04-01/Accounts/AC" + "2" * 32 + "/Messages.json")
    assert other.status_code == 403 and other.json()["code"] == 20003


@pytest.mark.parametrize(("to", "setup", "code"), [
    ("5551234", None, 21211),
    ("+15005550004", "opt_out", 21610),
    ("+15005550009", "reject", 21614),
])
def test_synchronous_recipient_errors(twilio_sim: TwilioSimulator, to: str, setup: str | None,
                                      code: int) -> None:
    if setup == "opt_out":
        twilio_sim.opt_out(to)
    if setup == "reject":
        twilio_sim.set_rules({to: {"reject": 21614}})
    answer = send_message(twilio_sim, To=to)
    assert answer.status_code == 400
    assert answer.json()["code"] == code and answer.json()["status"] == 400
    assert twilio_sim.messages() == []


def test_unknown_sid_is_404_code_20404(twilio_sim: TwilioSimulator) -> None:
    client, path = api(twilio_sim, "Messages/SM" + "0" * 32 + ".json")
    with client:
        answer = client.get(path)
    assert answer.status_code == 404 and answer.json()["code"] == 20404


def test_lifecycle_runs_in_background(twilio_sim: TwilioSimulator) -> None:
    sid = send_message(twilio_sim).json()["sid"]
    client, path = api(twilio_sim, f"Messages/{sid}.json")
    with client:
        for _ in range(200):
            if client.get(path).json()["status"] == "delivered":
                break
            threading.Event().wait(0.02)
        assert client.get(path).json()["status"] == "delivered"


def test_failure_rules_shape_lifecycles(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_rules({"+15005550009": {"message": "undelivered", "error_code": 30003},
                          "+15005550010": {"message": "failed"},
                          "+15005550011": {"call": "no-answer"}})
    undelivered = send_message(twilio_sim, To="+15005550009").json()["sid"]
    failed = send_message(twilio_sim, To="+15005550010").json()["sid"]
    client, path = api(twilio_sim, "Calls.json")
    with client:
        call = client.post(path, data={"To": "+15005550011", "From": SIM_FROM_NUMBER, "Url": "http://x/"})
    twilio_sim.advance()
    record = twilio_sim.record(undelivered)
    assert record["status"] == "undelivered" and record["error_code"] == 30003
    assert record["error_message"] == "Unreachable destination handset"
    assert twilio_sim.record(failed)["error_code"] == 30008
    call_record = twilio_sim.record(call.json()["sid"])
    assert [s["status"] for s in call_record["status_history"]] == ["queued", "ringing", "no-answer"]
    assert call_record["duration"] == "0"


def test_call_resource_goes_queued_ringing_in_progress_completed_never_initiated(
        twilio_sim: TwilioSimulator, callback_sink: CallbackSink) -> None:
    """`initiated` is a status callback event (CallStatus=initiated), never a status of the Call resource."""
    twilio_sim.set_auto_advance(False)
    client, path = api(twilio_sim, "Calls.json")
    with client:
        sid = client.post(path, data={"To": TO, "From": SIM_FROM_NUMBER, "Twiml": "<Response/>",
                                      "StatusCallback": callback_sink.url,
                                      "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"]},
                          ).json()["sid"]
        instance = path.replace("Calls.json", f"Calls/{sid}.json")
        seen = [client.get(instance).json()]
        while twilio_sim.tick():
            seen.append(client.get(instance).json())
    assert [call["status"] for call in seen] == ["queued", "ringing", "in-progress", "completed"]
    assert seen[0]["start_time"] is None and all(call["start_time"] for call in seen[1:])
    assert seen[1]["start_time"] == seen[-1]["start_time"]  # dialled once, when it started ringing
    assert twilio_sim.wait_callbacks()
    callbacks = [cb.params for cb in callback_sink.wait_for(4)]
    assert [(cb["CallStatus"], cb["SequenceNumber"]) for cb in callbacks] == [
        ("initiated", "0"), ("ringing", "1"), ("in-progress", "2"), ("completed", "3")]


def test_failed_call_is_dialled_then_failed(twilio_sim: TwilioSimulator, callback_sink: CallbackSink) -> None:
    twilio_sim.set_rules({"+15005550012": {"call": "failed", "error_code": 32009}})
    client, path = api(twilio_sim, "Calls.json")
    with client:
        sid = client.post(path, data={"To": "+15005550012", "From": SIM_FROM_NUMBER, "Url": "http://x/",
                                      "StatusCallback": callback_sink.url, "StatusCallbackEvent": "initiated"},
                          ).json()["sid"]
    twilio_sim.advance()
    call = twilio_sim.record(sid)
    assert [s["status"] for s in call["status_history"]] == ["queued", "failed"]
    assert call["start_time"] and call["end_time"] and call["duration"] == "0"
    callbacks = [cb.params for cb in callback_sink.wait_for(2)]
    assert [cb["CallStatus"] for cb in callbacks] == ["initiated", "failed"]
    assert callbacks[1]["ErrorCode"] == "32009"


def test_signed_message_callbacks_after_the_initial_status(twilio_sim: TwilioSimulator,
                                                          callback_sink: CallbackSink) -> None:
    sid = send_message(twilio_sim, StatusCallback=callback_sink.url).json()["sid"]
    twilio_sim.advance()
    received = callback_sink.wait_for(2)
    assert [cb.params["MessageStatus"] for cb in received] == ["sent", "delivered"]
    validator = RequestValidator(twilio_sim.auth_token)
    for cb in received:
        assert cb.params["MessageSid"] == sid == cb.params["SmsSid"]
        assert cb.params["AccountSid"] == twilio_sim.account_sid and cb.params["To"] == TO
        assert validator.validate(callback_sink.url, cb.params, cb.signature)
        assert not RequestValidator("other-token").validate(callback_sink.url, cb.params, cb.signature)
    assert "RawDlrDoneDate" in received[1].params


def test_call_callbacks_follow_requested_events(twilio_sim: TwilioSimulator,
                                                callback_sink: CallbackSink) -> None:
    client, path = api(twilio_sim, "Calls.json")
    form = {"To": TO, "From": SIM_FROM_NUMBER, "Twiml": "<Response/>", "StatusCallback": callback_sink.url}
    with client:
        client.post(path, data={**form, "StatusCallbackEvent": ["initiated", "answered"]})
        client.post(path, data=form)  # default: completed only
    twilio_sim.advance()
    received = callback_sink.wait_for(4)
    by_call: dict[str, list[dict[str, str]]] = {}
    for cb in received:
        by_call.setdefault(cb.params["CallSid"], []).append(cb.params)
    assert sorted(len(events) for events in by_call.values()) == [1, 3]
    for events in by_call.values():
        assert events[-1]["CallStatus"] == "completed" and events[-1]["CallDuration"] == "12"
        assert [e["SequenceNumber"] for e in events] == [str(n) for n in range(len(events))]
        assert all(e["CallbackSource"] == "call-progress-events" for e in events)
    three = next(events for events in by_call.values() if len(events) == 3)
    assert [e["CallStatus"] for e in three] == ["initiated", "in-progress", "completed"]


def test_callback_modes(twilio_sim: TwilioSimulator, callback_sink: CallbackSink) -> None:
    twilio_sim.set_callback_mode("duplicate")
    send_message(twilio_sim, StatusCallback=callback_sink.url)
    twilio_sim.advance()
    assert [cb.params["MessageStatus"] for cb in callback_sink.wait_for(4)] == ["sent", "sent", "delivered",
                                                                               "delivered"]
    callback_sink.received.clear()
    twilio_sim.set_callback_mode("out_of_order")
    send_message(twilio_sim, StatusCallback=callback_sink.url)
    twilio_sim.advance()
    assert [cb.params["MessageStatus"] for cb in callback_sink.wait_for(2)] == ["delivered", "sent"]
    callback_sink.received.clear()
    twilio_sim.set_callback_mode("fail")
    sid = send_message(twilio_sim, StatusCallback=callback_sink.url).json()["sid"]
    twilio_sim.advance()
    assert callback_sink.received == []
    assert all("dropped" in (cb["error"] or "") for cb in twilio_sim.record(sid)["callbacks"])


def test_callback_endpoint_errors_are_recorded_not_retried(twilio_sim: TwilioSimulator,
                                                           callback_sink: CallbackSink) -> None:
    callback_sink.answer_status = 500
    sid = send_message(twilio_sim, StatusCallback=callback_sink.url).json()["sid"]
    twilio_sim.advance()
    assert len(callback_sink.wait_for(2)) == 2
    attempts = twilio_sim.record(sid)["callbacks"]
    assert [a["http_status"] for a in attempts] == [500, 500]
    assert twilio_sim.record(sid)["status"] == "delivered"


def test_forced_429_then_success(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_rate_limit(next_429=2)
    answers = [send_message(twilio_sim) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 201]
    assert answers[0].json()["code"] == 20429
    assert len(twilio_sim.messages()) == 1


def test_concurrency_limit_answers_429(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_rate_limit(max_concurrency=1)
    twilio_sim.set_latency(0.5)
    results: list[int] = []
    ready = threading.Barrier(3)

    def send() -> None:
        client, path = api(twilio_sim, "Messages.json")
        with client:
            ready.wait()
            answer = client.post(path, data={"To": TO, "From": SIM_FROM_NUMBER, "Body": "x"})
        results.append(answer.status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201, 429, 429]


def test_injected_5xx_uses_twilio_error_body(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_faults(fail_next=1, fail_status=503)
    first, second = send_message(twilio_sim), send_message(twilio_sim)
    assert first.status_code == 503 and first.json()["code"] == 20503
    assert second.status_code == 201


def test_dropped_connection_is_a_transport_error_for_both_clients(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_faults(drop_next=2)
    with pytest.raises(httpx.TransportError):
        send_message(twilio_sim)
    client = Client(twilio_sim.account_sid, twilio_sim.auth_token)
    client.api.base_url = twilio_sim.url
    with pytest.raises(requests.RequestException):
        client.messages.create(to=TO, from_=SIM_FROM_NUMBER, body="dropped")
    assert [entry.status for entry in twilio_sim.api_requests()] == [-1, -1]
    assert twilio_sim.messages() == []  # dropped before the create
    assert send_message(twilio_sim).status_code == 201


def test_accepted_then_failed_create_takes_effect(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_faults(accept_then_fail_next=1, fail_status=504)
    answer = send_message(twilio_sim)
    assert answer.status_code == 504 and answer.json()["code"] == 20504
    assert len(twilio_sim.messages()) == 1 and twilio_sim.faults.accept_then_fail_next == 0


def test_list_filters_and_paging_with_the_twilio_client(twilio_sim: TwilioSimulator) -> None:
    for n in range(5):
        send_message(twilio_sim, Body=f"alert {n}")
    send_message(twilio_sim, To="+15550000001")
    client = Client(twilio_sim.account_sid, twilio_sim.auth_token)
    client.api.base_url = twilio_sim.url
    listed = client.messages.list(to=TO, page_size=2)
    assert [m.body for m in listed] == [f"alert {n}" for n in (4, 3, 2, 1, 0)]  # newest first, 3 pages
    page = client.messages.page(to=TO, page_size=2)
    assert page.next_page_url and "Page=1" in page.next_page_url
    assert client.messages.list(date_sent="2001-01-01") == []
    assert len(client.messages.list(date_sent_after="2001-01-01")) == 6
    assert client.messages.list(date_sent_before="2001-01-01") == []


def test_call_list_filters_start_time(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_auto_advance(False)
    client, path = api(twilio_sim, "Calls.json")
    with client:
        client.post(path, data={"To": TO, "From": SIM_FROM_NUMBER, "Twiml": "<Response/>"})
        assert client.get(path, params={"StartTime>": "2001-01-01"}).json()["calls"] == []  # not dialled yet
        twilio_sim.advance()
        assert len(client.get(path, params={"StartTime>": "2001-01-01", "To": TO}).json()["calls"]) == 1
        assert client.get(path, params={"Status": "busy"}).json()["calls"] == []


def test_admin_http_api(twilio_sim: TwilioSimulator) -> None:
    with httpx.Client(base_url=twilio_sim.url, timeout=5) as admin:
        paused = admin.post("/_admin/auto_advance", json={"enabled": False}).json()
        assert paused["state"]["auto_advance"] is False
        assert admin.post("/_admin/rules", json={"+15005550009": {"message": "undelivered",
                                                                  "error_code": 30005}}).status_code == 200
        assert admin.post("/_admin/rules", json={"+1": {"colour": "red"}}).status_code == 400
        send_message(twilio_sim, To="+15005550009")
        assert admin.post("/_admin/advance").json()["moved"] == 2
        messages = admin.get("/_admin/messages").json()["messages"]
        assert messages[0]["status"] == "undelivered" and messages[0]["error_code"] == 30005
        assert [s["status"] for s in messages[0]["status_history"]] == ["queued", "sent", "undelivered"]
        admin.post("/_admin/rate_limit", json={"next_429": 1})
        assert send_message(twilio_sim).status_code == 429
        requests_seen = admin.get("/_admin/requests").json()["requests"]
        assert [r["status"] for r in requests_seen] == [201, 429]
        assert admin.post("/_admin/reset").status_code == 200
        assert admin.get("/_admin/state").json()["messages"] == 0


def _start_cli(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "b1twilio_sim.twilio", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    return process, line


def test_cli_prints_url_and_stops_on_sigterm() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    process, line = _start_cli(env)
    try:
        assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+", line)
        url = line.removeprefix("listening on ")
        assert httpx.get(f"{url}/_admin/state", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert DEMO_AUTH_TOKEN in err  # the demo credentials are printed for the operator


def test_cli_survives_clients_that_leave_and_dropped_connections_without_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    process, line = _start_cli(env)
    url = line.removeprefix("listening on ")
    try:
        with httpx.Client(base_url=url, timeout=5) as admin:
            admin.post("/_admin/latency", json={"seconds": 0.3})
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as gone:  # leaves while its answer is delayed
                gone.sendall(b"GET /2010-04-01/Accounts/AC1/Calls.json HTTP/1.1\r\nHost: x\r\n\r\n")
            with socket.create_connection((host, int(port))) as gone:  # leaves in the middle of its body
                gone.sendall(b"POST /2010-04-01/Accounts/AC1/Calls.json HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 100\r\n\r\nTo=")
            admin.post("/_admin/latency", json={"seconds": 0})
            admin.post("/_admin/faults", json={"drop_next": 1})
            with pytest.raises(httpx.TransportError):
                admin.get(f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Calls.json")
            threading.Event().wait(0.5)
            assert admin.get("/_admin/state").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in err and "ERROR" not in err and out == ""


def test_cli_never_prints_a_token_from_the_environment() -> None:
    token = "e" * 32
    env = {**os.environ, "TWILIO_ACCOUNT_SID": "AC" + "3" * 32, "TWILIO_AUTH_TOKEN": token}
    process, line = _start_cli(env)
    try:
        url = line.removeprefix("listening on ")
        answer = httpx.get(f"{url}/2010-04-01/Accounts/AC{'3' * 32}/Messages.json",
                           auth=("AC" + "3" * 32, token), timeout=5)
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert token not in out + err + line


def test_tick_moves_one_status_at_a_time(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_auto_advance(False)
    sid = send_message(twilio_sim).json()["sid"]
    assert twilio_sim.tick() == 1 and twilio_sim.record(sid)["status"] == "sent"
    assert twilio_sim.tick() == 1 and twilio_sim.record(sid)["status"] == "delivered"
    assert twilio_sim.tick() == 0


# ----- the handset's side: SMS replies and keypresses, through the webhooks Twilio sends ----------------

HANDSET, CALLED, UNANSWERED_HANDSET = "+447700900101", "+447700900103", "+447700900104"
SMS_FIELDS = {"MessageSid", "SmsSid", "SmsMessageSid", "AccountSid", "From", "To", "Body", "NumMedia",
              "NumSegments", "SmsStatus", "ApiVersion"}
GATHER_FIELDS = {"CallSid", "AccountSid", "From", "To", "Digits", "CallStatus", "Direction", "ApiVersion",
                 "FinishedOnKey"}


@dataclass
class Hook:
    """One webhook request as our endpoint received it."""

    method: str
    url: str  # the full URL Twilio called, query included: what the signature covers
    form: dict[str, str]
    signature: str | None
    idempotency_token: str | None
    probed: Any

    @property
    def fields(self) -> dict[str, str]:
        """Query and form fields together (a GET webhook carries its fields in the query)."""
        query = parse_qs(urlsplit(self.url).query, keep_blank_values=True)
        return {**{name: values[0] for name, values in query.items()}, **self.form}


class TwimlEndpoint(ThreadingHTTPServer):
    """A loopback stand-in for the pipeline's webhook endpoints: records every request and answers TwiML by
    path (`/sms`: a `<Message>` reply, `/gather`: a `<Say>`). `probe(fields)` runs while the request is
    held, to see the simulator's state at that moment."""

    daemon_threads = True
    ANSWERS = {"/sms": "<Response><Message>Thanks</Message></Response>",
               "/gather": "<Response><Say>Acknowledged</Say></Response>"}

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TwimlHandler)
        self.hooks: list[Hook] = []
        self.probe: Callable[[dict[str, str]], Any] = lambda _fields: None
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{path}"

    def at(self, path: str) -> list[Hook]:
        with self.lock:
            return [hook for hook in self.hooks if urlsplit(hook.url).path == path]


class _TwimlHandler(BaseHTTPRequestHandler):
    server: TwimlEndpoint

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._answer({})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self._answer({name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()})

    def _answer(self, form: dict[str, str]) -> None:
        hook = Hook(self.command, self.server.url(self.path), form, self.headers.get("X-Twilio-Signature"),
                    self.headers.get("I-Twilio-Idempotency-Token"), None)
        hook.probed = self.server.probe(hook.fields)
        with self.server.lock:
            self.server.hooks.append(hook)
        answer = TwimlEndpoint.ANSWERS.get(urlsplit(self.path).path, "<Response/>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def endpoint() -> Iterator[TwimlEndpoint]:
    server = TwimlEndpoint()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def gather_twiml(action: str, method: str = "POST") -> str:
    return (f'<Response><Gather input="dtmf" numDigits="1" action="{action}" method="{method}">'
            "<Say>Invoice 42 is overdue. Press 1 to acknowledge.</Say></Gather></Response>")


def place_call(sim: TwilioSimulator, to: str, twiml: str) -> str:
    client, path = api(sim, "Calls.json")
    with client:
        return str(client.post(path, data={"To": to, "From": SIM_FROM_NUMBER, "Twiml": twiml}).json()["sid"])


def assert_signed(sim: TwilioSimulator, hook: Hook) -> None:
    assert RequestValidator(sim.auth_token).validate(hook.url, hook.form, hook.signature)
    assert not RequestValidator("other-token").validate(hook.url, hook.form, hook.signature)
    assert hook.idempotency_token


def assert_message_list_matches_the_spec(listing: dict[str, Any]) -> None:
    """The 200 answer schema of Twilio's Messages list (its `$ref`s resolved within the spec)."""
    if not SPEC.exists():
        pytest.skip("Twilio OpenAPI spec not available")
    spec = Resource.from_contents(json.loads(SPEC.read_text(encoding="utf-8")), default_specification=DRAFT4)
    answer = ("urn:twilio#/paths/~12010-04-01~1Accounts~1{AccountSid}~1Messages.json/get/responses/200/content/"
              "application~1json/schema")
    OAS30Validator({"$ref": answer}, registry=Registry().with_resource("urn:twilio", spec)).validate(listing)


def test_reply_posts_a_signed_sms_webhook_and_its_message_answer_goes_back(
        twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    twilio_sim.set_auto_advance(False)
    sent = send_message(twilio_sim, To=HANDSET, Body="Invoice 42 is overdue. Reply K7Q2 to acknowledge").json()
    twilio_sim.advance()
    with httpx.Client(base_url=twilio_sim.url, timeout=5) as admin:
        assert admin.post("/_admin/webhooks", json={"sms_url": endpoint.url("/sms")}).json() == {
            "sms_url": endpoint.url("/sms")}
        assert admin.get("/_admin/webhooks").json() == {"sms_url": endpoint.url("/sms")}
        answer = admin.post("/_admin/reply", json={"from": HANDSET, "body": "K7Q2"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert SM_SID.match(result["message_sid"]) and SM_SID.match(result["reply_sid"])
    assert result["http_status"] == 200 and "<Message>Thanks</Message>" in result["twiml"]

    (hook,) = endpoint.at("/sms")
    assert hook.method == "POST" and set(hook.form) == SMS_FIELDS  # no MessagingServiceSid: none was used
    assert_signed(twilio_sim, hook)
    sid = result["message_sid"]
    assert hook.form == {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                         "AccountSid": twilio_sim.account_sid, "From": HANDSET, "To": sent["from"],
                         "Body": "K7Q2", "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
                         "ApiVersion": "2010-04-01"}

    twilio_sim.advance()
    client, path = api(twilio_sim, "Messages.json")
    with client:
        listing = client.get(path).json()
    assert_message_list_matches_the_spec(listing)
    listed = listing["messages"]
    assert [(m["direction"], m["status"], m["from"], m["to"], m["body"]) for m in listed] == [
        ("outbound-reply", "delivered", SIM_FROM_NUMBER, HANDSET, "Thanks"),
        ("inbound", "received", HANDSET, SIM_FROM_NUMBER, "K7Q2"),
        ("outbound-api", "delivered", SIM_FROM_NUMBER, HANDSET, sent["body"]),
    ]
    assert [listed[0]["sid"], listed[1]["sid"]] == [result["reply_sid"], sid]
    assert all(spec_properties("api.v2010.account.message") <= set(message) for message in listed)


def test_a_messaging_service_reply_carries_its_sid(twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    service = "MG" + "ab" * 16
    twilio_sim.set_sms_url(endpoint.url("/sms"))
    send_message(twilio_sim, To=HANDSET, From="", MessagingServiceSid=service)
    result = twilio_sim.reply(HANDSET, "OK")
    (hook,) = endpoint.at("/sms")
    assert hook.form["MessagingServiceSid"] == service and set(hook.form) == SMS_FIELDS | {"MessagingServiceSid"}
    assert twilio_sim.record(result["reply_sid"])["messaging_service_sid"] == service


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_press_sends_the_digits_to_the_gather_action(twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint,
                                                     method: str) -> None:
    twilio_sim.set_auto_advance(False)
    sid = place_call(twilio_sim, CALLED, gather_twiml(endpoint.url("/gather?alert=42"), method))
    with httpx.Client(base_url=twilio_sim.url, timeout=5) as admin:
        answer = admin.post("/_admin/press", json={"to": CALLED, "digits": "1"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["call_sid"] == sid and result["digits"] == "1" and result["http_status"] == 200
    assert result["twiml"] == "<Response><Say>Acknowledged</Say></Response>"

    (hook,) = endpoint.at("/gather")
    assert hook.method == method
    assert_signed(twilio_sim, hook)
    fields = hook.fields
    assert set(fields) - {"alert"} == GATHER_FIELDS
    assert fields == {"alert": "42", "CallSid": sid, "AccountSid": twilio_sim.account_sid, "From": SIM_FROM_NUMBER,
                      "To": CALLED, "Digits": "1", "CallStatus": "in-progress", "Direction": "outbound-api",
                      "ApiVersion": "2010-04-01", "FinishedOnKey": ""}
    (recorded,) = twilio_sim.record(sid)["webhooks"]
    assert recorded["twiml"] == result["twiml"]


def test_press_by_call_sid_keeps_numdigits(twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    sid = place_call(twilio_sim, CALLED, gather_twiml(endpoint.url("/gather")))
    place_call(twilio_sim, CALLED, "<Response><Say>no gather here</Say></Response>")  # later, not pressable
    assert twilio_sim.press(call_sid=sid, digits="12")["digits"] == "1"
    assert twilio_sim.press(to=CALLED, digits="9")["call_sid"] == sid  # the latest call that gathers keys
    assert [hook.form["Digits"] for hook in endpoint.at("/gather")] == ["1", "9"]


def test_rules_reply_and_press_fire_once_each(twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    twilio_sim.set_auto_advance(False)
    with httpx.Client(base_url=twilio_sim.url, timeout=5) as admin:
        admin.post("/_admin/webhooks", json={"sms_url": endpoint.url("/sms")})
        assert admin.post("/_admin/rules", json={
            HANDSET: {"reply": "OK"}, CALLED: {"press": "1"},
            UNANSWERED_HANDSET: {"call": "no-answer", "press": "1"}}).status_code == 200
        assert admin.post("/_admin/rules", json={CALLED: {"press": "one"}}).status_code == 400
    endpoint.probe = lambda fields: twilio_sim.record(fields["CallSid"])["status"] if "CallSid" in fields else None
    message = send_message(twilio_sim, To=HANDSET).json()["sid"]
    call = place_call(twilio_sim, CALLED, gather_twiml(endpoint.url("/gather")))
    unanswered = place_call(twilio_sim, UNANSWERED_HANDSET, gather_twiml(endpoint.url("/gather")))
    twilio_sim.advance()
    twilio_sim.advance()

    (sms,) = endpoint.at("/sms")
    assert sms.form["Body"] == "OK" and sms.form["From"] == HANDSET
    assert_signed(twilio_sim, sms)
    (press,) = endpoint.at("/gather")
    assert press.form["CallSid"] == call and press.form["Digits"] == "1"
    assert press.probed == "in-progress"  # pressed while the call was live, before it completed
    assert [s["status"] for s in twilio_sim.record(call)["status_history"]] == [
        "queued", "ringing", "in-progress", "completed"]
    assert twilio_sim.record(unanswered)["webhooks"] == []
    assert twilio_sim.record(message)["status"] == "delivered"
    replies = [m for m in twilio_sim.messages() if m["direction"] == "outbound-reply"]
    assert [(m["body"], m["status"], m["to"]) for m in replies] == [("Thanks", "delivered", HANDSET)]
    assert sorted(exchange["kind"] for exchange in twilio_sim.inbound()) == ["gather", "sms"]


def test_rules_fire_from_the_background_lifecycle_and_wait_callbacks_waits_for_them(
        twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    twilio_sim.set_sms_url(endpoint.url("/sms"))
    twilio_sim.set_rules({HANDSET: {"reply": "OK"}, CALLED: {"press": "1"}})
    send_message(twilio_sim, To=HANDSET)
    call = place_call(twilio_sim, CALLED, gather_twiml(endpoint.url("/gather")))
    for _ in range(200):
        if twilio_sim.record(call)["status"] == "completed" and len(twilio_sim.messages()) == 3:
            break
        threading.Event().wait(0.02)
    assert twilio_sim.wait_callbacks()
    assert len(endpoint.at("/sms")) == 1 and len(endpoint.at("/gather")) == 1


def test_handset_errors_through_the_admin_api(twilio_sim: TwilioSimulator, endpoint: TwimlEndpoint) -> None:
    with httpx.Client(base_url=twilio_sim.url, timeout=5) as admin:
        def post(operation: str, payload: dict[str, Any]) -> tuple[int, str]:
            answer = admin.post(f"/_admin/{operation}", json=payload)
            return answer.status_code, answer.json()["error"]

        assert post("reply", {"from": HANDSET, "body": "OK"})[0] == 404  # nothing was sent to it
        send_message(twilio_sim, To=HANDSET)
        status, error = post("reply", {"from": HANDSET, "body": "OK"})
        assert status == 409 and "sms_url" in error
        assert post("webhooks", {"sms_url": "ftp://nowhere"})[0] == 400
        assert post("press", {"to": CALLED, "digits": "1"})[0] == 404  # no call to that number
        assert post("press", {"call_sid": "CA" + "0" * 32})[0] == 404
        place_call(twilio_sim, CALLED, "<Response><Say>Invoice 42</Say></Response>")
        status, error = post("press", {"to": CALLED, "digits": "1"})
        assert status == 409 and "Gather" in error
        place_call(twilio_sim, CALLED, '<Response><Gather numDigits="1"><Say>x</Say></Gather></Response>')
        status, error = post("press", {"to": CALLED, "digits": "1"})
        assert status == 409 and "action" in error
        assert post("press", {"to": CALLED, "digits": "x"})[0] == 400
    assert endpoint.hooks == [] and twilio_sim.inbound() == []
