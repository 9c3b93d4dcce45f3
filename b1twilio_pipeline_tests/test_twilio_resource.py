"""TwilioResource driving the real `twilio` client against the simulator (and, for EU hosts, a proxy)."""

from __future__ import annotations

import base64
import itertools
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import dagster as dg
import pytest
from twilio.request_validator import RequestValidator

from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_pipeline.notifications.twilio_api import (
    AmbiguousDelivery,
    DeliveryStatus,
    Outbound,
    SentNotification,
    TwilioSendError,
)
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_pipeline_tests.fixtures_twilio import SIM_FROM_NUMBER, CallbackSink
from b1twilio_sim.twilio import TwilioSimulator

TO = "+4915112345678"
SM_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
CA_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")


def resource_for(sim: TwilioSimulator, **overrides: Any) -> TwilioResource:
    fields: dict[str, Any] = {
        "account_sid": sim.account_sid, "auth_token": sim.auth_token, "from_number": SIM_FROM_NUMBER,
        "api_base_url": sim.url, "status_callback_url": "", "backoff_base_s": 0.001, "backoff_max_s": 0.01,
        "timeout_s": 5.0, **overrides,
    }
    return TwilioResource(**fields)


def posted_forms(sim: TwilioSimulator, endpoint: str) -> list[dict[str, list[str]]]:
    return [parse_qs(entry.body.decode()) for entry in sim.api_requests()
            if entry.method == "POST" and entry.path.endswith(endpoint)]


def test_sms_is_sent_and_reaches_delivered(twilio_sim: TwilioSimulator,
                                           twilio_resource: TwilioResource) -> None:
    sent = twilio_resource.send_sms(TO, "New supplier invoice 4711 from Acme: 1,250.00 EUR")
    assert isinstance(sent, SentNotification) and sent.channel == "sms" and sent.status == "queued"
    assert SM_SID.match(sent.sid)
    form = posted_forms(twilio_sim, "/Messages.json")[0]
    assert form["To"] == [TO] and form["From"] == [SIM_FROM_NUMBER] and "StatusCallback" not in form
    twilio_sim.advance()
    assert twilio_resource.fetch_status(sent.sid) == DeliveryStatus(sent.sid, "delivered", None, None)


def test_messaging_service_is_used_when_configured(twilio_sim: TwilioSimulator) -> None:
    service = "MG" + "ab" * 16
    sent = resource_for(twilio_sim, messaging_service_sid=service).send_sms(TO, "hello")
    assert sent.status == "accepted"
    form = posted_forms(twilio_sim, "/Messages.json")[0]
    assert form["MessagingServiceSid"] == [service] and "From" not in form


def test_call_carries_escaped_say_and_reaches_completed(twilio_sim: TwilioSimulator,
                                                        callback_sink: CallbackSink) -> None:
    resource = resource_for(twilio_sim, voice="Polly.Vicki", language="de-DE", status_callback_url=callback_sink.url)
    sent = resource.place_call(TO, 'Stock of <A&B> "bolts" is 3')
    assert sent.channel == "voice" and CA_SID.match(sent.sid) and sent.status == "queued"
    form = posted_forms(twilio_sim, "/Calls.json")[0]
    twiml = form["Twiml"][0]
    assert '<Say language="de-DE" voice="Polly.Vicki">' in twiml
    assert "Stock of &lt;A&amp;B&gt; \"bolts\" is 3</Say>" in twiml
    assert sorted(form["StatusCallbackEvent"]) == ["answered", "completed", "initiated", "ringing"]
    twilio_sim.advance()
    assert resource.fetch_status(sent.sid).status == "completed"
    statuses = [cb.params["CallStatus"] for cb in callback_sink.wait_for(4)]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]


def test_long_call_text_is_cut_to_fit_twiml_limit(twilio_sim: TwilioSimulator,
                                                  twilio_resource: TwilioResource) -> None:
    sent = twilio_resource.place_call(TO, "overdue & unpaid " * 400)
    twiml = posted_forms(twilio_sim, "/Calls.json")[0]["Twiml"][0]
    assert CA_SID.match(sent.sid) and len(twiml) <= 4000 and twiml.endswith("...</Say></Response>")


