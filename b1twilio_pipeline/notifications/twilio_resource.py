"""TwilioResource: SMS and voice alerts through the official `twilio` client.

No blind resend: what provably did not take effect (a 429, a refused connection) is retried by the HTTP
layer (`twilio_http`). A 5xx, a timeout or a connection reset after a create went out proves nothing:
Twilio may have accepted the message. Then `deliver` first asks Twilio whether the message or call
exists (same `To`, our `From` or Messaging Service, created since the attempt began, and for SMS the
notification's reference in the text), adopts it if so, and only otherwise creates another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import dagster as dg
import requests
from pydantic import PrivateAttr
from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.notifications.twilio_api import (
    ERROR_MEANINGS,
    AmbiguousDelivery,
    DeliveryStatus,
    MayHaveSent,
    Outbound,
    SentNotification,
    SentRecord,
    TwilioSendError,
    carries_ref,
    error_parts,
    never_sent,
    send_error,
)
from b1twilio_pipeline.notifications.twilio_config import TwilioConfig, resolve
from b1twilio_pipeline.notifications.twilio_http import BaseUrlHttpClient, retry_policy

T = TypeVar("T")

MAX_TWIML_CHARS = 4000
PRESS_TO_ACKNOWLEDGE = "Press 1 to acknowledge."
GATHER_TIMEOUT_S = 8  # then the call ends unacknowledged: an answering machine never presses 1
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
# Twilio's clock and ours differ a little: a lookup looks this far before the attempt began.
CLOCK_SLACK = timedelta(minutes=2)
# Creates per delivery when answers stay unclear (each followed by a lookup); then the ledger re-drives the
# notification later, so one attempt never outlasts its lease.
CREATE_ROUNDS = 3


class TwilioResource(dg.ConfigurableResource):
    """SMS and voice through Twilio. Unset fields come from the settings of the same names at run time
    (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN or TWILIO_API_KEY + TWILIO_API_SECRET, TWILIO_FROM_NUMBER or
    TWILIO_MESSAGING_SERVICE_SID, TWILIO_VOICE_FROM_NUMBER, TWILIO_REGION, TWILIO_EDGE,
    TWILIO_API_BASE_URL, TWILIO_STATUS_CALLBACK_URL)."""

    account_sid: str | None = None
    auth_token: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    voice_from_number: str | None = None
    region: str | None = None
    edge: str | None = None
    api_base_url: str | None = None
    status_callback_url: str | None = None
    public_url: str | None = None  # the receiver's public base URL; default B1TWILIO_PUBLIC_URL, "" for none
    max_concurrency: int = 4
    max_retries: int = 6
    lookup_delay_s: float = 1.0  # after an ambiguous answer, give Twilio a moment before asking
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 15.0
    voice: str = "alice"
    language: str = "en-US"

    _client: Client | None = PrivateAttr(default=None)
    _config: TwilioConfig | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)

    def _client_and_config(self) -> tuple[Client, TwilioConfig]:
        """Build the client once per resource instance (thread-safe, lazily, at run time)."""
        with self._lock:
            if self._client is None or self._config is None:
                config = resolve(
                    account_sid=self.account_sid, auth_token=self.auth_token, api_key=self.api_key,
                    api_secret=self.api_secret, from_number=self.from_number,
                    messaging_service_sid=self.messaging_service_sid, voice_from_number=self.voice_from_number,
                    region=self.region, edge=self.edge, api_base_url=self.api_base_url,
                    status_callback_url=self.status_callback_url, public_url=self.public_url)
                http = BaseUrlHttpClient(config.api_base_url, timeout=self.timeout_s,
                                         pool_size=max(10, self.max_concurrency * 2),
                                         retry=retry_policy(self.max_retries, self.backoff_base_s, self.backoff_max_s))
                # `environment` keeps the client from reading TWILIO_* itself: they are resolved above.
                self._client = Client(config.username, config.password, account_sid=config.account_sid,
                                      region=config.region, edge=config.edge, http_client=http,
                                      environment={"B1TWILIO": "resolved"})
                self._config = config
                self._slots = threading.BoundedSemaphore(max(1, self.max_concurrency))
            return self._client, self._config

    def acknowledgeable(self) -> bool:
        """People can acknowledge what is sent: the receiver's public URL (B1TWILIO_PUBLIC_URL) is known."""
        return self._client_and_config()[1].public_url is not None

    # ----- sending -----------------------------------------------------------------------------------

    def deliver(self, out: Outbound, *, lookup_since: datetime | None = None,
                is_foreign: Callable[[str], bool] = lambda sid: False) -> SentNotification:
        """Send `out` exactly once as far as Twilio can tell.

        With `lookup_since` (an earlier attempt may have reached Twilio) Twilio is asked first and a match
        is adopted. A create answered ambiguously is followed by a lookup, never by a blind resend.
        `is_foreign(sid)` says a SID belongs to another notification: never adopted. Raises
        `AmbiguousDelivery` when several calls could be this one, `TwilioSendError` otherwise."""
        if out.channel not in ("sms", "voice"):
            raise ValueError(f"channel must be 'sms' or 'voice', not {out.channel!r}")
        if lookup_since is not None:
            found = self.lookup(out, lookup_since, is_foreign)
            if found is not None:
                return found
        for attempt in range(CREATE_ROUNDS):
            started = datetime.now(UTC)
            try:
                return self._create(out)
            except MayHaveSent as unclear:
                error = unclear.error
            time.sleep(self.lookup_delay_s)
            try:
                found = self.lookup(out, started, is_foreign)
            except TwilioSendError:
                raise error from None  # cannot tell whether it was accepted: the next attempt looks again
            if found is not None:
                return found
            if attempt + 1 < CREATE_ROUNDS:
                time.sleep(min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))
        raise error

    def send_sms(self, to: str, body: str, *, ref: str | None = None) -> SentNotification:
        """Send an SMS from TWILIO_MESSAGING_SERVICE_SID (preferred when set) or TWILIO_FROM_NUMBER."""
        return self.deliver(Outbound("sms", to, body, ref))

    def place_call(self, to: str, text: str) -> SentNotification:
        """Call `to` and read `text` aloud (inline TwiML `<Say>`, escaped, at most 4000 characters)."""
        return self.deliver(Outbound("voice", to, text))

    def _create(self, out: Outbound) -> SentNotification:
        client, config = self._client_and_config()
        if out.channel == "sms":
            if not (config.messaging_service_sid or config.from_number):
                raise ConfigurationError("no SMS sender: set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
            kwargs: dict[str, Any] = {"to": out.to, "body": out.text}
            if config.messaging_service_sid:
                kwargs["messaging_service_sid"] = config.messaging_service_sid
            else:
                kwargs["from_"] = config.from_number
            if config.status_callback_url:
                kwargs["status_callback"] = config.status_callback_url
            message = self._request(lambda: client.messages.create(**kwargs), "sending SMS", out.to, read=False)
            return SentNotification(sid=str(message.sid), status=str(message.status), channel="sms")
        if not config.voice_from_number:
            raise ConfigurationError("no caller number: set TWILIO_VOICE_FROM_NUMBER or TWILIO_FROM_NUMBER")
        kwargs = {"to": out.to, "from_": config.voice_from_number,
                  "twiml": self.twiml_for(out.text, config.keypress_url)}
        if config.status_callback_url:
            kwargs.update(status_callback=config.status_callback_url, status_callback_event=list(CALL_EVENTS),
                          status_callback_method="POST")
        call = self._request(lambda: client.calls.create(**kwargs), "placing call", out.to, read=False)
        return SentNotification(sid=str(call.sid), status=str(call.status), channel="voice")

    def twiml_for(self, text: str, keypress_url: str | None = None) -> str:
        """`<Response><Say voice language>text</Say></Response>`, text shortened to fit 4000 characters; with
        `keypress_url` followed by `<Gather>` asking to press 1 to acknowledge (the keypress goes there)."""
        def render(spoken: str) -> str:
            response = VoiceResponse()
            response.say(spoken, voice=self.voice, language=self.language)
            if keypress_url:
                gather = response.gather(input="dtmf", num_digits=1, action=keypress_url, method="POST",
                                         timeout=GATHER_TIMEOUT_S)
                gather.say(PRESS_TO_ACKNOWLEDGE, voice=self.voice, language=self.language)
            return str(response)

        twiml = render(text)
        if len(twiml) <= MAX_TWIML_CHARS:
            return twiml
        low, high = 0, len(text)
        while low < high:  # longest prefix whose escaped TwiML fits
            middle = (low + high + 1) // 2
            if len(render(text[:middle] + "...")) <= MAX_TWIML_CHARS:
                low = middle
            else:
                high = middle - 1
        return render(text[:low] + "...")

    # ----- asking Twilio -----------------------------------------------------------------------------

    def lookup(self, out: Outbound, since: datetime,
               is_foreign: Callable[[str], bool] = lambda sid: False) -> SentNotification | None:
        """The message or call an earlier attempt of `out` made since `since`, if Twilio has exactly one
        that can be ours."""
        found = [record for record in self.find_sent(out.channel, out.to, since - CLOCK_SLACK, ref=out.ref)
                 if not is_foreign(record.sid)]
        if not found:
            return None
        if out.channel == "voice" and len(found) > 1:
            raise AmbiguousDelivery(f"{len(found)} calls to {mask_phone(out.to)} since {since:%H:%M:%S} UTC "
                                    f"could be this notification's ({', '.join(r.sid for r in found)})")
        earliest = found[-1]  # Twilio lists newest first; two SMS with our reference: the first counts
        return SentNotification(sid=earliest.sid, status=earliest.status, channel=out.channel, adopted=True)

    def fetch_status(self, sid: str) -> DeliveryStatus:
        """Poll one message (SM/MM) or call (CA)."""
        client, _ = self._client_and_config()
        if sid.startswith(("SM", "MM")):
            message = self._request(lambda: client.messages(sid).fetch(), f"fetching {sid}", None)
            code = int(message.error_code) if message.error_code else None
            error_message = message.error_message or (ERROR_MEANINGS.get(code) if code else None)
            return DeliveryStatus(sid, str(message.status), code, error_message)
        if sid.startswith("CA"):
            call = self._request(lambda: client.calls(sid).fetch(), f"fetching {sid}", None)
            return DeliveryStatus(sid, str(call.status), None, None)
        raise ValueError(f"cannot fetch status of {sid!r}: expected a message (SM/MM...) or call (CA...) SID")

    def find_sent(self, channel: str, to: str, since: datetime, *, ref: str | None = None) -> list[SentRecord]:
        """Messages (channel "sms") or calls ("voice") from us to `to` created at or after `since`, newest
        first; for SMS with `ref`, only those whose text carries it.

        "From us" is our sender number (`From` filter), or for a Messaging Service its SID on the message,
        so other systems using the same account never match. Reads newest-first pages until one is
        entirely older than `since`: a `DateSent` filter would miss a message still queued (no send date
        yet), the very case an interrupted attempt leaves behind."""
        client, config = self._client_and_config()
        if channel not in ("sms", "voice"):
            raise ValueError(f"channel must be 'sms' or 'voice', not {channel!r}")
        floor = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
        service = config.messaging_service_sid if channel == "sms" else None
        sender = None if service else (config.from_number if channel == "sms" else config.voice_from_number)
        filters: dict[str, Any] = {"to": to, "page_size": 100, **({"from_": sender} if sender else {})}
        listing = client.messages if channel == "sms" else client.calls
        what = f"looking up {'messages' if channel == 'sms' else 'calls'}"
        page = self._request(lambda: listing.page(**filters), what, to)
        found: list[SentRecord] = []
        while page is not None:
            records = list(page)
            recent = [record for record in records if record.date_created and record.date_created >= floor]
            for record in recent:
                body = getattr(record, "body", None) if channel == "sms" else None
                if service and getattr(record, "messaging_service_sid", None) != service:
                    continue
                if ref and channel == "sms" and not carries_ref(body, ref):
                    continue
                found.append(SentRecord(sid=str(record.sid), to=str(record.to), body=body,
                                        status=str(record.status), created_at=record.date_created))
            if not records or len(recent) < len(records):
                break
            current = page
            page = self._request(lambda current=current: current.next_page(), what, to)
        return found

    # ----- errors ------------------------------------------------------------------------------------

    def _request(self, call: Callable[[], T], what: str, to: str | None, *, read: bool = True) -> T:
        """One Twilio request (the HTTP layer has retried what was safe to retry), its failure turned into
        a TwilioSendError; a create whose answer does not prove rejection raises `MayHaveSent`."""
        _, config = self._client_and_config()
        assert self._slots is not None
        try:
            with self._slots:
                return call()
        except TwilioException as exc:
            status, code, detail = error_parts(exc)
            throttled = status == 429 or code == 20429
            server_side = status is not None and status >= 500
            auth = status in (401, 403) or code == 20003  # the account, not this message: fixable
            error = send_error(what, to, status, code, detail, secret=config.password, region=config.region,
                               permanent=not (throttled or server_side or auth),
                               may_have_sent=server_side and not read)
            raise (MayHaveSent(error) if error.may_have_sent else error) from None
        except requests.RequestException as exc:
            unclear = not (read or never_sent(exc))
            detail = f"{type(exc).__name__} talking to Twilio" + (": the request may have been accepted"
                                                                   if unclear else "")
            error = send_error(what, to, None, None, detail, secret=config.password, region=config.region,
                               permanent=False, may_have_sent=unclear)
            raise (MayHaveSent(error) if unclear else error) from None
