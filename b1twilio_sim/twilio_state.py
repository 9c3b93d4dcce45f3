"""State of the Twilio simulator: messages and calls, their lifecycles and failure rules.

Kept apart from the HTTP layer so the lifecycle (what Twilio would do after accepting a request) can be
driven both by a background worker (demo: statuses move on by themselves) and by `advance()` / `tick()`
(tests: push every lifecycle to its end without sleeping).

A message goes queued (accepted first with a Messaging Service) -> sent -> delivered (or undelivered,
failed, read). A call goes queued -> ringing -> in-progress -> completed (or busy, no-answer, failed): the
Call resource never shows `initiated`, which Twilio reports only as a status callback event when it starts
dialling; `start_time` is set then.
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
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def num_segments(body: str) -> int:
    """SMS segment count: GSM-7 160/153 characters per segment, otherwise UCS-2 70/67."""
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    if len(body) <= single:
        return 1
    return -(-len(body) // multi)


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

    @property
    def sid(self) -> str:
        return str(self.resource["sid"])

    @property
    def status(self) -> str:
        return str(self.resource["status"])

    def as_admin_dict(self) -> dict[str, Any]:
        return {**self.resource, "status_history": list(self.history),
                "callbacks": [attempt.as_dict() for attempt in self.callbacks],
                "status_callback": self.status_callback, "pending_steps": list(self.steps)}


@dataclass
class Rule:
    """What happens to messages/calls to one number (set through the admin API)."""

    message: str = "delivered"  # delivered | undelivered | failed | read | sent
    call: str = "completed"  # completed | busy | no-answer | failed
    error_code: int | None = None
    reject: int | None = None  # answer the create request itself with this 2xxxx error code
    call_duration: int = 12

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        unknown = set(data) - {"message", "call", "error_code", "reject", "call_duration"}
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}: use message, call, error_code, reject, "
                             "call_duration")
        rule = cls(**data)
        if rule.message not in {"delivered", "undelivered", "failed", "read", "sent"}:
            raise ValueError(f"rule message outcome {rule.message!r} is not one of delivered, undelivered, "
                             "failed, read, sent")
        if rule.call not in {"completed", "busy", "no-answer", "failed"}:
            raise ValueError(f"rule call outcome {rule.call!r} is not one of completed, busy, no-answer, "
                             "failed")
        return rule

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "call": self.call, "error_code": self.error_code,
                "reject": self.reject, "call_duration": self.call_duration}


class TwilioState:
    """Everything the simulated Twilio account holds, guarded by one lock."""

    def __init__(self, account_sid: str, auth_token: str, *, status_delay_s: float = 0.2,
                 auto_advance: bool = True, callback_timeout_s: float = 2.0) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.status_delay_s = status_delay_s
        self.auto_advance = auto_advance
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}
        self.rules: dict[str, Rule] = {}
        self.opted_out: set[str] = set()
        self.callbacks = CallbackSender(auth_token, self.lock, callback_timeout_s)
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
                    status_callback: str | None) -> Record:
        """Accept a message: `queued` (or `accepted` with a Messaging Service) and plan its lifecycle."""
        rule = self.rule_for(to)
        created = now_utc()
        sid = new_sid("SM")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        first = "accepted" if messaging_service_sid else "queued"
        resource: dict[str, Any] = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": rfc2822(created), "date_sent": rfc2822(created), "date_updated": rfc2822(created),
            "direction": "outbound-api", "error_code": None, "error_message": None, "from": from_,
            "messaging_service_sid": messaging_service_sid, "num_media": "0",
            "num_segments": str(num_segments(body)), "price": None, "price_unit": "USD", "sid": sid,
            "status": first, "subresource_uris": {"media": uri.replace(".json", "/Media.json"),
                                                  "feedback": uri.replace(".json", "/Feedback.json")},
            "to": to, "uri": uri,
        }
        steps = (["queued"] if messaging_service_sid else []) + _message_steps(rule.message)
        error = rule.error_code or _DEFAULT_ERROR.get(rule.message)
        record = Record("message", resource, deque(steps), 0, created, status_callback, error_code=error)
        return self._store(record, first)

    def add_call(self, to: str, from_: str, status_callback: str | None, callback_method: str,
                 events: Iterable[str]) -> Record:
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
                        error_code=rule.error_code, duration_s=rule.call_duration)
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
        self.callbacks.close()

    def _run(self) -> None:
        interval = max(0.005, min(0.05, self.status_delay_s / 4))
        while not self._stop.wait(interval):
            if self.auto_advance:
                self._step_due(time.monotonic())

    def _step_due(self, moment: float) -> None:
        with self.lock:
            due = [record for record in self.records.values() if record.steps and record.next_at <= moment]
            for record in due:
                self._step(record)
                record.next_at = moment + self.status_delay_s

    def tick(self) -> int:
        """Move every unfinished message and call one status on; returns how many moved."""
        with self.lock:
            moving = [record for record in self.records.values() if record.steps]
            for record in moving:
                self._step(record)
        return len(moving)

    def advance(self, wait_callbacks_s: float = 5.0) -> int:
        """Push every lifecycle to its final status now and wait for the callbacks to go out."""
        moved = 0
        with self.lock:
            for record in list(self.records.values()):
                while record.steps:
                    self._step(record)
                    moved += 1
        self.callbacks.wait(wait_callbacks_s)
        return moved

    def wait_callbacks(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued callback has been sent (or failed); False on timeout."""
        return self.callbacks.wait(timeout_s)

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
