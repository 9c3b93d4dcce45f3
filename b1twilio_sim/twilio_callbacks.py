"""Status callbacks of the Twilio simulator: their parameters, signatures and delivery.

Twilio POSTs form-encoded callbacks signed with `X-Twilio-Signature` (HMAC-SHA1 of the URL and the sorted
parameters, keyed with the Auth Token) and carries an `I-Twilio-Idempotency-Token`. It sends no callback for
a message's initial status, does not retry a failed callback by default, and guarantees no order. The
callback modes reproduce what a receiver must survive: callbacks dropped (`fail`), sent twice
(`duplicate`), or the final status first (`out_of_order`). The handset's webhooks (inbound SMS, Gather
actions: `twilio_inbound`) are signed and sent by the same `CallbackSender`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

if TYPE_CHECKING:
    from b1twilio_sim.twilio_state import Record

API_VERSION = "2010-04-01"
CALLBACK_MODES = frozenset({"normal", "fail", "duplicate", "out_of_order"})
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Call status -> the StatusCallbackEvent that reports it. `initiated` is an event only (sent with
# CallStatus=initiated when Twilio starts dialling), never a status of the Call resource; the `answered`
# event carries CallStatus in-progress; every final status is reported by the `completed` event.
_CALL_EVENT = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date format: `Thu, 24 Aug 2023 05:01:45 +0000`."""
    return None if moment is None else format_datetime(moment.replace(microsecond=0))


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class CallbackAttempt:
    """One status callback as the simulator sent it (or dropped it), for tests to inspect."""

    url: str
    params: dict[str, str]
    signature: str
    status: str
    http_status: int | None = None
    error: str | None = None
    at: str = field(default_factory=lambda: now_utc().isoformat())

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "params": self.params, "signature": self.signature, "status": self.status,
                "http_status": self.http_status, "error": self.error, "at": self.at}


@dataclass(frozen=True)
class SignedRequest:
    """One webhook ready to send: the final URL, the form body (empty for a GET) and its signature."""

    method: str
    url: str
    form: dict[str, str]
    signature: str


