"""The REST endpoints of the Twilio simulator: Messages and Calls of API 2010-04-01.

Shapes follow Twilio's OpenAPI description of the API (the tests validate every request and answer against
it): form-encoded creates answered 201, JSON resources, list pages with Twilio's paging keys, errors as
`{"code", "message", "more_info", "status"}` with the HTTP status. The official `twilio` client talks to it
unchanged. Handlers run in Starlette's thread pool: they take the account state's lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from b1twilio_sim.twilio_state import API_VERSION, E164, Record, new_sid

if TYPE_CHECKING:
    from b1twilio_sim.twilio import TwilioSimulator

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_ACCOUNT_PATH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/(?P<rest>.+)$")
_KIND = {"Messages": "message", "Calls": "call"}
_LIST_KEY = {"message": "messages", "call": "calls"}
_MAX_BODY = 1600
_MAX_TWIML = 4000
Form = dict[str, list[str]]


class TwilioError(Exception):
    """A Twilio error answer: HTTP status, Twilio code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}


def error_response(error: TwilioError) -> Response:
    headers = {"Twilio-Request-Id": new_sid("RQ")}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return Response(json.dumps(error.body()).encode(), error.status, headers, media_type="application/json")


def fault_response(status: int) -> Response:
    """An injected 5xx (code 20500 for a 500, else 20000 + status)."""
    return error_response(TwilioError(status, 20500 if status == 500 else 20000 + status,
                                      "Service temporarily unavailable (simulated fault)"))


@dataclass(frozen=True)
class TwilioCall:
    """One REST request: its raw path, path parameters, query and form (every value of each name)."""

    method: str
    path: str
    params: dict[str, Any]
    query: Form
    headers: Headers
    body: bytes

    def form(self) -> Form:
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


