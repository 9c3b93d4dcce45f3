"""Twilio REST API simulator (Messages and Calls of API 2010-04-01) on a loopback port.

The official `twilio` client talks to it unchanged (only the base URL differs), so the resource's
production code paths are what the tests exercise. Lifecycles, status callbacks (signed like Twilio's),
failure rules, opt-outs, a concurrency limit answering 429 and latency are controlled through an admin
API: Python methods on `TwilioSimulator`, and the same operations as JSON under `/_admin/...`.

Run: `python -m b1twilio_sim.twilio --host 127.0.0.1 --port 0`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import threading
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from b1twilio_sim._http import LoggedRequest, SimulatorHandler, SimulatorHTTPServer, run_cli
from b1twilio_sim.twilio_state import (
    API_VERSION,
    E164,
    Record,
    TwilioState,
    new_sid,
)

DEMO_ACCOUNT_SID = "AC" + "b1" * 16
DEMO_AUTH_TOKEN = "c0ffee" * 5 + "00"

_ACCOUNT_PATH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/(?P<rest>.+)$")
_COLLECTION = re.compile(r"^(?P<kind>Messages|Calls)\.json$")
_INSTANCE = re.compile(r"^(?P<kind>Messages|Calls)/(?P<sid>[^/]+)\.json$")
_KIND = {"Messages": "message", "Calls": "call"}
_LIST_KEY = {"message": "messages", "call": "calls"}
_MAX_BODY = 1600
_MAX_TWIML = 4000


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


class TwilioHandler(SimulatorHandler):
    """Routes the REST endpoints (auth, rate limit, faults) and the JSON admin API."""

    server: TwilioSimulator

    def route(self, method: str, path: str, body: bytes) -> None:
        parsed = urlsplit(path)
        if parsed.path.startswith("/_admin/"):
            self._admin(method, parsed.path, body)
            return
        if not self.server.acquire_slot():
            self._error(TwilioError(429, 20429, "Too Many Requests"))
            return
        try:
            if self.apply_faults():
                return
            self._api(method, parsed.path, parse_qs(parsed.query, keep_blank_values=True), body)
        except TwilioError as exc:
            self._error(exc)
        finally:
            self.server.release_slot()

    # ----- REST API ----------------------------------------------------------------------------------

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        match = _ACCOUNT_PATH.match(path)
        self._authenticate()
        if match is None:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        if match["account"] != self.server.state.account_sid:
            raise TwilioError(403, 20003, "Permission Denied: the AccountSid in the URL is not yours")
        rest = match["rest"]
        collection = _COLLECTION.match(rest)
        instance = _INSTANCE.match(rest)
        if collection and method == "POST":
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            create = self._create_message if collection["kind"] == "Messages" else self._create_call
            record = create(form)
            if self.server.take_accept_then_fail():
                self.reply_fault(self.server.faults.fail_status)  # accepted, but the answer is lost
                return
            self._json(201, record.resource)
        elif collection and method == "GET":
            self._json(200, self._list(_KIND[collection["kind"]], collection["kind"], query))
        elif instance and method == "GET":
            record = self.server.state.get(instance["sid"])
            if record is None or record.kind != _KIND[instance["kind"]]:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            self._json(200, record.resource)
        elif collection or instance:
            raise TwilioError(405, 20004, f"Method {method} not allowed on {path}")
        else:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")

    def _authenticate(self) -> None:
        """HTTP Basic with Account SID + Auth Token, or API Key SID + secret; else 401 code 20003."""
        header = self.headers.get("Authorization") or ""
        user, secret = "", ""
        if header.startswith("Basic "):
            try:
                user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = ""
        state = self.server.state
        valid = (user == state.account_sid and secret == state.auth_token) or (
            user in self.server.api_keys and secret == self.server.api_keys[user])
        if not valid:
            raise TwilioError(401, 20003, "Authenticate")

    def _create_message(self, form: dict[str, list[str]]) -> Record:
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
        return self.server.state.add_message(to, from_, body or "", service, _one(form, "StatusCallback"))

    def _create_call(self, form: dict[str, list[str]]) -> Record:
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
        return self.server.state.add_call(to, from_, _one(form, "StatusCallback"), method, events)

    def _check_recipient(self, to: str, *, sms: bool) -> None:
        """Synchronous recipient errors: invalid (21211), opted out (21610), or a rule's `reject` code."""
        state = self.server.state
        if not E164.match(to):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        with state.lock:
            opted_out = to in state.opted_out
        if sms and opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        reject = state.rule_for(to).reject
        if reject:
            raise TwilioError(400, reject, f"The 'To' number {to} was rejected (simulated error {reject}).")

    def _list(self, kind: str, collection: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """A list page with Twilio's paging keys; filters are those of the real list endpoints."""
        try:
            page_size = min(1000, max(1, int(_q(query, "PageSize") or 50)))
            page = max(0, int(_q(query, "Page") or 0))
        except ValueError as exc:
            raise TwilioError(400, 20001, "PageSize and Page must be integers") from exc
        rows = [record.resource for record in self.server.state.listing(kind)
                if _matches(record, query)]
        start = page * page_size
        chosen = rows[start:start + page_size]
        filters = {name: values[0] for name, values in query.items()
                   if name not in ("PageSize", "Page", "PageToken") and values}
        base = f"/{API_VERSION}/Accounts/{self.server.state.account_sid}/{collection}.json"

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

    # ----- answers -----------------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        headers = {"Twilio-Request-Id": new_sid("RQ"),
                   "Twilio-Concurrent-Requests": str(self.server.in_flight)}
        self.reply(status, payload, headers=headers)

    def _error(self, error: TwilioError) -> None:
        headers = {"Twilio-Request-Id": new_sid("RQ")}
        if error.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        self.reply(error.status, error.body(), headers=headers)

    def reply_fault(self, status: int) -> None:
        self._error(TwilioError(status, 20500 if status == 500 else 20000 + status,
                                "Service temporarily unavailable (simulated fault)"))

    # ----- admin API ---------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: bytes) -> None:
        try:
            payload = json.loads(body) if body else {}
            answer = self.server.admin(method, path.removeprefix("/_admin/").strip("/"), payload)
        except (ValueError, TypeError, KeyError) as exc:
            self.reply(400, {"error": str(exc)})
            return
        if answer is None:
            self.reply(404, {"error": f"no admin operation {method} {path}"})
        else:
            self.reply(200, answer)


