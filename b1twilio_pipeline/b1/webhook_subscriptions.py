"""B1's webhook subscription (`EventSubscriptions`, SAP Business One 10.0 FP 2602 and later): B1 posts its
events about the entity sets the rules watch to the receiver, with Basic authentication.

One subscription per receiver URL (B1 keeps WebhookURL unique, table OEVC), under a WebhookID derived from
that URL, so setting up again meets it: "already exists" is success, and the subscription is then brought
up to date with a PATCH (entity sets the rules added, a changed password). Which property carries the Basic
credentials is not in what we know of the Service Layer (B1 keeps them as OEVC.AuthCred): they are sent as
`UserName` and `Password`, the Service Layer's names for a login's. The handshake is off: B1 would expect an
answer the receiver does not define.

A Service Layer without the entity set (before 10.0 FP 2602) answers 404; a company without webhooks
enabled, 400 with code -21100 or a message saying so. `WebhooksUnsupported` says in one line what to do;
polling works without webhooks either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.errors import SapB1Error
from b1twilio_pipeline.core.errors import ConfigurationError

ENTITY_SET = "EventSubscriptions"
SUBSCRIBED_ACTIONS = ("Created", "Updated")  # deletions leave nothing to read (see `webhook_inbox`)
NOT_ENABLED_CODE = -21100
POLLING_STAYS = "polling keeps every alert working without webhooks, only slower"


class WebhooksUnsupported(ConfigurationError):
    """This B1 (version or company) cannot send webhooks; the message says what to do."""


def webhook_id(url: str) -> str:
    """The WebhookID for a receiver URL (B1 allows 40 characters): the same URL, the same subscription."""
    return "b1twilio-" + hashlib.sha256(url.encode()).hexdigest()[:24]


def subscription(url: str, entities: Collection[str], username: str, password: str) -> dict[str, Any]:
    """The subscription's body: every entity set for each of SUBSCRIBED_ACTIONS, in a stable order."""
    return {"WebhookID": webhook_id(url), "WebhookURL": url, "AuthenticationType": "Basic", "UserName": username,
            "Password": password, "Handshake": "tNO",
            "EventCollection": [{"BusinessObject": entity, "TransactionType": action}
                                for entity in sorted(entities) for action in SUBSCRIBED_ACTIONS]}


def subscribe(session: SapB1Session, url: str, entities: Collection[str], username: str, password: str) -> str:
    """Create the subscription of `url` to `entities`' changes: 'created', or 'updated' when it existed."""
    body = subscription(url, entities, username, password)
    try:
        try:
            session.post(ENTITY_SET, body)
            return "created"
        except SapB1Error as error:
            if not error.already_exists:
                raise
        try:
            session.patch(f"{ENTITY_SET}('{body['WebhookID']}')", {k: v for k, v in body.items() if k != "WebhookID"})
        except SapB1Error as error:
            if error.status != 404:
                raise
            raise ConfigurationError(f"B1 already holds a subscription for {url} under another WebhookID: delete it "
                                     f"in B1 and run `b1twilio setup-b1-webhooks` again") from None
        return "updated"
    except SapB1Error as error:
        raise _explained(error, session.company_db, password) from None


def _explained(error: SapB1Error, company_db: str, password: str) -> SapB1Error | WebhooksUnsupported:
    """B1's refusal in one line with what to do, the webhook password never in it (should B1 echo it)."""

    def redacted(text: str) -> str:
        return text.replace(password, "***") if len(password) >= 3 else text

    message = redacted(error.b1_message or "")
    if error.status == 404 and error.code != -2028:  # the entity set is unknown, not a missing record
        return WebhooksUnsupported(f"this Service Layer has no {ENTITY_SET}: B1 webhooks need SAP Business One 10.0 "
                                   f"FP 2602 or later ({POLLING_STAYS})")
    lowered = message.lower()
    if error.code == NOT_ENABLED_CODE or ("webhook" in lowered and ("not enabled" in lowered or "disabled" in lowered)):
        return WebhooksUnsupported(
            f"B1 refused the subscription (code {error.code}: {message}): enable webhooks for company {company_db} "
            f"(General Settings, or CompanyService_UpdateAdminInfo with EnableWebhook tYES) and run again "
            f"({POLLING_STAYS})")
    return type(error)(redacted(str(error)), status=error.status, code=error.code, b1_message=message)
