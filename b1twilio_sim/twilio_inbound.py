"""The handset's side of Twilio: a recipient answering an SMS, or pressing keys during a call.

The pipeline asks recipients to acknowledge ("Reply <CODE> to acknowledge", "press 1 to acknowledge"); what
comes back reaches it only as Twilio's webhooks, so the simulator sends those exactly as Twilio does. An SMS
reply is recorded as an `inbound` Message and POSTed to our number's messaging webhook (`sms_url`); a
keypress is sent to the `action` of the call's `<Gather>`. Both are signed like status callbacks (the same
`CallbackSender` sends them). The webhook answers TwiML: each `<Message>` in the answer to an SMS becomes an
`outbound-reply` message to the handset; the answer to a keypress is recorded on the call.

A reply or keypress is made on request (`reply()` / `press()`, synchronous: the caller gets the webhook's
answer) or by a number's rule (`reply`, `press`) from the lifecycle, in a background job that `advance()`,
`tick()` and `wait_callbacks()` wait for.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from b1twilio_sim.twilio_callbacks import API_VERSION, JobPool, now_utc

if TYPE_CHECKING:
    from b1twilio_sim.twilio_state import Record, TwilioState

# Our number when a message went out through a Messaging Service without `From` (Twilio picks one of the
# service's numbers; the simulator has no number pool, so it answers from Twilio's test sender).
POOL_NUMBER = "+15005550006"
DIGITS = re.compile(r"^[0-9*#]+$")


class InboundError(Exception):
    """A reply or keypress the simulator cannot make: 404 (nothing to answer), 409 (nowhere to send it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Gather:
    """The `<Gather>` of a call's TwiML, as far as a keypress needs it."""

    action: str
    method: str
    num_digits: int | None
    finish_on_key: str


@dataclass
class WebhookExchange:
    """One webhook the handset caused (`sms` or `gather`) and what our endpoint answered, for inspection."""

    kind: str
    params: dict[str, str]
    method: str = "POST"
    url: str | None = None
    signature: str | None = None
    http_status: int | None = None
    twiml: str | None = None
    error: str | None = None
    message_sid: str | None = None  # the inbound message (sms)
    call_sid: str | None = None  # the call the keys were pressed in (gather)
    digits: str | None = None
    reply_sids: list[str] = field(default_factory=list)  # the outbound-reply messages from `<Message>`
    at: str = field(default_factory=lambda: now_utc().isoformat())

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "url": self.url, "params": self.params,
                "signature": self.signature, "http_status": self.http_status, "twiml": self.twiml,
                "error": self.error, "message_sid": self.message_sid, "call_sid": self.call_sid,
                "digits": self.digits, "reply_sid": self.reply_sids[0] if self.reply_sids else None,
                "reply_sids": list(self.reply_sids), "at": self.at}


