"""The Twilio simulator against Twilio's own OpenAPI description of API 2010-04-01, with openapi-core.

The official `twilio` client drives the simulator; every request the simulator logged and every answer the
client received is validated against the spec (`data/twilio/twilio_api_v2010.json`, from twilio-oai, MIT
licence in `data/twilio/LICENSE`). The spec's server is https://api.twilio.com, so requests are matched by
path only. The spec describes no error answers at all, so a 4xx/5xx answer must be one it does not list,
with Twilio's documented error body: `{"code", "message", "more_info", "status"}` as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_schema_validator import OAS30Validator
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from werkzeug.datastructures import Headers, ImmutableMultiDict

from b1twilio_pipeline_tests.fixtures_twilio import SIM_FROM_NUMBER, CallbackSink
from b1twilio_sim.traffic import LoggedRequest
from b1twilio_sim.twilio import TwilioSimulator

SPEC = Path(__file__).parent / "data" / "twilio" / "twilio_api_v2010.json"
SPEC_SERVER = "https://api.twilio.com"
TO = "+15558675310"
UNDELIVERABLE, UNANSWERED, OPTED_OUT = "+15005550009", "+15005550011", "+15005550004"
TWILIO_ERROR = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "pattern": r"^https://www\.twilio\.com/docs/errors/\d+$"},
        "status": {"type": "integer"},
    },
}


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(json.loads(SPEC.read_text(encoding="utf-8")))


class LoggedOpenAPIRequest:
    """A request as the simulator logged it, in the form openapi-core reads (at the spec's server)."""

    host_url = SPEC_SERVER

    def __init__(self, entry: LoggedRequest) -> None:
        split = urlsplit(entry.path)
        self.path = unquote(split.path)
        self.method = entry.method.lower()
        self.body = entry.body or None
        self.content_type = entry.headers.get("content-type") or ""
        self.parameters = RequestParameters(query=ImmutableMultiDict(parse_qsl(split.query, keep_blank_values=True)),
                                            header=Headers(list(entry.headers.items())))


class SentOpenAPIRequest(RequestsOpenAPIRequest):
    """A request as the client sent it, at the spec's server."""

    @property
    def host_url(self) -> str:
        return SPEC_SERVER


@pytest.fixture
def recorded(twilio_sim: TwilioSimulator) -> Iterator[tuple[Client, list[requests.Response]]]:
    """The official client aimed at the simulator, and every answer it receives."""
    answers: list[requests.Response] = []

    def keep(response: requests.Response, *_args: object, **_kwargs: object) -> None:
        answers.append(response)

    client = Client(twilio_sim.account_sid, twilio_sim.auth_token,
                    http_client=TwilioHttpClient(request_hooks={"response": [keep]}, timeout=5))
    client.api.base_url = twilio_sim.url
    yield client, answers


def assert_requests_match_the_spec(openapi: OpenAPI, sim: TwilioSimulator, answers: list[requests.Response]) -> None:
    logged = sim.api_requests()
    assert len(logged) == len(answers) > 0
    for entry in logged:
        openapi.validate_request(LoggedOpenAPIRequest(entry))


def test_every_success_answer_matches_the_spec(twilio_sim: TwilioSimulator, callback_sink: CallbackSink,
                                               recorded: tuple[Client, list[requests.Response]],
                                               openapi: OpenAPI) -> None:
    client, answers = recorded
    twilio_sim.set_auto_advance(False)
    twilio_sim.set_rules({UNDELIVERABLE: {"message": "undelivered", "error_code": 30003},
                          UNANSWERED: {"call": "no-answer"}})
    messages = [
        client.messages.create(to=TO, from_=SIM_FROM_NUMBER, body="Invoice 42 arrived",
                               status_callback=callback_sink.url, validity_period=600),
        client.messages.create(to=TO, messaging_service_sid="MG" + "ab" * 16, body="Stock of A00002 is low"),
        client.messages.create(to=UNDELIVERABLE, from_=SIM_FROM_NUMBER, body="Überfällig: 3 Rechnungen"),
    ]
    calls = [
        client.calls.create(to=TO, from_=SIM_FROM_NUMBER, twiml="<Response><Say>Invoice 42</Say></Response>",
                            status_callback=callback_sink.url, timeout=30,
                            status_callback_event=["initiated", "ringing", "answered", "completed"]),
        client.calls.create(to=UNANSWERED, from_=SIM_FROM_NUMBER, url="http://127.0.0.1:9/twiml", method="GET"),
    ]
    seen: dict[str, list[str]] = {}
    while True:  # every intermediate status of every resource is fetched once
        for sid, fetch in [*((m.sid, client.messages(m.sid).fetch) for m in messages),
                           *((c.sid, client.calls(c.sid).fetch) for c in calls)]:
            seen.setdefault(sid, []).append(fetch().status)
        if not twilio_sim.tick():
            break
    since = datetime(2001, 1, 1, tzinfo=UTC)
    listed = {
        "messages to TO, a page each": [m.sid for m in client.messages.list(to=TO, page_size=1)],
        "messages sent since": [m.sid for m in client.messages.list(from_=SIM_FROM_NUMBER, date_sent_after=since)],
        "messages sent before": [m.sid for m in client.messages.list(date_sent_before=since)],
        "calls started since, a page each": [c.sid for c in client.calls.list(start_time_after=since, page_size=1)],
        "completed calls to TO": [c.sid for c in client.calls.list(status="completed", to=TO)],
        "calls ended before": [c.sid for c in client.calls.list(end_time_before=since)],
    }

    assert_requests_match_the_spec(openapi, twilio_sim, answers)
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text
        openapi.validate_response(SentOpenAPIRequest(answer.request), RequestsOpenAPIResponse(answer))
    assert seen[messages[1].sid] == ["accepted", "queued", "sent", "delivered"]
    assert seen[messages[2].sid] == ["queued", "sent", "undelivered", "undelivered"]
    assert seen[calls[0].sid] == ["queued", "ringing", "in-progress", "completed"]
    assert seen[calls[1].sid] == ["queued", "ringing", "no-answer", "no-answer"]
    assert listed == {
        "messages to TO, a page each": [messages[1].sid, messages[0].sid],  # newest first, over two pages
        "messages sent since": [messages[2].sid, messages[0].sid],
        "messages sent before": [],
        "calls started since, a page each": [calls[1].sid, calls[0].sid],
        "completed calls to TO": [calls[0].sid],
        "calls ended before": [],
    }


def _wrong_token(client: Client, sim: TwilioSimulator) -> object:
    intruder = Client(sim.account_sid, "wrong-token", http_client=client.http_client)
    intruder.api.base_url = sim.url
    return intruder.messages.create(to=TO, from_=SIM_FROM_NUMBER, body="x")


def _invalid_to(client: Client, _sim: TwilioSimulator) -> object:
    return client.messages.create(to="555-1234", from_=SIM_FROM_NUMBER, body="x")


def _unsubscribed(client: Client, sim: TwilioSimulator) -> object:
    sim.opt_out(OPTED_OUT)
    return client.messages.create(to=OPTED_OUT, from_=SIM_FROM_NUMBER, body="x")


def _unknown_message(client: Client, _sim: TwilioSimulator) -> object:
    return client.messages("SM" + "0" * 32).fetch()


def _unknown_call(client: Client, _sim: TwilioSimulator) -> object:
    return client.calls("CA" + "0" * 32).fetch()


def _too_many_requests(client: Client, sim: TwilioSimulator) -> object:
    sim.set_rate_limit(next_429=1)
    return client.calls.create(to=TO, from_=SIM_FROM_NUMBER, url="http://127.0.0.1:9/twiml")


def _outage(client: Client, sim: TwilioSimulator) -> object:
    sim.set_faults(fail_next=1, fail_status=503)
    return client.calls.create(to=TO, from_=SIM_FROM_NUMBER, twiml="<Response/>")


def _accepted_then_lost(client: Client, sim: TwilioSimulator) -> object:
    sim.set_faults(accept_then_fail_next=1, fail_status=504)
    return client.messages.create(to=TO, from_=SIM_FROM_NUMBER, body="x")


ERRORS: list[tuple[Callable[[Client, TwilioSimulator], object], int, int]] = [
    (_wrong_token, 401, 20003), (_invalid_to, 400, 21211), (_unsubscribed, 400, 21610),
    (_unknown_message, 404, 20404), (_unknown_call, 404, 20404), (_too_many_requests, 429, 20429),
    (_outage, 503, 20503), (_accepted_then_lost, 504, 20504),
]


@pytest.mark.parametrize(("make", "status", "code"), ERRORS, ids=[make.__name__.strip("_") for make, *_ in ERRORS])
def test_error_answers_are_twilio_errors_the_spec_does_not_list(
        twilio_sim: TwilioSimulator, recorded: tuple[Client, list[requests.Response]], openapi: OpenAPI,
        make: Callable[[Client, TwilioSimulator], object], status: int, code: int) -> None:
    client, answers = recorded
    with pytest.raises(TwilioRestException) as raised:
        make(client, twilio_sim)
    assert (raised.value.status, raised.value.code) == (status, code)

    assert_requests_match_the_spec(openapi, twilio_sim, answers)
    (answer,) = answers
    assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"
    with pytest.raises(ResponseNotFound):
        openapi.validate_response(SentOpenAPIRequest(answer.request), RequestsOpenAPIResponse(answer))
    body = answer.json()
    OAS30Validator(TWILIO_ERROR).validate(body)
    assert (body["status"], body["code"]) == (status, code)
    assert body["more_info"].endswith(f"/{code}")
