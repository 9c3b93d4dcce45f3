"""`POST {B1TWILIO_PUBLIC_URL}/b1/events`: B1's webhook batches, into the inbox `b1_webhook_sensor` reads.

B1 authenticates with HTTP Basic: the credentials `b1twilio setup-b1-webhooks` put on the subscription
(B1_WEBHOOK_USERNAME / B1_WEBHOOK_PASSWORD), compared in constant time. Anything else is 401 before the body
is read and changes nothing. The body is size-limited (413) and must be a JSON array (400); each event is
checked by `b1.webhook_inbox.parse_batch`, and the batch is answered 200 once its usable events are stored,
so B1 stops resending it: unknown types are acknowledged and ignored, malformed events counted and logged
(resending them would not make them usable). Without both settings the endpoint answers 404 saying so: an
unauthenticated door that starts runs is not opened by default.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response

from b1twilio_pipeline.b1.webhook_inbox import MalformedBatch, WebhookInbox, parse_batch
from b1twilio_pipeline.core.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 1024 * 1024  # a few thousand events; B1's batches are far smaller
OFF = "B1 webhooks are off on this receiver: set B1_WEBHOOK_USERNAME and B1_WEBHOOK_PASSWORD to accept them"
UNAUTHORIZED = "B1 webhooks must authenticate with Basic B1_WEBHOOK_USERNAME / B1_WEBHOOK_PASSWORD"


class B1Events:
    """Who may post B1 events (`refusal`) and what a batch does (`accept`: its new events are stored)."""

    def __init__(self, inbox: WebhookInbox, username: str | None, password: str | None) -> None:
        self.inbox = inbox
        self._credentials = (username.encode(), password.encode()) if username and password else None

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> B1Events:
        """On with both settings, off with neither; one without the other is a mistake said at start."""
        username = settings.b1_webhook_username
        password = settings.b1_webhook_password.get_secret_value() if settings.b1_webhook_password else None
        if bool(username) != bool(password):
            missing = "B1_WEBHOOK_PASSWORD" if username else "B1_WEBHOOK_USERNAME"
            raise ConfigurationError(f"B1_WEBHOOK_USERNAME and B1_WEBHOOK_PASSWORD go together, but {missing} is "
                                     "not set: set both (B1's webhooks authenticate with them) or neither (polling "
                                     "only)")
        return cls(WebhookInbox(engine), username, password)

    def refusal(self, authorization: str | None) -> Response | None:
        """The answer to a request that may not post events (404 when off, 401 without the credentials), or
        None for one that may."""
        if self._credentials is None:
            return PlainTextResponse(OFF, status_code=404)
        if not self._authorized(authorization or ""):
            log.warning("B1 events rejected: no or wrong Basic credentials")
            return PlainTextResponse(UNAUTHORIZED, status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="b1twilio", charset="UTF-8"'})
        return None

    def _authorized(self, header: str) -> bool:
        assert self._credentials is not None
        scheme, _, encoded = header.partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, colon, password = decoded.partition(b":")
        # Both compared whatever the first gives: the time taken tells nothing about either.
        same_user = hmac.compare_digest(username, self._credentials[0])
        same_password = hmac.compare_digest(password, self._credentials[1])
        return scheme.lower() == "basic" and bool(colon) and same_user and same_password

    async def accept(self, body: bytes | None) -> Response:
        """Store the new events of an authorized request's body (None: it was over MAX_BATCH_BYTES)."""
        if body is None:
            return PlainTextResponse(f"batch larger than {MAX_BATCH_BYTES} bytes", status_code=413)
        try:
            batch = parse_batch(json.loads(body))
        except (ValueError, RecursionError) as exc:  # not JSON (or nested beyond reason), or not an array
            reason = str(exc) if isinstance(exc, MalformedBatch) else "the body is not JSON"
            log.warning("B1 events rejected: %s", reason)
            return PlainTextResponse(f"malformed batch: {reason}", status_code=400)
        stored = await run_in_threadpool(self.inbox.add, batch.events) if batch.events else 0
        if batch.malformed:
            log.warning("B1 events: %d malformed event(s) skipped, e.g. %s", len(batch.malformed), batch.malformed[0])
        log.info("B1 events: %d new, %d repeated, %d ignored", stored, len(batch.events) - stored, batch.ignored)
        return JSONResponse({"stored": stored, "repeated": len(batch.events) - stored, "ignored": batch.ignored,
                             "malformed": len(batch.malformed)})
