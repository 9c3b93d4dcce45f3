"""What crosses the boundary to Twilio: the message or call to make, what Twilio answered, and its errors
as one line each (Twilio code and its meaning, numbers masked, never a credential)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from urllib3.exceptions import NewConnectionError

from b1twilio_pipeline.core.phones import mask_phone, mask_phones_in

# Short meanings of the Twilio error codes an alerting pipeline meets. 2xxxx come back at once as HTTP 4xx;
# 3xxxx arrive later with status undelivered or failed.
ERROR_MEANINGS: dict[int, str] = {
    20003: "authentication failed (wrong Account SID, Auth Token or API key)",
    20404: "resource not found",
    20429: "too many requests",
    20500: "Twilio internal error",
    20503: "Twilio temporarily unavailable",
    21211: "invalid 'To' phone number",
    21212: "invalid 'From' number",
    21408: "sending to this region is not enabled on the account",
    21602: "message body is required",
    21603: "a 'From' number or Messaging Service is required",
    21604: "a 'To' number is required",
    21606: "the 'From' number cannot send SMS",
    21610: "recipient has unsubscribed (replied STOP)",
    21611: "the sender's queue is full",
    21612: "the 'To' number cannot be reached from this sender",
    21614: "'To' is not a mobile number",
    21617: "message body exceeds 1600 characters",
    32018: "TwiML exceeds 4000 characters",
    30003: "unreachable destination handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "message filtered by the carrier",
    30008: "unknown delivery error",
}


@dataclass(frozen=True)
class Outbound:
    """One message or call to make: `ref` is the short code an SMS text carries, so a lookup after an
    ambiguous answer recognises exactly this notification's message."""

    channel: str  # "sms" | "voice"
    to: str
    text: str
    ref: str | None = None


@dataclass(frozen=True)
class SentNotification:
    """What Twilio answered when it accepted a message or call (or what a lookup found and adopted)."""

    sid: str
    status: str
    channel: str  # "sms" | "voice"
    adopted: bool = False


@dataclass(frozen=True)
class DeliveryStatus:
    """The current status of a message or call, as polled from Twilio."""

    sid: str
    status: str
    error_code: int | None
    error_message: str | None


@dataclass(frozen=True)
class SentRecord:
    """A message or call Twilio already holds for a recipient (was an interrupted attempt accepted?)."""

    sid: str
    to: str
    body: str | None
    status: str
    created_at: datetime


def carries_ref(text: str | None, ref: str) -> bool:
    """Whether a message text carries the reference `ref` as a word of its own."""
    return bool(text) and re.search(rf"(?<![A-Z0-9]){re.escape(ref)}(?![A-Z0-9])", text or "") is not None


class TwilioSendError(Exception):
    """A Twilio request that failed: one line with code, meaning and the masked number, never a secret.

    `permanent` is True when retrying the same request cannot help (4xx other than 429 and an account that
    failed to authenticate); `may_have_sent` when Twilio may have accepted it anyway (5xx, timeout,
    connection reset), so the next attempt must look before it sends."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None,
                 permanent: bool = False, may_have_sent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.permanent = permanent
        self.may_have_sent = may_have_sent


class AmbiguousDelivery(Exception):
    """A lookup found several messages or calls that could be this notification's: a person decides."""


class MayHaveSent(Exception):
    """A create whose answer does not prove rejection; carries the error to raise if the lookup is empty."""

    def __init__(self, error: TwilioSendError) -> None:
        super().__init__(str(error))
        self.error = error


def never_sent(exc: requests.RequestException) -> bool:
    """A connect timeout, a refused connection, a proxy that refused the tunnel or a failed TLS handshake:
    the request never reached Twilio, so sending it again is safe."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError | requests.exceptions.SSLError):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def error_parts(exc: TwilioException) -> tuple[int | None, int | None, str]:
    """(HTTP status, Twilio code, message) from a TwilioRestException, or from the plain TwilioException
    `("Unable to fetch page", response)` that list/page calls raise."""
    if isinstance(exc, TwilioRestException):
        message = str(exc.msg)
        for prefix in ("Unable to create record: ", "Unable to fetch record: "):
            message = message.removeprefix(prefix)
        return exc.status, exc.code, message
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    code, message = None, str(exc.args[0]) if exc.args else ""
    text = getattr(response, "text", "") or ""
    try:
        payload = json.loads(text)
        code = int(payload["code"]) if payload.get("code") is not None else None
        message = str(payload.get("message") or message)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return status, code, message


def send_error(what: str, to: str | None, status: int | None, code: int | None, detail: str, *,
               secret: str, region: str | None, permanent: bool, may_have_sent: bool = False) -> TwilioSendError:
    """The one-line error: code and meaning, what was being done, to whom (masked), what Twilio said."""
    meaning = ERROR_MEANINGS.get(code or 0, "")
    head = f"Twilio error {code}" + (f" ({meaning})" if meaning else "") if code else "Twilio request failed"
    parts = [f"{head} {what}" + (f" to {mask_phone(to)}" if to else "")]
    if status:
        parts.append(f"HTTP {status}")
    if code == 20003 and region:
        parts.append(f"region {region} needs region-specific credentials: use an Auth Token or API key created "
                     f"for {region} (US1 credentials fail there)")
    if detail:
        line = " ".join(detail.split())
        if to:
            line = line.replace(to, mask_phone(to))
        parts.append("Twilio says: " + mask_phones_in(line.replace(secret, "****"))[:300])
    return TwilioSendError("; ".join(parts), code=code, http_status=status, permanent=permanent,
                           may_have_sent=may_have_sent)
