"""The receiver: the one public-facing service for everything Twilio and B1 call (`b1twilio receiver`).

- `POST /twilio/status`: status callbacks of messages and calls, to the delivery log, which decides with
  `statuses.should_advance` whether anything changed, so replays and out-of-order callbacks are harmless.
- `POST /twilio/sms`: SMS replies (the Twilio number's messaging webhook), answered with TwiML
  `<Message>`; `POST /twilio/voice`: the keypress of a call's `<Gather>`, answered with `<Say>`. What they
  mean is `inbound`'s business.
- `POST /b1/events`: B1's webhook batches, authenticated with HTTP Basic, not signed (see `b1_events`).

Every Twilio request's `X-Twilio-Signature` is checked with twilio's own `RequestValidator` against the PUBLIC URL
Twilio called (B1TWILIO_PUBLIC_URL + the path: behind a proxy the local URL differs and `request.url`
cannot be trusted); anything unsigned, mis-signed or too large is refused and changes nothing.

Run it: `b1twilio receiver --host 127.0.0.1 --port 8788` (prints `listening on http://HOST:PORT`); with
several companies it serves each under its own path (`receiver_command`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from b1twilio_pipeline.core.phones import E164_PATTERN, mask_phone
from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_pipeline.notifications.b1_events import MAX_BATCH_BYTES, B1Events
from b1twilio_pipeline.notifications.public_urls import B1_EVENTS_PATH, SMS_PATH, STATUS_PATH, VOICE_PATH, join
from b1twilio_pipeline.notifications.statuses import StatusEvent, channel_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # Twilio's callbacks are well under 2 KiB; refuse floods early
_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_PHONE = re.compile(E164_PATTERN)
_STATUS = re.compile(r"^[a-z][a-z_-]{0,39}$")


class Replies(Protocol):
    """What SMS replies and keypresses mean (`inbound.Inbound`, or one company's among several)."""

    def sms_reply(self, sender: str, body: str, message_sid: str) -> str | None: ...

    def keypress(self, call_sid: str, digits: str) -> str: ...


class StatusSink(Protocol):
    """Where valid status events go: the delivery log (`notifications.delivery_log.DeliveryLog`)."""

    def apply_status(self, event: StatusEvent) -> bool:
        """Record `event` if it advances the SID's status; True when the ledger changed."""
        ...


class MalformedCallback(ValueError):
    """A signed callback whose fields cannot be understood (answered with 400)."""


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes: a chunked body without Content-Length is
    counted while it streams in, never read whole into memory first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


def public_request_url(public_url: str, raw_query: str) -> str:
    """The URL Twilio signed: the configured public URL with the query string this request carried."""
    if not raw_query:
        return public_url
    scheme, netloc, path, _query, _fragment = urlsplit(public_url)
    return urlunsplit((scheme, netloc, path, raw_query, ""))


def _optional_int(form: ImmutableMultiDict, name: str) -> int | None:
    value = (form.get(name) or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise MalformedCallback(f"{name} must be an integer") from None


def _status_field(form: ImmutableMultiDict, *names: str) -> str:
    for name in names:
        value = (form.get(name) or "").strip()
        if value:
            if not _STATUS.match(value):
                raise MalformedCallback(f"{name} is not a status word")
            return value
    raise MalformedCallback(f"{names[0]} is missing")


def parse_status_callback(form: ImmutableMultiDict, received_at: datetime | None = None) -> StatusEvent:
    """A StatusEvent from a message or call callback's fields; unknown extra fields are ignored."""
    received_at = received_at or datetime.now(UTC)
    message_sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    call_sid = (form.get("CallSid") or "").strip()
    if message_sid:
        if not _MESSAGE_SID.match(message_sid):
            raise MalformedCallback("MessageSid is not a message SID (SM/MM + 32 hex digits)")
        status = _status_field(form, "MessageStatus", "SmsStatus")
        return StatusEvent(
            sid=message_sid,
            channel=channel_of(message_sid),
            status=status,
            error_code=_optional_int(form, "ErrorCode"),
            source="callback",
            received_at=received_at,
        )
    if call_sid:
        if not _CALL_SID.match(call_sid):
            raise MalformedCallback("CallSid is not a call SID (CA + 32 hex digits)")
        return StatusEvent(
            sid=call_sid,
            channel=channel_of(call_sid),
            status=_status_field(form, "CallStatus"),
            error_code=_optional_int(form, "ErrorCode"),
            source="callback",
            received_at=received_at,
            sequence=_optional_int(form, "SequenceNumber"),
            duration_s=_optional_int(form, "CallDuration"),
        )
    raise MalformedCallback("neither MessageSid nor CallSid is present")


class Verified:
    """Checks that a request comes from Twilio: size-limited body, `X-Twilio-Signature` over the public URL
    it was sent to (`public_url` + the request's query). Returns the form, or the refusal to send."""

    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)

    async def form(self, request: Request, public_url: str) -> ImmutableMultiDict | Response:
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return PlainTextResponse("body too large", status_code=413)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            log.warning("%s rejected: no %s header", request.url.path, SIGNATURE_HEADER)
            return PlainTextResponse("missing signature", status_code=403)
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        text = body.decode("utf-8", errors="replace")
        form = ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))
        # JSON-bodied webhooks sign the URL (which carries bodySHA256) and the validator checks the raw body.
        params: object = text if "bodySHA256" in parse_qs(raw_query) else form
        url = public_request_url(public_url, raw_query)
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        if not self.validator.validate(url, params, signature, algorithm):
            log.warning("%s rejected: signature does not match %s", request.url.path, url)
            return PlainTextResponse("invalid signature", status_code=403)
        return form