def test_callbacks_arrive_signed_for_the_configured_url(twilio_sim: TwilioSimulator,
                                                       callback_sink: CallbackSink) -> None:
    resource = resource_for(twilio_sim, status_callback_url=callback_sink.url)
    sent = resource.send_sms(TO, "hello")
    twilio_sim.advance()
    received = callback_sink.wait_for(2)
    assert [cb.params["MessageStatus"] for cb in received] == ["sent", "delivered"]
    validator = RequestValidator(twilio_sim.auth_token)
    assert all(cb.params["MessageSid"] == sent.sid for cb in received)
    assert all(validator.validate(callback_sink.url, cb.params, cb.signature) for cb in received)


def test_failure_rule_reports_undelivered_with_code(twilio_sim: TwilioSimulator,
                                                    twilio_resource: TwilioResource) -> None:
    twilio_sim.set_rules({"+15005550009": {"message": "undelivered", "error_code": 30003}})
    sent = twilio_resource.send_sms("+15005550009", "hello")
    twilio_sim.advance()
    status = twilio_resource.fetch_status(sent.sid)
    assert (status.status, status.error_code) == ("undelivered", 30003)
    assert status.error_message == "Unreachable destination handset"


def test_429_storm_is_absorbed_without_losing_or_doubling_a_message(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_rate_limit(max_concurrency=2)
    twilio_sim.set_latency(0.005)
    resource = resource_for(twilio_sim, max_concurrency=8, max_retries=40, backoff_base_s=0.002,
                            backoff_max_s=0.05)
    texts = {f"+1555010{n:04d}": f"alert {n}" for n in range(200)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = list(pool.map(lambda item: resource.send_sms(*item), texts.items()))
    assert twilio_sim.rejected_429 > 0  # the storm really happened
    twilio_sim.advance()
    messages = twilio_sim.messages()
    assert sorted(m["body"] for m in messages) == sorted(texts.values())
    assert {m["status"] for m in messages} == {"delivered"}
    assert sorted(s.sid for s in sent) == sorted(m["sid"] for m in messages)


def test_5xx_on_create_is_looked_up_before_the_next_create(twilio_sim: TwilioSimulator,
                                                           twilio_resource: TwilioResource) -> None:
    twilio_sim.set_faults(fail_next=3, fail_status=503)  # refused before anything was created
    sent = twilio_resource.send_sms(TO, "hello (ref ABC234)", ref="ABC234")
    assert SM_SID.match(sent.sid) and not sent.adopted
    answered = [(r.method, r.status) for r in twilio_sim.api_requests()]
    posts = [i for i, (method, _) in enumerate(answered) if method == "POST"]
    assert [answered[i][1] for i in posts] == [503] * (len(posts) - 1) + [201]
    for before, after in itertools.pairwise(posts):
        # every answer that did not prove rejection is followed by a lookup that answered, never by a
        # blind second create
        assert ("GET", 200) in answered[before + 1:after]
    assert len(twilio_sim.messages()) == 1


def test_accepted_then_504_is_adopted_not_sent_twice(twilio_sim: TwilioSimulator,
                                                    twilio_resource: TwilioResource) -> None:
    twilio_sim.set_faults(accept_then_fail_next=1, fail_status=504)
    sent = twilio_resource.send_sms(TO, "invoice 4711 (ref KQ7XM2)", ref="KQ7XM2")
    assert sent.adopted and len(twilio_sim.messages()) == 1
    assert sent.sid == twilio_sim.messages()[0]["sid"]
    assert len(posted_forms(twilio_sim, "/Messages.json")) == 1


def test_accepted_call_then_reset_is_adopted(twilio_sim: TwilioSimulator, twilio_resource: TwilioResource) -> None:
    twilio_sim.set_faults(accept_then_fail_next=1, fail_status=502)
    sent = twilio_resource.place_call(TO, "overdue invoice")
    assert sent.adopted and [c["sid"] for c in twilio_sim.calls()] == [sent.sid]


def test_lookup_never_adopts_other_senders_or_other_references(twilio_sim: TwilioSimulator,
                                                              twilio_resource: TwilioResource) -> None:
    since = datetime.now(UTC)
    other_system = resource_for(twilio_sim, from_number="+15005550001")
    other_system.send_sms(TO, "someone else's text (ref KQ7XM2)")  # same account, another sender
    twilio_resource.send_sms(TO, "our other notification (ref ZZ9YY8)")
    ours = twilio_resource.send_sms(TO, "our notification (ref KQ7XM2)")
    found = twilio_resource.find_sent("sms", TO, since, ref="KQ7XM2")
    assert [record.sid for record in found] == [ours.sid]
    out = Outbound("sms", TO, "our notification (ref KQ7XM2)", "KQ7XM2")
    assert twilio_resource.lookup(out, since, is_foreign=lambda sid: sid == ours.sid) is None


def test_two_unowned_calls_are_ambiguous(twilio_sim: TwilioSimulator, twilio_resource: TwilioResource) -> None:
    since = datetime.now(UTC)
    first, second = twilio_resource.place_call(TO, "one"), twilio_resource.place_call(TO, "two")
    with pytest.raises(AmbiguousDelivery, match="2 calls to"):
        twilio_resource.deliver(Outbound("voice", TO, "two"), lookup_since=since)
    adopted = twilio_resource.deliver(Outbound("voice", TO, "two"), lookup_since=since,
                                      is_foreign=lambda sid: sid == first.sid)
    assert adopted.sid == second.sid and adopted.adopted and len(twilio_sim.calls()) == 2


def test_retries_give_up_with_a_transient_error(twilio_sim: TwilioSimulator) -> None:
    twilio_sim.set_rate_limit(next_429=100)
    with pytest.raises(TwilioSendError) as caught:
        resource_for(twilio_sim, max_retries=2).send_sms(TO, "hello")
    assert caught.value.code == 20429 and caught.value.http_status == 429
    assert caught.value.permanent is False
    assert len(posted_forms(twilio_sim, "/Messages.json")) == 3


@pytest.mark.parametrize(("to", "setup", "code"), [
    ("+1555123456789012345", None, 21211),
    ("+15005550004", "opt_out", 21610),
    ("+15005550009", "reject", 21614),
])
def test_permanent_errors_are_not_retried_and_masked(twilio_sim: TwilioSimulator,
                                                     twilio_resource: TwilioResource,
                                                     to: str, setup: str | None, code: int) -> None:
    if setup == "opt_out":
        twilio_sim.opt_out(to)
    if setup == "reject":
        twilio_sim.set_rules({to: {"reject": 21614}})
    with pytest.raises(TwilioSendError) as caught:
        twilio_resource.send_sms(to, "hello")
    error = caught.value
    assert (error.code, error.http_status, error.permanent) == (code, 400, True)
    assert len(posted_forms(twilio_sim, "/Messages.json")) == 1
    text = str(error)
    assert "\n" not in text and to not in text and f"Twilio error {code} (" in text
    assert to[:3] in text and to[-3:] in text  # masked, still recognisable


def test_wrong_token_is_a_clear_20003_without_the_token(twilio_sim: TwilioSimulator) -> None:
    token = "f" * 32
    with pytest.raises(TwilioSendError) as caught:
        resource_for(twilio_sim, auth_token=token).send_sms(TO, "hello")
    # The account, not the message, is wrong: not retried now, but not permanent either (once the
    # credentials are fixed the notification goes out).
    assert caught.value.code == 20003 and not caught.value.permanent and caught.value.http_status == 401
    assert "authentication failed" in str(caught.value) and token not in str(caught.value)
    assert "region" not in str(caught.value)
    assert len(posted_forms(twilio_sim, "/Messages.json")) == 1


def test_region_override_reaches_simulator_and_auth_failure_names_region(twilio_sim: TwilioSimulator) -> None:
    sent = resource_for(twilio_sim, region="ie1", edge="dublin").send_sms(TO, "hello")
    assert SM_SID.match(sent.sid)  # host mangling did not break the base-URL override
    with pytest.raises(TwilioSendError) as caught:
        resource_for(twilio_sim, region="ie1", edge="dublin", auth_token="x" * 32).send_sms(TO, "hello")
    assert caught.value.code == 20003
    assert "region ie1 needs region-specific credentials" in str(caught.value)


def test_api_key_auth(twilio_sim: TwilioSimulator) -> None:
    key, secret = "SK" + "1f" * 16, "api-key-secret"
    twilio_sim.api_keys[key] = secret
    resource = resource_for(twilio_sim, auth_token=None, api_key=key, api_secret=secret)
    sent = resource.send_sms(TO, "hello")
    assert SM_SID.match(sent.sid)
    header = twilio_sim.api_requests()[-1].headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode().startswith(key + ":")
    assert f"/Accounts/{twilio_sim.account_sid}/Messages.json" in twilio_sim.api_requests()[-1].path


class ConnectRecorder:
    """A loopback 'proxy' that records CONNECT targets and refuses them: shows the host the client would
    reach without any traffic leaving the machine."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.targets: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                head = connection.recv(4096).decode(errors="replace")
                self.targets.append(head.split("\r\n", 1)[0])
                connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")


@pytest.fixture
def connect_recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectRecorder]:
    recorder = ConnectRecorder()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", recorder.url)
    monkeypatch.setenv("https_proxy", recorder.url)
    yield recorder
    recorder.sock.close()


@pytest.mark.parametrize(("region", "edge", "host"), [
    ("ie1", "dublin", "api.dublin.ie1.twilio.com:443"),
    (None, None, "api.twilio.com:443"),
])
def test_region_and_edge_pick_the_twilio_host(connect_recorder: ConnectRecorder, region: str | None,
                                              edge: str | None, host: str) -> None:
    resource = TwilioResource(account_sid="AC" + "0" * 32, auth_token="t" * 32, from_number=SIM_FROM_NUMBER,
                              region=region, edge=edge, api_base_url="", status_callback_url="",
                              max_retries=0, timeout_s=5.0)
    with pytest.raises(TwilioSendError) as caught:
        resource.send_sms(TO, "hello")
    assert [target.rsplit(" ", 1)[0] for target in connect_recorder.targets] == [f"CONNECT {host}"]
    assert caught.value.code is None and "t" * 32 not in str(caught.value)


def test_find_sent_pages_through_what_was_sent(twilio_sim: TwilioSimulator,
                                               twilio_resource: TwilioResource) -> None:
    since = datetime.now(UTC)
    bodies = [f"alert {n}" for n in range(105)]  # more than one page of 100
    for body in bodies:
        twilio_resource.send_sms(TO, body)
    twilio_resource.send_sms("+15550000001", "someone else")
    call = twilio_resource.place_call(TO, "call me")
    found = twilio_resource.find_sent("sms", TO, since)
    assert sorted(record.body for record in found) == sorted(bodies)
    assert all(record.to == TO and record.created_at >= since.replace(microsecond=0) for record in found)
    calls = twilio_resource.find_sent("voice", TO, since)
    assert [(c.sid, c.body) for c in calls] == [(call.sid, None)]
    assert twilio_resource.find_sent("sms", TO, since + timedelta(seconds=5)) == []


def test_unknown_sid_is_a_permanent_20404(twilio_resource: TwilioResource) -> None:
    with pytest.raises(TwilioSendError) as caught:
        twilio_resource.fetch_status("SM" + "0" * 32)
    assert caught.value.code == 20404 and caught.value.permanent


def test_settings_are_read_at_run_time_from_the_environment(twilio_sim: TwilioSimulator,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    resource = TwilioResource(backoff_base_s=0.001)  # built before the environment is set
    environment = {"TWILIO_ACCOUNT_SID": twilio_sim.account_sid, "TWILIO_AUTH_TOKEN": twilio_sim.auth_token,
                   "TWILIO_FROM_NUMBER": "+15005550007", "TWILIO_API_BASE_URL": twilio_sim.url,
                   "TWILIO_STATUS_CALLBACK_URL": "http://127.0.0.1:9/twilio/status"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("TWILIO_API_KEY", "TWILIO_REGION", "TWILIO_EDGE", "TWILIO_MESSAGING_SERVICE_SID",
                 "TWILIO_VOICE_FROM_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    resource.send_sms(TO, "hello")
    resource.place_call(TO, "hello")
    sms, call = posted_forms(twilio_sim, "/Messages.json")[0], posted_forms(twilio_sim, "/Calls.json")[0]
    assert sms["From"] == call["From"] == ["+15005550007"]
    assert sms["StatusCallback"] == ["http://127.0.0.1:9/twilio/status"]


def test_missing_settings_are_one_line_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID is not set"):
        TwilioResource().send_sms(TO, "x")
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN is not set"):
        TwilioResource(account_sid="AC" + "0" * 32).send_sms(TO, "x")
    with pytest.raises(ConfigurationError, match="AC followed by 32 hex"):
        TwilioResource(account_sid="ACnope", auth_token="t").send_sms(TO, "x")


def test_resource_works_inside_a_dagster_asset(twilio_sim: TwilioSimulator,
                                               twilio_resource: TwilioResource) -> None:
    @dg.asset
    def alert(twilio: TwilioResource) -> dg.MaterializeResult:
        sent = twilio.send_sms(TO, "from dagster")
        return dg.MaterializeResult(metadata={"sid": sent.sid})

    result = dg.materialize([alert], resources={"twilio": twilio_resource})
    assert result.success
    assert [m["body"] for m in twilio_sim.messages()] == ["from dagster"]