def parse_gather(twiml: str | None) -> Gather:
    """The call's keypad `<Gather>`; InboundError 409 when a keypress would have nowhere to go. Inline
    TwiML has no document URL, so a Gather without an absolute `action` cannot be answered."""
    if not twiml:
        raise InboundError(409, "the call has no inline TwiML (the simulator does not fetch a Url)")
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise InboundError(409, f"the call's TwiML does not parse: {exc}") from exc
    gather = next(root.iter("Gather"), None)
    if gather is None:
        raise InboundError(409, "the call's TwiML has no <Gather>")
    if "dtmf" not in (gather.get("input") or "dtmf").split():
        raise InboundError(409, "the call's <Gather> does not take keypresses (input has no dtmf)")
    action = gather.get("action") or ""
    if urlsplit(action).scheme not in ("http", "https"):
        raise InboundError(409, "the call's <Gather> has no absolute action URL")
    method = (gather.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise InboundError(409, f"the call's <Gather> method {method} is neither GET nor POST")
    num_digits = gather.get("numDigits") or ""
    return Gather(action, method, int(num_digits) if num_digits.isdigit() else None,
                  gather.get("finishOnKey", "#"))


def _typed(gather: Gather, digits: str) -> tuple[str, str]:
    """What Twilio reports for the keys pressed: `Digits` (up to numDigits, before finishOnKey) and
    `FinishedOnKey`."""
    typed = digits[: gather.num_digits] if gather.num_digits else digits
    key = gather.finish_on_key
    if key and key in typed:
        return typed[: typed.index(key)], key
    return typed, ""


def _message_body(verb: ET.Element) -> str:
    """`<Message>text</Message>` or `<Message><Body>text</Body></Message>`."""
    body = verb.find("Body")
    return (body.text if body is not None else verb.text) or ""


class Handset:
    """The recipients' handsets of one simulated account, and where our number's SMS webhook points."""

    def __init__(self, state: TwilioState, sms_url: str | None) -> None:
        self.state = state
        self.lock = state.lock
        self.sms_url: str | None = None
        self.set_sms_url(sms_url)
        self.exchanges: list[WebhookExchange] = []
        self._jobs = JobPool(state.lock, "twilio-sim-handset", workers=4)

    def set_sms_url(self, url: str | None) -> None:
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"sms_url {url!r} must be an absolute http(s) URL")
        self.sms_url = url or None

    # ----- on request --------------------------------------------------------------------------------

    def reply(self, from_: str, body: str) -> WebhookExchange:
        """The handset `from_` answers the latest SMS sent to it."""
        original = next((record for record in self.state.listing("message")
                         if record.resource["to"] == from_ and record.resource["direction"] != "inbound"), None)
        if original is None:
            raise InboundError(404, f"no SMS was sent to {from_}: nothing to reply to")
        if not self.sms_url:
            raise InboundError(409, "our number has no SMS webhook: set sms_url first (POST /_admin/webhooks)")
        return self._answer_message(original, body)

    def press(self, to: str | None, digits: str, call_sid: str | None) -> WebhookExchange:
        """Press `digits` in the call `call_sid`, or in the latest call to `to` whose TwiML gathers keys."""
        if not DIGITS.match(digits):
            raise ValueError(f"digits {digits!r} must be keypad digits (0-9, *, #)")
        if call_sid:
            call = self.state.get(call_sid)
            if call is None or call.kind != "call":
                raise InboundError(404, f"no call {call_sid}")
            return self._keypress(call, parse_gather(call.twiml), digits)
        if not to:
            raise ValueError("press needs `to` or `call_sid`")
        calls = [record for record in self.state.listing("call") if record.resource["to"] == to]
        if not calls:
            raise InboundError(404, f"no call was made to {to}")
        reasons = []
        for call in calls:
            try:
                gather = parse_gather(call.twiml)
            except InboundError as exc:
                reasons.append(str(exc))
                continue
            return self._keypress(call, gather, digits)
        raise InboundError(409, f"no call to {to} can take a keypress: {reasons[0]}")

    # ----- from the lifecycle (state lock held) ------------------------------------------------------

    def status_reached(self, record: Record, status: str) -> None:
        """Answer as the number's rule says: reply once a message is delivered; press keys once a call is
        answered, holding the call in progress until the Gather action has answered."""
        answer = record.handset
        if answer is None:
            return
        if record.kind == "message" and status == "delivered":
            self._jobs.submit(lambda: self._answer_message(record, answer))
        elif record.kind == "call" and status == "in-progress":
            try:
                gather = parse_gather(record.twiml)
            except InboundError as exc:
                self._log(record, WebhookExchange("gather", {}, call_sid=record.sid, digits=answer,
                                                  error=str(exc)))
                return
            record.waiting = True
            self._jobs.submit(lambda: self._keypress_then_resume(record, gather, answer))

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Wait until every reply and keypress started by a rule has been answered; False on timeout."""
        return self._jobs.wait(timeout_s)

    def close(self) -> None:
        self._jobs.close()

    # ----- webhooks ----------------------------------------------------------------------------------

    def _answer_message(self, original: Record, body: str) -> WebhookExchange:
        resource = original.resource
        handset, ours = resource["to"], resource["from"] or POOL_NUMBER
        service = resource["messaging_service_sid"]
        inbound = self.state.add_inbound_message(handset, ours, body, service)
        params = {"MessageSid": inbound.sid, "SmsSid": inbound.sid, "SmsMessageSid": inbound.sid,
                  "AccountSid": self.state.account_sid, "From": handset, "To": ours, "Body": body,
                  "NumMedia": "0", "NumSegments": inbound.resource["num_segments"], "SmsStatus": "received",
                  "ApiVersion": API_VERSION}
        if service:
            params["MessagingServiceSid"] = service
        exchange = WebhookExchange("sms", params, message_sid=inbound.sid)
        url = self.sms_url
        if url is None:
            exchange.error = "our number has no SMS webhook (sms_url): the reply reached nobody"
        else:
            answer = self._post(exchange, "POST", url, params)
            for verb in answer.iter("Message") if answer is not None else ():
                reply = self.state.add_message(verb.get("to") or handset, verb.get("from") or ours,
                                               _message_body(verb), service, verb.get("statusCallback"),
                                               direction="outbound-reply")
                exchange.reply_sids.append(reply.sid)
        self._log(inbound, exchange)
        return exchange

    def _keypress(self, call: Record, gather: Gather, digits: str) -> WebhookExchange:
        resource = call.resource
        typed, finished_on = _typed(gather, digits)
        params = {"CallSid": call.sid, "AccountSid": self.state.account_sid, "From": resource["from"],
                  "To": resource["to"], "Digits": typed, "CallStatus": "in-progress", "Direction": "outbound-api",
                  "ApiVersion": API_VERSION, "FinishedOnKey": finished_on}
        exchange = WebhookExchange("gather", params, call_sid=call.sid, digits=typed)
        self._post(exchange, gather.method, gather.action, params)
        self._log(call, exchange)
        return exchange

    def _keypress_then_resume(self, call: Record, gather: Gather, digits: str) -> None:
        try:
            self._keypress(call, gather, digits)
        finally:
            with self.lock:
                call.waiting = False
                call.next_at = time.monotonic() + self.state.status_delay_s

    def _post(self, exchange: WebhookExchange, method: str, url: str, params: dict[str, str]) -> ET.Element | None:
        """Send the signed webhook; the TwiML it answered, or None (with Twilio's error code in `error`)."""
        request = self.state.callbacks.sign(method, url, params)
        exchange.method, exchange.url, exchange.signature = method, request.url, request.signature
        try:
            answer = self.state.callbacks.send(request)
        except httpx.HTTPError as exc:
            exchange.error = f"11200 HTTP retrieval failure: {type(exc).__name__}: {exc}"
            return None
        exchange.http_status, exchange.twiml = answer.status_code, answer.text
        if answer.status_code >= 400:
            exchange.error = f"11200 HTTP retrieval failure: the webhook answered HTTP {answer.status_code}"
            return None
        if not answer.text.strip():
            return None
        try:
            return ET.fromstring(answer.text)
        except ET.ParseError as exc:
            exchange.error = f"12100 Document parse failure: {exc}"
            return None

    def _log(self, record: Record, exchange: WebhookExchange) -> None:
        with self.lock:
            record.webhooks.append(exchange)
            self.exchanges.append(exchange)