class TwilioSimulator(SimulatorHTTPServer):
    """The simulated Twilio account behind an HTTP server; admin methods are for tests and the demo."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, account_sid: str = DEMO_ACCOUNT_SID,
                 auth_token: str = DEMO_AUTH_TOKEN, api_keys: dict[str, str] | None = None,
                 status_delay_s: float = 0.2, max_concurrency: int | None = None, next_429: int = 0,
                 latency_s: float = 0.0, auto_advance: bool = True, callback_timeout_s: float = 2.0) -> None:
        super().__init__((host, port), TwilioHandler)
        self.state = TwilioState(account_sid, auth_token, status_delay_s=status_delay_s,
                                 auto_advance=auto_advance, callback_timeout_s=callback_timeout_s)
        self.api_keys = dict(api_keys or {})
        self.max_concurrency = max_concurrency
        self.next_429 = next_429
        self.in_flight = 0
        self.rejected_429 = 0
        self.faults.latency_s = latency_s
        self._slots = threading.Lock()

    @property
    def account_sid(self) -> str:
        return self.state.account_sid

    @property
    def auth_token(self) -> str:
        return self.state.auth_token

    def start_background(self) -> TwilioSimulator:
        """Serve from a daemon thread, with the lifecycle worker running."""
        self.state.start()
        super().start_background()
        return self

    def stop(self) -> None:
        super().stop()
        self.state.stop()

    # ----- concurrency limit -------------------------------------------------------------------------

    def acquire_slot(self) -> bool:
        """Take an in-flight slot; False (answer 429) when forced or when the limit is reached."""
        with self._slots:
            if self.next_429 > 0:
                self.next_429 -= 1
                self.rejected_429 += 1
                return False
            if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
                self.rejected_429 += 1
                return False
            self.in_flight += 1
            return True

    def release_slot(self) -> None:
        with self._slots:
            self.in_flight -= 1

    # ----- admin (Python) ----------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """Every message, oldest first, with `status_history` and `callbacks` sent."""
        return [record.as_admin_dict() for record in reversed(self.state.listing("message"))]

    def calls(self) -> list[dict[str, Any]]:
        return [record.as_admin_dict() for record in reversed(self.state.listing("call"))]

    def record(self, sid: str) -> dict[str, Any] | None:
        found = self.state.get(sid)
        return None if found is None else found.as_admin_dict()

    def api_requests(self) -> list[LoggedRequest]:
        """The REST requests received (admin calls excluded), in arrival order."""
        with self.lock:
            return [entry for entry in self.requests if not entry.path.startswith("/_admin/")]

    def set_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        """Per-number outcomes, e.g. `{"+15005550009": {"message": "undelivered", "error_code": 30003}}`
        or `{"+1...": {"call": "no-answer"}}` or `{"+1...": {"reject": 21614}}`."""
        self.state.set_rules(rules)

    def clear_rules(self) -> None:
        with self.state.lock:
            self.state.rules.clear()

    def opt_out(self, *numbers: str, opted_out: bool = True) -> None:
        """Mark recipients as having replied STOP: SMS to them answers 21610."""
        with self.state.lock:
            if opted_out:
                self.state.opted_out.update(numbers)
            else:
                self.state.opted_out.difference_update(numbers)

    def set_latency(self, seconds: float) -> None:
        self.faults.latency_s = seconds

    def set_rate_limit(self, max_concurrency: int | None = None, next_429: int = 0) -> None:
        """Answer 429 (20429) beyond `max_concurrency` requests in flight and to the next `next_429`."""
        with self._slots:
            self.max_concurrency = max_concurrency
            self.next_429 = next_429

    def set_faults(self, fail_next: int = 0, fail_status: int = 503, fail_all: bool = False,
                   drop_next: int = 0, accept_then_fail_next: int = 0) -> None:
        with self.lock:
            self.faults.fail_next, self.faults.fail_status = fail_next, fail_status
            self.faults.fail_all, self.faults.drop_next = fail_all, drop_next
            self.faults.accept_then_fail_next = accept_then_fail_next

    def set_callback_mode(self, *modes: str) -> None:
        """`normal`, or any of `fail` (callbacks dropped), `duplicate` (each sent twice), `out_of_order`
        (final status first, intermediate ones after it)."""
        self.state.set_callback_modes(modes)

    def set_auto_advance(self, enabled: bool) -> None:
        """Pause (False) or resume the background lifecycle; `tick()`/`advance()` work either way."""
        self.state.auto_advance = enabled

    def advance(self) -> int:
        """Push every message and call to its final status now; returns the number of status changes."""
        return self.state.advance()

    def tick(self) -> int:
        return self.state.tick()

    def wait_callbacks(self, timeout_s: float = 5.0) -> bool:
        return self.state.wait_callbacks(timeout_s)

    def reset(self) -> None:
        """Forget messages, calls, rules, opt-outs, faults, limits and the request log."""
        self.state.reset()
        self.set_rate_limit(None, 0)
        self.set_faults()
        self.set_latency(0.0)
        with self.lock:
            self.requests.clear()

    def admin_state(self) -> dict[str, Any]:
        with self.state.lock:
            return {"account_sid": self.account_sid,
                    "rules": {number: rule.as_dict() for number, rule in self.state.rules.items()},
                    "opted_out": sorted(self.state.opted_out),
                    "callback_modes": sorted(self.state.callback_modes) or ["normal"],
                    "max_concurrency": self.max_concurrency, "next_429": self.next_429,
                    "rejected_429": self.rejected_429, "latency_s": self.faults.latency_s,
                    "auto_advance": self.state.auto_advance,
                    "messages": len(self.state.listing("message")), "calls": len(self.state.listing("call"))}

    def admin(self, method: str, operation: str, payload: dict[str, Any]) -> Any:
        """The admin API over HTTP (`/_admin/<operation>`); None means no such operation."""
        getters = {
            "messages": lambda: {"messages": self.messages()},
            "calls": lambda: {"calls": self.calls()},
            "state": self.admin_state,
            "requests": lambda: {"requests": [
                {"method": entry.method, "path": entry.path, "status": entry.status, "at": entry.at}
                for entry in self.api_requests()]},
        }
        if method == "GET" and operation in getters:
            return getters[operation]()
        if method == "DELETE" and operation == "rules":
            self.clear_rules()
            return {"ok": True}
        setters = {
            "rules": lambda: self.set_rules(payload),
            "opt_out": lambda: self.opt_out(*payload["numbers"], opted_out=payload.get("opted_out", True)),
            "latency": lambda: self.set_latency(float(payload["seconds"])),
            "rate_limit": lambda: self.set_rate_limit(payload.get("max_concurrency"),
                                                      int(payload.get("next_429", 0))),
            "faults": lambda: self.set_faults(**payload),
            "callbacks": lambda: self.set_callback_mode(*_modes(payload)),
            "reset": self.reset,
            "auto_advance": lambda: self.set_auto_advance(bool(payload["enabled"])),
        }
        if method == "POST" and operation in ("advance", "tick"):
            return {"moved": self.advance() if operation == "advance" else self.tick()}
        if method == "POST" and operation in setters:
            setters[operation]()
            return {"ok": True, "state": self.admin_state()}
        return None


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


_q = _one


def _modes(payload: dict[str, Any]) -> list[str]:
    modes = payload.get("modes", payload.get("mode", "normal"))
    return [modes] if isinstance(modes, str) else list(modes)


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


def _matches(record: Record, query: dict[str, list[str]]) -> bool:
    """The list filters of Messages (To, From, DateSent[<>]) and Calls (To, From, Status, Start/EndTime)."""
    resource = record.resource
    for name in ("To", "From", "Status"):
        wanted = _q(query, name)
        if wanted is not None and resource.get(name.lower()) != wanted:
            return False
    fields = {"DateSent": "date_sent", "StartTime": "start_time", "EndTime": "end_time"}
    for prefix, field_name in fields.items():
        for op in ("=", "<", ">"):
            value = _q(query, prefix if op == "=" else prefix + op)
            if value is not None:
                raw = resource.get(field_name)
                if not _compare(parsedate_to_datetime(raw) if raw else None, value, op):
                    return False
    return True


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status-delay", type=float, default=1.0,
                        help="seconds between status changes (default 1)")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="answer 429 beyond this many requests in flight (default: no limit)")


def _build(args: argparse.Namespace) -> TwilioSimulator:
    """Credentials from TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN when set; else the printed demo ones."""
    account_sid = os.environ.get("TWILIO_ACCOUNT_SID") or ""
    auth_token = os.environ.get("TWILIO_AUTH_TOKEN") or ""
    api_keys = {}
    if os.environ.get("TWILIO_API_KEY") and os.environ.get("TWILIO_API_SECRET"):
        api_keys[os.environ["TWILIO_API_KEY"]] = os.environ["TWILIO_API_SECRET"]
    if account_sid and (auth_token or api_keys):
        print(f"using TWILIO_ACCOUNT_SID={account_sid} and the credentials from the environment",
              file=sys.stderr, flush=True)
    else:
        account_sid, auth_token = account_sid or DEMO_ACCOUNT_SID, auth_token or DEMO_AUTH_TOKEN
        print(f"demo credentials: TWILIO_ACCOUNT_SID={account_sid} TWILIO_AUTH_TOKEN={DEMO_AUTH_TOKEN}",
              file=sys.stderr, flush=True)
    return TwilioSimulator(args.host, args.port, account_sid=account_sid, auth_token=auth_token,
                           api_keys=api_keys, status_delay_s=args.status_delay,
                           max_concurrency=args.max_concurrency)


def main(argv: list[str] | None = None) -> None:
    run_cli("Twilio REST API simulator (Messages, Calls, status callbacks)", _build, _add_arguments, argv)


__all__ = ["DEMO_ACCOUNT_SID", "DEMO_AUTH_TOKEN", "TwilioError", "TwilioSimulator", "main"]

if __name__ == "__main__":
    main()
