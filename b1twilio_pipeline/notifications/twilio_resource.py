"""TwilioResource: SMS and voice alerts through the official `twilio` client.

Settings are resolved at run time (constructor field, else `b1twilio_pipeline.core.settings`), never at
import. A base-URL override (`TWILIO_API_BASE_URL`) is applied inside the client's own HTTP layer, so a
simulator or proxy sees exactly the requests production would send to Twilio.

No blind resend: a 429 or a refused connection proves Twilio did not take the request, so it is retried
with exponential backoff and jitter. A 5xx, a timeout or a connection reset after the request went out
does not: Twilio may have accepted the message. Then `deliver` first asks Twilio whether the message or
call exists (same `To`, our `From` or Messaging Service, created since the attempt began, and for SMS
the notification's reference in the body), adopts it if so, and only otherwise creates another. Errors
surface as one-line `TwilioSendError`s with the Twilio code and its meaning, numbers masked, no credentials.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import requests
from pydantic import PrivateAttr
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse
from urllib3.exceptions import NewConnectionError

from b1twilio_pipeline.core.phones import mask_phone, mask_phones_in
from b1twilio_pipeline.core.settings import ConfigurationError, setting

T = TypeVar("T")

MAX_TWIML_CHARS = 4000
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
# Twilio's clock and ours differ a little: a lookup looks this far before the attempt began.
CLOCK_SLACK = timedelta(minutes=2)
# Creates per delivery when answers stay unclear (each followed by a lookup); then the ledger re-drives the
# notification later, so one attempt never outlasts its lease.
CREATE_ROUNDS = 3

# Short meanings of the Twilio error codes an alerting pipeline meets (see API_FACTS.md).
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
class SentNotification:
    """What Twilio answered when it accepted a message or call (or what a lookup found and adopted)."""

    sid: str
    status: str
    channel: str  # "sms" | "voice"
    adopted: bool = False


@dataclass(frozen=True)
class Outbound:
    """One message or call to make: `ref` is the short code an SMS text carries, so a lookup after an
    ambiguous answer recognises exactly this notification's message."""

    channel: str  # "sms" | "voice"
    to: str
    text: str
    ref: str | None = None


@dataclass(frozen=True)
class DeliveryStatus:
    """The current status of a message or call, as polled from Twilio."""

    sid: str
    status: str
    error_code: int | None
    error_message: str | None


@dataclass(frozen=True)
class SentRecord:
    """A message or call Twilio already holds for a recipient (crash recovery: was it already sent?)."""

    sid: str
    to: str
    body: str | None
    status: str
    created_at: datetime


