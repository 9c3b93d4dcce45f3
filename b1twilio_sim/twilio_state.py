"""State of the Twilio simulator: messages and calls, their lifecycles and failure rules.

Kept apart from the HTTP layer so the lifecycle (what Twilio would do after accepting a request) can be
driven both by a background worker (demo: statuses move on by themselves) and by `advance()` / `tick()`
(tests: push every lifecycle to its end without sleeping).

A message goes queued (accepted first with a Messaging Service) -> sent -> delivered (or undelivered,
failed, read). A call goes queued -> ringing -> in-progress -> completed (or busy, no-answer, failed): the
Call resource never shows `initiated`, which Twilio reports only as a status callback event when it starts
dialling; `start_time` is set then.

The handset at the other end (`twilio_inbound.Handset`) can answer: a rule's `reply` is sent back once a
message is delivered, a rule's `press` is keyed in once a call is answered, and that call waits in
`in-progress` until the Gather action's webhook has answered (it hangs up only after the keypress).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from b1twilio_sim.twilio_callbacks import (
    API_VERSION,
    FINAL_CALL_STATUSES,
    CallbackAttempt,
    CallbackSender,
    callback_params,
    now_utc,
    rfc2822,
)
from b1twilio_sim.twilio_inbound import DIGITS, Handset, WebhookExchange

E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# Twilio's own wording for the asynchronous delivery errors (they land in `error_message`).
DELIVERY_ERRORS: dict[int, str] = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}
_DEFAULT_ERROR = {"undelivered": 30003, "failed": 30008}
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")  # sent as an escape and the character: two septets each


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def num_segments(body: str) -> int:
    """SMS segment count: GSM-7 160/153 septets per segment (the extension characters take two), otherwise
    UCS-2 70/67 code units (a character beyond the Basic Multilingual Plane, an emoji, takes two)."""
    if set(body) <= _GSM7 | _GSM7_EXTENSION:
        units, single, multi = sum(2 if c in _GSM7_EXTENSION else 1 for c in body), 160, 153
    else:
        units, single, multi = sum(2 if ord(c) > 0xFFFF else 1 for c in body), 70, 67
    return 1 if units <= single else -(-units // multi)


@dataclass
class Record:
    """A message or call: its public JSON resource plus the lifecycle still ahead of it."""

    kind: str  # "message" | "call"
    resource: dict[str, Any]
    steps: deque[str]
    order: int
    created: datetime
    status_callback: str | None = None
    callback_method: str = "POST"
    events: frozenset[str] = frozenset({"completed"})
    error_code: int | None = None
    duration_s: int = 0
    next_at: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)
    callbacks: list[CallbackAttempt] = field(default_factory=list)
    held: list[dict[str, str]] = field(default_factory=list)
    outbox: deque[dict[str, str]] = field(default_factory=deque)
    draining: bool = False
    sequence: int = 0
    twiml: str | None = None  # a call's inline TwiML (the simulator never fetches a `Url`)
    handset: str | None = None  # what the handset answers: a reply body (message) or digits (call)
    waiting: bool = False  # the lifecycle pauses while the handset's keypress webhook is under way
    webhooks: list[WebhookExchange] = field(default_factory=list)

    @property
    def sid(self) -> str:
        return str(self.resource["sid"])

    @property
    def status(self) -> str:
        return str(self.resource["status"])

    def as_admin_dict(self) -> dict[str, Any]:
        return {**self.resource, "status_history": list(self.history),
                "callbacks": [attempt.as_dict() for attempt in self.callbacks],
                "status_callback": self.status_callback, "pending_steps": list(self.steps),
                "twiml": self.twiml, "webhooks": [exchange.as_dict() for exchange in self.webhooks]}


@dataclass
class Rule:
    """What happens to messages/calls to one number (set through the admin API)."""

    message: str = "delivered"  # delivered | undelivered | failed | read | sent
    call: str = "completed"  # completed | busy | no-answer | failed
    error_code: int | None = None
    reject: int | None = None  # answer the create request itself with this 2xxxx error code
    call_duration: int = 12
    reply: str | None = None  # the handset replies this body to each message delivered to it
    press: str | None = None  # the handset presses these digits in each call it answers

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        unknown = set(data) - {"message", "call", "error_code", "reject", "call_duration", "reply", "press"}
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}: use message, call, error_code, reject, "
                             "call_duration, reply, press")
        rule = cls(**data)
        if rule.reply is not None and not (isinstance(rule.reply, str) and rule.reply):
            raise ValueError("rule reply must be a non-empty message body")
        if rule.press is not None and not (isinstance(rule.press, str) and DIGITS.match(rule.press)):
            raise ValueError(f"rule press {rule.press!r} must be keypad digits (0-9, *, #)")
        if rule.message not in {"delivered", "undelivered", "failed", "read", "sent"}:
            raise ValueError(f"rule message outcome {rule.message!r} is not one of delivered, undelivered, "
                             "failed, read, sent")
        if rule.call not in {"completed", "busy", "no-answer", "failed"}:
            raise ValueError(f"rule call outcome {rule.call!r} is not one of completed, busy, no-answer, "
                             "failed")
        return rule

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "call": self.call, "error_code": self.error_code,
                "reject": self.reject, "call_duration": self.call_duration, "reply": self.reply,
                "press": self.press}


class TwilioState:
    """Everything the simulated Twilio account holds, guarded by one lock."""

    def __init__(self, account_sid: str, auth_token: str, *, status_delay_s: float = 0.2,
                 auto_advance: bool = True, callback_timeout_s: float = 2.0, sms_url: str | None = None) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.status_delay_s = status_delay_s
        self.auto_advance = auto_advance
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}
        self.rules: dict[str, Rule] = {}
        self.opted_out: set[str] = set()
        self.callbacks = CallbackSender(auth_token, self.lock, callback_timeout_s)
        self.handset = Handset(self, sms_url)
        self._order = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # ----- records -----------------------------------------------------------------------------------

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def rule_for(self, number: str) -> Rule:
        with self.lock:
            return self.rules.get(number, Rule())

    def add_message(self, to: str, from_: str | None, body: str, messaging_service_sid: str | None,
                    status_callback: str | None, *, direction: str = "outbound-api") -> Record:
        """Accept a message: `queued` (or `accepted` with a Messaging Service) and plan its lifecycle. Only
        messages sent through the REST API get the recipient rule's `reply`, so a handset never answers the
        reply its own reply produced."""
        rule = self.rule_for(to)
        first = "accepted" if messaging_service_sid else "queued"
        created, resource = self._message_resource(to, from_, body, messaging_service_sid, direction, first)
        steps = (["queued"] if messaging_service_sid else []) + _message_steps(rule.message)
        error = rule.error_code or _DEFAULT_ERROR.get(rule.message)
        record = Record("message", resource, deque(steps), 0, created, status_callback, error_code=error,
                        handset=rule.reply if direction == "outbound-api" else None)
        return self._store(record, first)

    def add_inbound_message(self, from_: str, to: str, body: str, messaging_service_sid: str | None) -> Record:
        """Record a message a handset sent to our number: `inbound`, already `received`."""
        created, resource = self._message_resource(to, from_, body, messaging_service_sid, "inbound", "received")
        return self._store(Record("message", resource, deque(), 0, created), "received")

    def _message_resource(self, to: str, from_: str | None, body: str, messaging_service_sid: str | None,
                          direction: str, status: str) -> tuple[datetime, dict[str, Any]]:
        created = now_utc()
        sid = new_sid("SM")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        return created, {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": rfc2822(created), "date_sent": rfc2822(created), "date_updated": rfc2822(created),
            "direction": direction, "error_code": None, "error_message": None, "from": from_,
            "messaging_service_sid": messaging_service_sid, "num_media": "0",
            "num_segments": str(num_segments(body)), "price": None, "price_unit": "USD", "sid": sid,
            "status": status, "subresource_uris": {"media": uri.replace(".json", "/Media.json"),
                                                   "feedback": uri.replace(".json", "/Feedback.json")},
            "to": to, "uri": uri,
        }

    def add_call(self, to: str, from_: str, status_callback: str | None, callback_method: str,
                 events: Iterable[str], twiml: str | None = None) -> Record:
        """Accept a call: `queued`, with the lifecycle its number's rule asks for."""
        rule = self.rule_for(to)
        created = now_utc()
        sid = new_sid("CA")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"
        base = uri[: -len(".json")]
        resource: dict[str, Any] = {
            "account_sid": self.account_sid, "annotation": None, "answered_by": None,
            "api_version": API_VERSION, "caller_name": None, "date_created": rfc2822(created),
            "date_updated": rfc2822(created), "direction": "outbound-api", "duration": None,
            "end_time": None, "forwarded_from": None, "from": from_, "from_formatted": from_,
            "group_sid": None, "parent_call_sid": None, "phone_number_sid": new_sid("PN"), "price": None,
            "price_unit": "USD", "queue_time": "0", "sid": sid, "start_time": None, "status": "queued",
            "subresource_uris": {name: f"{base}/{name.title().replace('_', '')}.json"
                                 for name in ("notifications", "recordings", "events", "payments")},
            "to": to, "to_formatted": to, "trunk_sid": None, "uri": uri,
        }
        requested = {event.strip() for event in events if event.strip()} | {"completed"}
        record = Record("call", resource, deque(_call_steps(rule.call)), 0, created, status_callback,
                        callback_method=callback_method, events=frozenset(requested),
                        error_code=rule.error_code, duration_s=rule.call_duration, twiml=twiml,
                        handset=rule.press)
        return self._store(record, "queued")

    def _store(self, record: Record, first_status: str) -> Record:
        with self.lock:
            record.order = self._next_order()
            record.history.append({"status": first_status, "at": record.created.isoformat()})
            record.next_at = time.monotonic() + self.status_delay_s
            self.records[record.sid] = record
        return record

    def get(self, sid: str) -> Record | None:
        with self.lock:
            return self.records.get(sid)

    def listing(self, kind: str) -> list[Record]:
        """Records of one kind, newest first (Twilio's list order)."""
        with self.lock:
            chosen = [record for record in self.records.values() if record.kind == kind]
        return sorted(chosen, key=lambda record: record.order, reverse=True)

    # ----- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="twilio-sim-lifecycle", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        self.handset.close()  # first: its webhooks are sent through the callback sender's client
        self.callbacks.close()

    def _run(self) -> None:
        interval = max(0.005, min(0.05, self.status_delay_s / 4))
        while not self._stop.wait(interval):
            if self.auto_advance:
                self._step_due(time.monotonic())

    def _step_due(self, moment: float) -> None:
        with self.lock:
            due = [record for record in self._movable() if record.next_at <= moment]
            for record in due:
                self._step(record)
                record.next_at = moment + self.status_delay_s

    def _movable(self) -> list[Record]:
        """Unfinished records not paused for the handset (lock held)."""
        return [record for record in self.records.values() if record.steps and not record.waiting]

    def tick(self, wait_s: float = 5.0) -> int:
        """Move every unfinished message and call one status on; returns how many moved. The handset's
        webhooks started by the previous tick finish first, so a call pressed its keys before it ends."""
        self.handset.wait(wait_s)
        with self.lock:
            moving = self._movable()
            for record in moving:
                self._step(record)
        return len(moving)

    def advance(self, wait_s: float = 5.0) -> int:
        """Push every lifecycle to its final status now, with the handset's replies and keypresses (and
        the messages they produce) on the way, and wait for the callbacks to go out."""
        deadline = time.monotonic() + wait_s
        moved = 0
        while True:
            with self.lock:
                for record in list(self.records.values()):
                    while record.steps and not record.waiting:
                        self._step(record)
                        moved += 1
            self.handset.wait(max(0.0, deadline - time.monotonic()))
            with self.lock:
                if not self._movable():
                    break
        self.callbacks.wait(max(0.0, deadline - time.monotonic()))
        return moved

    def wait_callbacks(self, timeout_s: float = 5.0) -> bool:
        """Wait until the handset's webhooks and every queued callback have been sent (or failed); False on
        timeout."""
        deadline = time.monotonic() + timeout_s
        return self.handset.wait(timeout_s) and self.callbacks.wait(max(0.0, deadline - time.monotonic()))

    def _step(self, record: Record) -> None:
        """Apply the next status (lock held) and queue the callbacks Twilio would send for it. A call's
        first step dials it: Twilio reports that as the `initiated` event before the status it reaches."""
        status = record.steps.popleft()
        moment = now_utc()
        resource = record.resource
        if record.kind == "call" and resource["start_time"] is None:
            resource["start_time"] = rfc2822(moment)
            self._notify(record, "initiated", moment, final=False)
        resource["status"] = status
        resource["date_updated"] = rfc2822(moment)
        record.history.append({"status": status, "at": moment.isoformat()})
        if record.kind == "message":
            self._message_changed(record, status)
        else:
            self._call_changed(record, status, moment)
        self._notify(record, status, moment, final=not record.steps)
        self.handset.status_reached(record, status)

    def _notify(self, record: Record, status: str, moment: datetime, *, final: bool) -> None:
        params = callback_params(record, self.account_sid, status, moment)
        if params is not None:
            self.callbacks.queue(record, params, final=final)

    def _message_changed(self, record: Record, status: str) -> None:
        resource = record.resource
        if status == "sent":
            segments = int(resource["num_segments"])
            resource["price"] = f"-{0.0079 * segments:.5f}"
        if status in ("undelivered", "failed"):
            resource["error_code"] = record.error_code
            resource["error_message"] = DELIVERY_ERRORS.get(record.error_code or 0, "Unknown error")

    def _call_changed(self, record: Record, status: str, moment: datetime) -> None:
        resource = record.resource
        if status in FINAL_CALL_STATUSES:
            resource["end_time"] = rfc2822(moment)
            answered = status == "completed"
            resource["duration"] = str(record.duration_s if answered else 0)
            if answered:
                resource["price"] = f"-{0.014 * max(1, -(-record.duration_s // 60)):.5f}"

    # ----- admin -------------------------------------------------------------------------------------

    def set_auth_token(self, auth_token: str) -> None:
        with self.lock:
            self.auth_token = auth_token
            self.callbacks.sign_with(auth_token)

    def set_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        parsed = {number: Rule.from_dict(rule) for number, rule in rules.items()}
        with self.lock:
            self.rules.update(parsed)

    def set_callback_modes(self, modes: Iterable[str]) -> None:
        self.callbacks.set_modes(set(modes))

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.rules.clear()
            self.opted_out.clear()
            self.callbacks.modes = set()
            self.handset.exchanges.clear()


def _message_steps(outcome: str) -> list[str]:
    return {
        "delivered": ["sent", "delivered"],
        "undelivered": ["sent", "undelivered"],
        "failed": ["failed"],
        "read": ["sent", "delivered", "read"],
        "sent": ["sent"],
    }[outcome]


def _call_steps(outcome: str) -> list[str]:
    """The statuses a call reaches after `queued`; the first of them is where it is dialled."""
    return {
        "completed": ["ringing", "in-progress", "completed"],
        "busy": ["ringing", "busy"],
        "no-answer": ["ringing", "no-answer"],
        "failed": ["failed"],
    }[outcome]