def _twiml(response: MessagingResponse | VoiceResponse) -> Response:
    return Response(str(response), media_type="application/xml")


def _field(form: ImmutableMultiDict, name: str, pattern: re.Pattern[str]) -> str:
    value = form.get(name) or ""
    if not pattern.fullmatch(value):
        raise MalformedCallback(f"{name} {value[:40]!r} is not what Twilio sends")
    return value


def create_app(
    *,
    auth_token: str,
    status_url: str,
    sink: StatusSink | None,
    on_change: Callable[[StatusEvent], None] | None = None,
    inbound: Replies | None = None,
    public_url: str | None = None,
    b1_events: B1Events | None = None,
) -> Starlette:
    """The ASGI app: `GET /healthz`; with `sink` `POST /twilio/status` (signed status callbacks, checked
    against `status_url`); with `inbound` and the public base URL `public_url` also `POST /twilio/sms` (replies)
    and `POST /twilio/voice` (keypresses); with `b1_events` also `POST /b1/events` (B1's webhooks)."""
    if not auth_token:
        raise ConfigurationError("the receiver needs TWILIO_AUTH_TOKEN to check Twilio's signatures")
    urls = {"TWILIO_STATUS_CALLBACK_URL": status_url, **({"B1TWILIO_PUBLIC_URL": public_url} if public_url else {})}
    for name, url in urls.items():
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"{name} {url!r} is not an http(s) URL: set the public URL Twilio calls, "
                                     "e.g. https://alerts.example.com")
    verified = Verified(auth_token)

    async def status(request: Request) -> Response:
        form = await verified.form(request, status_url)
        if isinstance(form, Response):
            return form
        try:
            event = parse_status_callback(form)
        except MalformedCallback as exc:
            log.warning("signed status callback rejected as malformed: %s", exc)
            return PlainTextResponse(f"malformed callback: {exc}", status_code=400)
        assert sink is not None
        changed = await run_in_threadpool(sink.apply_status, event)
        log.info("status callback %s %s to %s: %s", event.sid, event.status, mask_phone(form.get("To")),
                 "recorded" if changed else "no change")
        if changed and on_change is not None:
            try:
                await run_in_threadpool(on_change, event)
            except Exception:  # the ledger already holds the event; a reporting hiccup must not fail it
                log.exception("on_change failed for %s %s", event.sid, event.status)
        return Response(status_code=204)

    async def sms(request: Request) -> Response:
        assert inbound is not None and public_url is not None
        form = await verified.form(request, join(public_url, SMS_PATH))
        if isinstance(form, Response):
            return form
        try:
            sid = _field(form, "MessageSid", _MESSAGE_SID)
            sender = _field(form, "From", _PHONE)
        except MalformedCallback as exc:
            return PlainTextResponse(f"malformed message: {exc}", status_code=400)
        answer = await run_in_threadpool(inbound.sms_reply, sender, form.get("Body", "")[:1600], sid)
        log.info("SMS reply %s from %s: %s", sid, mask_phone(sender), answer or "(no answer: Twilio keyword)")
        response = MessagingResponse()
        if answer:
            response.message(answer)
        return _twiml(response)

    async def voice(request: Request) -> Response:
        assert inbound is not None and public_url is not None
        form = await verified.form(request, join(public_url, VOICE_PATH))
        if isinstance(form, Response):
            return form
        try:
            sid = _field(form, "CallSid", _CALL_SID)
        except MalformedCallback as exc:
            return PlainTextResponse(f"malformed keypress: {exc}", status_code=400)
        spoken = await run_in_threadpool(inbound.keypress, sid, form.get("Digits", "")[:8])
        log.info("keypress on %s: %s", sid, spoken)
        response = VoiceResponse()
        response.say(spoken)
        return _twiml(response)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [Route("/healthz", healthz, methods=["GET"])]
    if sink is not None:
        routes.append(Route(STATUS_PATH, status, methods=["POST"]))
    if inbound is not None and public_url is not None:
        routes += [Route(SMS_PATH, sms, methods=["POST"]), Route(VOICE_PATH, voice, methods=["POST"])]
    if b1_events is not None:

        async def b1_batch(request: Request) -> Response:
            refusal = b1_events.refusal(request.headers.get("authorization"))
            return refusal or await b1_events.accept(await read_limited(request, MAX_BATCH_BYTES))

        routes.append(Route(B1_EVENTS_PATH, b1_batch, methods=["POST"]))
    return Starlette(routes=routes)