class ConcurrencyGate:
    """Answers 429 (code 20429) beyond the account's concurrency limit or when one is forced; holds an
    in-flight slot around everything else the REST API does (latency included)."""

    def __init__(self, app: ASGIApp, sim: TwilioSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_admin/"):
            await self.app(scope, receive, send)
            return
        if not self.sim.acquire_slot():
            await error_response(TwilioError(429, 20429, "Too Many Requests"))(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.sim.release_slot()


class TwilioApi:
    """Authenticates and answers the REST requests from the simulated account."""

    def __init__(self, sim: TwilioSimulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        def endpoint(handler: Callable[[TwilioCall], Response]) -> Callable[[Request], Any]:
            async def serve(request: Request) -> Response:
                raw_path = request.scope.get("raw_path") or request.url.path.encode()
                call = TwilioCall(request.method, raw_path.decode("latin-1"), dict(request.path_params),
                                  parse_qs(request.scope["query_string"].decode("latin-1"), keep_blank_values=True),
                                  request.headers, await request.body())
                return await run_in_threadpool(self.handle, handler, call)

            return serve

        base = f"/{API_VERSION}/Accounts/{{account}}"
        routes: list[BaseRoute] = []
        for collection in _KIND:
            routes.append(Route(f"{base}/{collection}.json", endpoint(partial(self._collection, collection)),
                                methods=METHODS))
            routes.append(Route(f"{base}/{collection}/{{sid}}.json", endpoint(partial(self._instance, collection)),
                                methods=METHODS))
        routes.append(Route("/{path:path}", endpoint(self._unknown), methods=METHODS))
        return routes

    def handle(self, handler: Callable[[TwilioCall], Response], call: TwilioCall) -> Response:
        try:
            self._authenticate(call.headers)
            return handler(call)
        except TwilioError as error:
            return error_response(error)
        except Exception as exc:  # a simulator bug must answer, not hang the client
            return error_response(TwilioError(500, 20500, f"Internal simulator error: {type(exc).__name__}"))

    def _json(self, status: int, payload: Any) -> Response:
        headers = {"Twilio-Request-Id": new_sid("RQ"), "Twilio-Concurrent-Requests": str(self.sim.in_flight)}
        return Response(json.dumps(payload).encode(), status, headers, media_type="application/json")

    # ----- routing -----------------------------------------------------------------------------------

    def _authenticate(self, headers: Headers) -> None:
        """HTTP Basic with Account SID + Auth Token, or API Key SID + secret; else 401 code 20003."""
        header = headers.get("authorization") or ""
        user, secret = "", ""
        if header.startswith("Basic "):
            try:
                user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = ""
        sim = self.sim
        valid = (user == sim.account_sid and secret == sim.auth_token) or (
            user in sim.api_keys and secret == sim.api_keys[user])
        if not valid:
            raise TwilioError(401, 20003, "Authenticate")

    def _check_account(self, account: str) -> None:
        if account != self.sim.account_sid:
            raise TwilioError(403, 20003, "Permission Denied: the AccountSid in the URL is not yours")

    def _collection(self, collection: str, call: TwilioCall) -> Response:
        self._check_account(call.params["account"])
        if call.method == "POST":
            create = self._create_message if collection == "Messages" else self._create_call
            record = create(call.form())
            if self.sim.take_accept_then_fail():
                return fault_response(self.sim.faults.fail_status)  # accepted, but the answer is lost
            return self._json(201, record.resource)
        if call.method == "GET":
            return self._json(200, self._list(_KIND[collection], collection, call.query))
        raise TwilioError(405, 20004, f"Method {call.method} not allowed on {call.path}")

    def _instance(self, collection: str, call: TwilioCall) -> Response:
        self._check_account(call.params["account"])
        if call.method != "GET":
            raise TwilioError(405, 20004, f"Method {call.method} not allowed on {call.path}")
        record = self.sim.state.get(call.params["sid"])
        if record is None or record.kind != _KIND[collection]:
            raise TwilioError(404, 20404, f"The requested resource {call.path} was not found")
        return self._json(200, record.resource)

    def _unknown(self, call: TwilioCall) -> Response:
        match = _ACCOUNT_PATH.match(call.path)
        if match is not None:
            self._check_account(match["account"])
        raise TwilioError(404, 20404, f"The requested resource {call.path} was not found")

    # ----- creates -----------------------------------------------------------------------------------

    def _create_message(self, form: Form) -> Record:
        to, from_ = _one(form, "To"), _one(form, "From")
        service = _one(form, "MessagingServiceSid")
        body = _one(form, "Body")
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if service and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
            raise TwilioError(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        if from_ and not (E164.match(from_) or re.fullmatch(r"[A-Za-z0-9 ]{1,11}", from_)):
            raise TwilioError(400, 21212, f"The 'From' number {from_} is not a valid phone number or "
                              "alphanumeric sender ID.")
        if body is None and not form.get("MediaUrl") and not _one(form, "ContentSid"):
            raise TwilioError(400, 21602, "Message body is required.")
        if body is not None and len(body) > _MAX_BODY:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        validity = _one(form, "ValidityPeriod")
        if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 36000):
            raise TwilioError(400, 21609, "ValidityPeriod must be between 1 and 36000 seconds.")
        self._check_recipient(to, sms=True)
        return self.sim.state.add_message(to, from_, body or "", service, _one(form, "StatusCallback"))

    def _create_call(self, form: Form) -> Record:
        to, from_ = _one(form, "To"), _one(form, "From")
        if not to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not E164.match(from_):
            raise TwilioError(400, 21212, f"The 'From' number {from_} is not a valid phone number.")
        twiml, url, app = _one(form, "Twiml"), _one(form, "Url"), _one(form, "ApplicationSid")
        if not (twiml or url or app):
            raise TwilioError(400, 21205, "Either Url, Twiml or ApplicationSid is required.")
        if twiml and not url and len(twiml) > _MAX_TWIML:
            raise TwilioError(400, 32018, "Twiml size exceeded maximum allowed value of 4000 characters")
        method = (_one(form, "StatusCallbackMethod") or "POST").upper()
        if method not in ("GET", "POST"):
            raise TwilioError(400, 21608, f"StatusCallbackMethod {method} must be GET or POST.")
        self._check_recipient(to, sms=False)
        events = [event for value in form.get("StatusCallbackEvent", []) for event in value.split(" ")]
        return self.sim.state.add_call(to, from_, _one(form, "StatusCallback"), method, events,
                                       twiml=None if url else twiml)  # Twiml is ignored when Url is given

    def _check_recipient(self, to: str, *, sms: bool) -> None:
        """Synchronous recipient errors: invalid (21211), opted out (21610), or a rule's `reject` code."""
        state = self.sim.state
        if not E164.match(to):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        with state.lock:
            opted_out = to in state.opted_out
        if sms and opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        reject = state.rule_for(to).reject
        if reject:
            raise TwilioError(400, reject, f"The 'To' number {to} was rejected (simulated error {reject}).")

    # ----- lists -------------------------------------------------------------------------------------

    def _list(self, kind: str, collection: str, query: Form) -> dict[str, Any]:
        """A list page with Twilio's paging keys; filters are those of the real list endpoints."""
        try:
            page_size = min(1000, max(1, int(_one(query, "PageSize") or 50)))
            page = max(0, int(_one(query, "Page") or 0))
        except ValueError as exc:
            raise TwilioError(400, 20001, "PageSize and Page must be integers") from exc
        rows = [record.resource for record in self.sim.state.listing(kind) if _matches(record, query)]
        start = page * page_size
        chosen = rows[start:start + page_size]
        filters = {name: values[0] for name, values in query.items()
                   if name not in ("PageSize", "Page", "PageToken") and values}
        base = f"/{API_VERSION}/Accounts/{self.sim.account_sid}/{collection}.json"

        def page_uri(number: int) -> str:
            params = {**filters, "PageSize": page_size, "Page": number}
            if number:
                params["PageToken"] = f"PA{new_sid('')[:32]}"
            return f"{base}?{urlencode(params)}"

        has_next = start + page_size < len(rows)
        return {
            _LIST_KEY[kind]: chosen, "end": start + max(len(chosen), 1) - 1,
            "first_page_uri": page_uri(0), "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page, "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page else None, "start": start, "uri": page_uri(page),
        }


def _one(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _parse_filter(value: str) -> datetime | date:
    """`YYYY-MM-DD` (a whole day) or an ISO 8601 date-time (`2026-01-02T03:04:05Z`)."""
    if len(value) == 10:
        return date.fromisoformat(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _compare(moment: datetime | None, value: str, op: str) -> bool:
    if moment is None:
        return False
    try:
        bound = _parse_filter(value)
    except ValueError as exc:
        raise TwilioError(400, 20001, f"Invalid date filter value {value!r}") from exc
    whole_day = not isinstance(bound, datetime)
    left: datetime | date = moment.date() if whole_day else moment.replace(microsecond=0)
    if op == "=":
        return left == bound
    return left <= bound if op == "<" else left >= bound  # type: ignore[operator]


def _matches(record: Record, query: Form) -> bool:
    """The list filters of Messages (To, From, DateSent[<>]) and Calls (To, From, Status, Start/EndTime)."""
    resource = record.resource
    for name in ("To", "From", "Status"):
        wanted = _one(query, name)
        if wanted is not None and resource.get(name.lower()) != wanted:
            return False
    fields = {"DateSent": "date_sent", "StartTime": "start_time", "EndTime": "end_time"}
    for prefix, field_name in fields.items():
        for op in ("=", "<", ">"):
            value = _one(query, prefix if op == "=" else prefix + op)
            if value is not None:
                raw = resource.get(field_name)
                if not _compare(parsedate_to_datetime(raw) if raw else None, value, op):
                    return False
    return True
