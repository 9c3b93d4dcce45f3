"""Where Twilio and B1 reach the receiver (`b1twilio receiver`): one public base URL, B1TWILIO_PUBLIC_URL,
and a path per webhook. The receiver checks every signature against exactly these URLs, and the sending
side hands the same URLs to Twilio (and `setup-b1-webhooks` to B1), so both must come from here."""

from __future__ import annotations

STATUS_PATH = "/twilio/status"  # message and call status callbacks
SMS_PATH = "/twilio/sms"  # inbound SMS: the operator sets it as the Twilio number's messaging webhook
VOICE_PATH = "/twilio/voice"  # the keypress of a call's <Gather>
B1_EVENTS_PATH = "/b1/events"  # B1's webhook batches (Basic authentication, see `b1_events`)


COMPANY_PATH = "/companies/{}"  # a company's own paths when one deployment watches several


def company_public_url(base: str, company: str) -> str:
    """A company's public base URL: its callbacks and webhooks are told apart by the path."""
    return join(base, COMPANY_PATH.format(company))


def join(base: str, path: str) -> str:
    """`base` (with or without a trailing slash, possibly with a path prefix) followed by `path`."""
    return base.rstrip("/") + path