def callback_params(record: Record, account_sid: str, status: str, moment: datetime) -> dict[str, str] | None:
    """The parameters of the callback reporting `status` (or the `initiated` event), or None when the
    record has no callback URL or the caller did not ask for that call event. Call callbacks are numbered
    (SequenceNumber from 0) in the order they are made."""
    if not record.status_callback:
        return None
    resource = record.resource
    if record.kind == "message":
        params = {"MessageSid": record.sid, "SmsSid": record.sid, "MessageStatus": status,
                  "SmsStatus": status, "AccountSid": account_sid, "To": resource["to"],
                  "ApiVersion": API_VERSION}
        if resource["from"]:
            params["From"] = resource["from"]
        if resource["messaging_service_sid"]:
            params["MessagingServiceSid"] = resource["messaging_service_sid"]
        if status in ("undelivered", "failed"):
            params["ErrorCode"] = str(record.error_code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = moment.strftime("%y%m%d%H%M")
        return params
    event = _CALL_EVENT.get(status, "completed" if status in FINAL_CALL_STATUSES else "")
    if event not in record.events:
        return None
    params = {"CallSid": record.sid, "AccountSid": account_sid, "From": resource["from"],
              "To": resource["to"], "Called": resource["to"], "Caller": resource["from"],
              "CallStatus": status, "ApiVersion": API_VERSION, "Direction": "outbound-api",
              "Timestamp": rfc2822(moment) or "", "CallbackSource": "call-progress-events",
              "SequenceNumber": str(record.sequence)}
    record.sequence += 1
    if status in FINAL_CALL_STATUSES:
        params["CallDuration"] = resource["duration"] or "0"
    if status == "failed" and record.error_code:
        params["ErrorCode"] = str(record.error_code)
    return params


class JobPool:
    """Background jobs a test can wait for: a thread pool and the count of unfinished jobs, guarded by the
    account state's lock (so `advance()` knows when everything the simulator started has finished)."""

    def __init__(self, lock: threading.RLock, name: str, workers: int = 8) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._pending = 0
        self._idle = threading.Condition(lock)

    def submit(self, job: Callable[[], None]) -> None:
        with self._idle:
            self._pending += 1
        self._executor.submit(self._run, job)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Wait until every submitted job has finished; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class CallbackSender:
    """Queues and sends callbacks; one drain job per record keeps a record's callbacks in order.

    `lock` is the account state's lock: it guards the records' outboxes and the pending count.
    """

    def __init__(self, auth_token: str, lock: threading.RLock, timeout_s: float) -> None:
        self.lock = lock
        self.modes: set[str] = set()
        self._validator = RequestValidator(auth_token)
        self._http = httpx.Client(timeout=timeout_s)
        self._jobs = JobPool(lock, "twilio-sim-callback")

    def sign_with(self, auth_token: str) -> None:
        """Sign from now on with `auth_token` (the account's token was rotated)."""
        self._validator = RequestValidator(auth_token)

    def set_modes(self, modes: set[str]) -> None:
        unknown = modes - CALLBACK_MODES
        if unknown:
            raise ValueError(f"unknown callback modes {sorted(unknown)}: use {sorted(CALLBACK_MODES)}")
        with self.lock:
            self.modes = modes - {"normal"}

    def queue(self, record: Record, params: dict[str, str], *, final: bool) -> None:
        """Queue one callback per the callback modes (lock held)."""
        if "out_of_order" in self.modes and not final:
            record.held.append(params)
            return
        batch = [params, *record.held] if final else [params]
        record.held = []
        for item in batch:
            record.outbox.extend([item, item] if "duplicate" in self.modes else [item])
        if not record.draining:
            record.draining = True
            self._jobs.submit(lambda: self._drain(record))

    def _drain(self, record: Record) -> None:
        while True:
            with self.lock:
                if not record.outbox:
                    record.draining = False
                    return
                params = record.outbox.popleft()
                drop = "fail" in self.modes
            attempt = self._deliver(record, params, drop=drop)
            with self.lock:
                record.callbacks.append(attempt)

    def _deliver(self, record: Record, params: dict[str, str], *, drop: bool) -> CallbackAttempt:
        """Send one signed callback; failures are recorded, never retried (as Twilio does by default)."""
        request = self.sign(record.callback_method, record.status_callback or "", params)
        status = params.get("MessageStatus") or params.get("CallStatus") or ""
        attempt = CallbackAttempt(request.url, dict(params), request.signature, status)
        if drop:
            attempt.error = "dropped by the simulator (callback mode 'fail')"
            return attempt
        try:
            answer = self.send(request)
            attempt.http_status = answer.status_code
            if answer.status_code >= 400:
                attempt.error = f"callback endpoint answered HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        return attempt

    def sign(self, method: str, url: str, params: dict[str, str]) -> SignedRequest:
        """A webhook signed as Twilio signs it: a GET carries the parameters in its query string and the
        signature covers that URL alone; a POST's signature covers the URL and the sorted form fields."""
        if method == "GET":
            url = url + ("&" if "?" in url else "?") + urlencode(params)
            return SignedRequest("GET", url, {}, self._validator.compute_signature(url, {}))
        return SignedRequest("POST", url, dict(params), self._validator.compute_signature(url, params))

    def send(self, request: SignedRequest) -> httpx.Response:
        """Make the request with the headers Twilio's webhooks carry; raises `httpx.HTTPError`."""
        headers = {"X-Twilio-Signature": request.signature, "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
        if request.method == "GET":
            return self._http.get(request.url, headers=headers)
        return self._http.post(request.url, data=request.form, headers=headers)

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued callback has been sent (or failed); False on timeout."""
        return self._jobs.wait(timeout_s)

    def close(self) -> None:
        self._jobs.close()
        self._http.close()