class TwilioSendError(Exception):
    """A Twilio request that failed: one line with code, meaning and the masked number, never a secret.

    `permanent` is True when retrying the same request cannot help (4xx other than 429 and an account
    that failed to authenticate); `may_have_sent` when Twilio may have accepted it anyway (5xx, timeout,
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


class _MayHaveSent(Exception):
    """A create whose answer does not prove rejection; carries the error to raise if the lookup is empty."""

    def __init__(self, error: TwilioSendError) -> None:
        super().__init__(str(error))
        self.error = error


def carries_ref(text: str | None, ref: str) -> bool:
    """Whether a message text carries the reference `ref` as a word of its own."""
    return bool(text) and re.search(rf"(?<![A-Z0-9]){re.escape(ref)}(?![A-Z0-9])", text or "") is not None


class BaseUrlHttpClient(TwilioHttpClient):
    """The official HTTP client, with scheme and host of every URL replaced by `base_url` (and its path
    prepended). Region/edge host rewriting happens before this, so the override always wins."""

    def __init__(self, base_url: str | None, *, timeout: float | None, pool_size: int) -> None:
        super().__init__(timeout=timeout)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        if self.session is not None:
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None

    def rewrite(self, url: str) -> str:
        if self.base is None:
            return url
        parts = urlsplit(url)
        return urlunsplit((self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query,
                           parts.fragment))

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        return super().request(method, self.rewrite(url), params=params, data=data, headers=headers,
                               auth=auth, timeout=timeout, allow_redirects=allow_redirects)


@dataclass(frozen=True)
class _Config:
    """Settings resolved for one resource instance (never logged: holds the credential)."""

    account_sid: str
    username: str
    password: str
    from_number: str | None
    messaging_service_sid: str | None
    voice_from_number: str | None
    region: str | None
    edge: str | None
    api_base_url: str | None
    status_callback_url: str | None


class TwilioResource(dg.ConfigurableResource):
    """SMS and voice through Twilio. Unset fields come from the settings of SPEC section 9 at run time.

    `status_callback_url=""` turns callbacks off even when TWILIO_STATUS_CALLBACK_URL is set."""

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
    max_concurrency: int = 4
    max_retries: int = 6
    lookup_delay_s: float = 1.0  # after an ambiguous answer, give Twilio a moment before asking
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 15.0
    voice: str = "alice"
    language: str = "en-US"

    _client: Client | None = PrivateAttr(default=None)
    _config: _Config | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)

    # ----- configuration -----------------------------------------------------------------------------

    def _pick(self, value: str | None, name: str) -> str | None:
        return value if value is not None else setting(name)

    def _resolve(self) -> _Config:
        """Fields first, then settings; one-line ConfigurationErrors naming the variable to set."""
        account_sid = self._pick(self.account_sid, "TWILIO_ACCOUNT_SID")
        if not account_sid:
            raise ConfigurationError("TWILIO_ACCOUNT_SID is not set: set it (env or `b1twilio secrets set "
                                     "TWILIO_ACCOUNT_SID`) to your Account SID (AC...)")
        if not _ACCOUNT_SID.match(account_sid):
            raise ConfigurationError("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits: "
                                     "copy the Account SID from the Twilio console")
        username, password = self._credentials(account_sid)
        service = self._pick(self.messaging_service_sid, "TWILIO_MESSAGING_SERVICE_SID") or None
        if service and not _SERVICE_SID.match(service):
            raise ConfigurationError("TWILIO_MESSAGING_SERVICE_SID must look like MG followed by 32 hex "
                                     "digits: copy it from Messaging > Services in the Twilio console")
        from_number = self._pick(self.from_number, "TWILIO_FROM_NUMBER") or None
        callback = self._pick(self.status_callback_url, "TWILIO_STATUS_CALLBACK_URL") or None
        return _Config(
            account_sid=account_sid, username=username, password=password, from_number=from_number,
            messaging_service_sid=service,
            voice_from_number=self._pick(self.voice_from_number, "TWILIO_VOICE_FROM_NUMBER") or from_number,
            region=self._pick(self.region, "TWILIO_REGION") or None,
            edge=self._pick(self.edge, "TWILIO_EDGE") or None,
            api_base_url=self._pick(self.api_base_url, "TWILIO_API_BASE_URL") or None,
            status_callback_url=callback,
        )

    def _credentials(self, account_sid: str) -> tuple[str, str]:
        """API key + secret (fields first) or Account SID + Auth Token."""
        if self.api_key is not None or (self.auth_token is None and setting("TWILIO_API_KEY")):
            key = self._pick(self.api_key, "TWILIO_API_KEY") or ""
            secret = self._pick(self.api_secret, "TWILIO_API_SECRET")
            if not _API_KEY_SID.match(key):
                raise ConfigurationError("TWILIO_API_KEY must look like SK followed by 32 hex digits")
            if not secret:
                raise ConfigurationError("TWILIO_API_SECRET is not set: it is required with TWILIO_API_KEY "
                                         "(env or `b1twilio secrets set TWILIO_API_SECRET`)")
            return key, secret
        token = self._pick(self.auth_token, "TWILIO_AUTH_TOKEN")
        if not token:
            raise ConfigurationError("TWILIO_AUTH_TOKEN is not set: set it, or TWILIO_API_KEY and "
                                     "TWILIO_API_SECRET (env or `b1twilio secrets set ...`)")
        return account_sid, token

    def _client_and_config(self) -> tuple[Client, _Config]:
        """Build the client once per resource instance (thread-safe, lazily, at run time)."""
        with self._lock:
            if self._client is None or self._config is None:
                config = self._resolve()
                http = BaseUrlHttpClient(config.api_base_url, timeout=self.timeout_s,
                                         pool_size=max(10, self.max_concurrency * 2))
                # `environment` keeps the client from reading TWILIO_* itself: we resolved them above.
                self._client = Client(config.username, config.password, account_sid=config.account_sid,
                                      region=config.region, edge=config.edge, http_client=http,
                                      environment={"B1TWILIO": "resolved"})
                self._config = config
                self._slots = threading.BoundedSemaphore(max(1, self.max_concurrency))
            return self._client, self._config

    # ----- public API --------------------------------------------------------------------------------

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
            found = self._adopt(out, lookup_since, is_foreign)
            if found is not None:
                return found
        for attempt in range(CREATE_ROUNDS):
            started = datetime.now(UTC)
            try:
                return self._create(out)
            except _MayHaveSent as unclear:
                error = unclear.error
            time.sleep(self.lookup_delay_s)
            try:
                found = self._adopt(out, started, is_foreign)
            except TwilioSendError:
                raise error from None  # cannot tell whether it was accepted: the next attempt looks again
            if found is not None:
                return found
            if attempt + 1 < CREATE_ROUNDS:
                time.sleep(self._backoff(attempt))
        raise error

    def lookup(self, out: Outbound, since: datetime,
               is_foreign: Callable[[str], bool] = lambda sid: False) -> SentNotification | None:
        """The message or call an earlier attempt of `out` made since `since`, if Twilio has it."""
        return self._adopt(out, since, is_foreign)

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
            message = self._attempt(lambda: client.messages.create(**kwargs), what="sending SMS", to=out.to,
                                    idempotent=False)
            return SentNotification(sid=str(message.sid), status=str(message.status), channel="sms")
        if not config.voice_from_number:
            raise ConfigurationError("no caller number: set TWILIO_VOICE_FROM_NUMBER or TWILIO_FROM_NUMBER")
        kwargs = {"to": out.to, "from_": config.voice_from_number, "twiml": self.twiml_for(out.text)}
        if config.status_callback_url:
            kwargs.update(status_callback=config.status_callback_url, status_callback_event=list(CALL_EVENTS),
                          status_callback_method="POST")
        call = self._attempt(lambda: client.calls.create(**kwargs), what="placing call", to=out.to,
                             idempotent=False)
        return SentNotification(sid=str(call.sid), status=str(call.status), channel="voice")

    def _adopt(self, out: Outbound, since: datetime, is_foreign: Callable[[str], bool]) -> SentNotification | None:
        """The message or call an earlier attempt made, if Twilio has exactly one that can be ours."""
        found = [record for record in self.find_sent(out.channel, out.to, since - CLOCK_SLACK, ref=out.ref)
                 if not is_foreign(record.sid)]
        if not found:
            return None
        if out.channel == "voice" and len(found) > 1:
            raise AmbiguousDelivery(f"{len(found)} calls to {mask_phone(out.to)} since {since:%H:%M:%S} UTC "
                                    f"could be this notification's ({', '.join(r.sid for r in found)})")
        earliest = found[-1]  # Twilio lists newest first; two SMS with our reference: the first counts
        return SentNotification(sid=earliest.sid, status=earliest.status, channel=out.channel, adopted=True)

    def twiml_for(self, text: str) -> str:
        """`<Response><Say voice language>text</Say></Response>`, text shortened to fit 4000 characters."""
        def render(spoken: str) -> str:
            response = VoiceResponse()
            response.say(spoken, voice=self.voice, language=self.language)
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

    def fetch_status(self, sid: str) -> DeliveryStatus:
        """Poll one message (SM/MM) or call (CA)."""
        client, _ = self._client_and_config()
        if sid.startswith(("SM", "MM")):
            message = self._attempt(lambda: client.messages(sid).fetch(), what=f"fetching {sid}", to=None,
                                    idempotent=True)
            code = int(message.error_code) if message.error_code else None
            error_message = message.error_message or (ERROR_MEANINGS.get(code) if code else None)
            return DeliveryStatus(sid, str(message.status), code, error_message)
        if sid.startswith("CA"):
            call = self._attempt(lambda: client.calls(sid).fetch(), what=f"fetching {sid}", to=None,
                                 idempotent=True)
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
        since_utc = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        floor = since_utc.replace(microsecond=0)  # Twilio's dates have whole seconds
        service = config.messaging_service_sid if channel == "sms" else None
        sender = None if service else (config.from_number if channel == "sms" else config.voice_from_number)
        filters: dict[str, Any] = {"to": to, "page_size": 100}
        if sender:
            filters["from_"] = sender
        listing = client.messages if channel == "sms" else client.calls
        what = f"looking up {'messages' if channel == 'sms' else 'calls'}"
        page = self._attempt(lambda: listing.page(**filters), what=what, to=to, idempotent=True)
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
            page = self._attempt(lambda current=current: current.next_page(), what=what, to=to,
                                 idempotent=True)
        return found

    # ----- retries and errors ------------------------------------------------------------------------

    def _attempt(self, call: Callable[[], T], *, what: str, to: str | None, idempotent: bool) -> T:
        """Run one Twilio request, retrying what provably did not take effect (429, a refused
        connection) and, for idempotent reads, 5xx and dropped connections too. A create that met a
        5xx or a dropped connection raises `_MayHaveSent` for `deliver` to look up."""
        _, config = self._client_and_config()
        assert self._slots is not None
        attempt = 0
        while True:
            try:
                with self._slots:
                    return call()
            except TwilioException as exc:
                status, code, detail = _error_parts(exc)
                throttled = status == 429 or code == 20429
                server_side = status is not None and status >= 500
                if throttled or (server_side and idempotent):
                    if attempt >= self.max_retries:
                        raise self._error(what, to, status, code, detail, config, attempts=attempt + 1,
                                          permanent=False) from None
                else:
                    auth = status in (401, 403) or code == 20003  # the account, not this message: fixable
                    error = self._error(what, to, status, code, detail, config, attempts=attempt + 1,
                                        permanent=not (server_side or auth), may_have_sent=server_side)
                    raise (_MayHaveSent(error) if server_side else error) from None
            except requests.RequestException as exc:
                if not (idempotent or _never_sent(exc)):
                    detail = f"{type(exc).__name__} talking to Twilio: the request may have been accepted"
                    raise _MayHaveSent(self._error(what, to, None, None, detail, config, attempts=attempt + 1,
                                                   permanent=False, may_have_sent=True)) from None
                if attempt >= self.max_retries:
                    raise self._error(what, to, None, None, f"{type(exc).__name__} talking to Twilio", config,
                                      attempts=attempt + 1, permanent=False) from None
            time.sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff capped at `backoff_max_s`, with jitter so parallel senders spread out."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt))
        return random.uniform(ceiling / 2, ceiling)

    def _error(self, what: str, to: str | None, status: int | None, code: int | None, detail: str,
               config: _Config, *, attempts: int, permanent: bool, may_have_sent: bool = False) -> TwilioSendError:
        meaning = ERROR_MEANINGS.get(code or 0, "")
        head = "Twilio request failed"
        if code:
            head = f"Twilio error {code}" + (f" ({meaning})" if meaning else "")
        target = f" to {mask_phone(to)}" if to else ""
        parts = [f"{head} {what}{target}"]
        if status:
            parts.append(f"HTTP {status}")
        if attempts > 1:
            parts.append(f"after {attempts} attempts")
        if code == 20003 and config.region:
            parts.append(f"region {config.region} needs region-specific credentials: use an Auth Token or "
                         f"API key created for {config.region} (US1 credentials fail there)")
        if detail:
            parts.append(f"Twilio says: {self._clean(detail, to, config)}")
        return TwilioSendError("; ".join(parts), code=code, http_status=status, permanent=permanent,
                               may_have_sent=may_have_sent)

    @staticmethod
    def _clean(text: str, to: str | None, config: _Config) -> str:
        """One line, phone numbers masked, the credential never echoed."""
        line = " ".join(text.split())
        if to:
            line = line.replace(to, mask_phone(to))
        line = line.replace(config.password, "****")
        return mask_phones_in(line)[:300]


def _never_sent(exc: requests.RequestException) -> bool:
    """A connect timeout, a refused connection, a proxy that refused the tunnel or a failed TLS handshake:
    the request never reached Twilio, so resending is safe."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError | requests.exceptions.SSLError):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _error_parts(exc: TwilioException) -> tuple[int | None, int | None, str]:
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
