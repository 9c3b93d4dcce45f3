"""Webhooks of the Service Layer simulator: the `EventSubscriptions` entity set and the Webhook Messenger.

As SAP Business One 10.0 FP 2602 does, a subscription names a receiver URL (unique, like OEVC.WebhookURL),
its authentication and the business objects and transaction types it wants. The messenger posts what
changed as batches: JSON arrays of CloudEvents-like events (`sap.b1.<Entity>.<Action>.v1`, `data` the
record's key), gathered for `batch_delay_s` after the first change, at most `MAX_BATCH` per post, with the
subscription's Basic credentials. A post that fails (no answer, or not 2xx) is retried after each of
`retry_delays_s` with the same events, ids included, as B1 retries; while posts fail the subscription's
state is Exceptional ("X"), and after the last retry those events are dropped. Bulk-generated documents
(`generate_invoices`, the benchmarks' data) send no events.

`support` answers as different B1s do: "on"; "absent", a Service Layer older than 10.0 FP 2602 (the entity
set does not exist: 404); "disabled", a company whose webhooks are not enabled (creating a subscription
answers 400 with code -21100).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from b1twilio_sim.sap_b1_data import ENTITIES
from b1twilio_sim.sap_b1_errors import B1Failure, already_exists, bad_request, not_found

ENTITY_SET = "EventSubscriptions"
SUPPORT = ("on", "absent", "disabled")
AUTHENTICATION = ("None", "Basic")  # OAuth, HMAC and System exist in B1; the simulator does not sign
ACTIONS = ("Created", "Updated", "Deleted")
PROPERTIES = {"WebhookID", "WebhookURL", "AuthenticationType", "UserName", "Password", "Handshake",
              "EventCollection"}
MAX_BATCH = 100


@dataclass
class Subscription:
    """One subscription (what B1 keeps in OEVC and its event list) and the events waiting to be posted."""

    webhook_id: str
    url: str
    authentication: str
    credentials: tuple[str, str] | None
    events: set[tuple[str, str]]  # (BusinessObject, TransactionType)
    state: str = "A"  # Active; "X" Exceptional after a batch could not be delivered
    last_error: str = ""
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        """As the Service Layer shows it: never the credentials."""
        return {"WebhookID": self.webhook_id, "WebhookURL": self.url, "AuthenticationType": self.authentication,
                "Handshake": "tNO", "State": self.state, "LastErrorMessage": self.last_error,
                "EventCollection": [{"BusinessObject": obj, "TransactionType": action}
                                    for obj, action in sorted(self.events)]}


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise bad_request(f"{name} is required: a string of at most {limit} characters")
    return value


def _checked(body: dict[str, Any], current: Subscription | None) -> Subscription:
    """A subscription from a create body, or `current` changed by a PATCH body; B1-style 400 otherwise."""
    unknown = sorted(set(body) - PROPERTIES)
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' of 'EventSubscription' is invalid")
    merged = {} if current is None else {"WebhookID": current.webhook_id, "WebhookURL": current.url,
                                         "AuthenticationType": current.authentication}
    merged.update(body)
    url = _text(merged, "WebhookURL", 254)
    if not url.startswith(("http://", "https://")):
        raise bad_request("WebhookURL must be an http(s) URL")
    authentication = merged.get("AuthenticationType", "None")
    if authentication not in AUTHENTICATION:
        raise bad_request(f"AuthenticationType '{authentication}' is not supported here: use None or Basic")
    credentials = current.credentials if current is not None and "UserName" not in body else None
    if authentication == "Basic" and credentials is None:
        credentials = (_text(merged, "UserName", 254), _text(merged, "Password", 254))
    collection = merged.get("EventCollection")
    if current is not None and collection is None:
        events = current.events
    else:
        if not isinstance(collection, list) or not collection:
            raise bad_request("EventCollection is required: a list of {BusinessObject, TransactionType}")
        events = set()
        for entry in collection:
            obj, action = (entry.get("BusinessObject"), entry.get("TransactionType")) if isinstance(entry, dict) \
                else (None, None)
            if not isinstance(obj, str) or obj not in ENTITIES or action not in ACTIONS:
                raise bad_request(f"Invalid event {entry!r}: BusinessObject one of {', '.join(ENTITIES)}, "
                                  f"TransactionType one of {', '.join(ACTIONS)}")
            events.add((obj, action))
    return Subscription(_text(merged, "WebhookID", 40), url, authentication,
                        credentials if authentication == "Basic" else None, events)


class WebhookMessenger:
    """The subscriptions of one company and the thread that posts their events."""

    def __init__(self, now: Callable[[], datetime], source: Callable[[], str], *, batch_delay_s: float = 0.5,
                 retry_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)) -> None:
        self.now = now
        self.source = source
        self.batch_delay_s = batch_delay_s
        self.retry_delays_s = retry_delays_s
        self.support = "on"
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[dict[str, Any]] = []  # every post: for tests and the admin API
        self._lock = threading.Condition()
        self._pending = 0  # events queued or being posted
        self._stopping = threading.Event()
        self._http = httpx.Client(timeout=5.0)
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- the entity set

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new subscription; 400 -21100 when the company has not enabled webhooks, -2035 for a WebhookID
        or WebhookURL that is taken."""
        if self.support == "disabled":
            raise B1Failure(400, -21100, "Failed to create event subscription: webhook is not enabled for this "
                                         "company")
        subscription = _checked(body, None)
        with self._lock:
            if subscription.webhook_id in self.subscriptions or \
                    any(s.url == subscription.url for s in self.subscriptions.values()):
                raise already_exists("Event Subscription (OEVC)")
            self.subscriptions[subscription.webhook_id] = subscription
            return subscription.resource()

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.resource() for s in self.subscriptions.values()]

    def resource(self, webhook_id: str) -> dict[str, Any]:
        with self._lock:
            return self._get(webhook_id).resource()

    def update(self, webhook_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            current = self._get(webhook_id)
            changed = _checked(body, current)
            if changed.webhook_id != webhook_id:
                raise bad_request("WebhookID is the key and cannot be changed")
            if any(s.url == changed.url and s is not current for s in self.subscriptions.values()):
                raise already_exists("Event Subscription (OEVC)")
            changed.outbox = current.outbox
            self.subscriptions[webhook_id] = changed

    def delete(self, webhook_id: str) -> None:
        with self._lock:
            self._pending -= len(self._get(webhook_id).outbox)
            del self.subscriptions[webhook_id]
            self._lock.notify_all()

    def _get(self, webhook_id: str) -> Subscription:
        subscription = self.subscriptions.get(webhook_id)
        if subscription is None:
            raise not_found()
        return subscription

    # ----------------------------------------------------------------- the messenger

    def record_change(self, entity: str, key: Any, action: str) -> None:
        """Queue an event for every subscription that wants it (cheap: called under the data lock)."""
        with self._lock:
            wanting = [s for s in self.subscriptions.values() if (entity, action) in s.events]
            if not wanting:
                return
            key_field = ENTITIES[entity].key
            for subscription in wanting:
                subscription.outbox.append({
                    "id": str(uuid.uuid4()), "specversion": "1.0", "source": self.source(),
                    "type": f"sap.b1.{entity}.{action}.v1", "subject": f"{entity}({key!r})",
                    "time": self.now().astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "datacontenttype": "application/json", "data": {key_field: key}})
                self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sap-b1-webhooks", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._pending and not self._stopping.is_set():
                    self._lock.wait()
            if self._stopping.wait(self.batch_delay_s):
                return
            with self._lock:
                batches = [(s, s.outbox[:MAX_BATCH]) for s in self.subscriptions.values() if s.outbox]
                for subscription, batch in batches:
                    del subscription.outbox[:len(batch)]
            for subscription, batch in batches:
                self._deliver(subscription.webhook_id, batch)
                with self._lock:
                    self._pending -= len(batch)
                    self._lock.notify_all()

    def _deliver(self, webhook_id: str, batch: list[dict[str, Any]]) -> None:
        """Post one batch, retrying it unchanged until it is accepted or the retries are spent. Each attempt
        takes the subscription as it is then: a PATCH (new credentials) applies to the next retry."""
        for attempt, delay in enumerate((0.0, *self.retry_delays_s), start=1):
            if self._stopping.wait(delay):
                return
            with self._lock:
                subscription = self.subscriptions.get(webhook_id)
            if subscription is None:  # deleted meanwhile: nobody wants these any more
                return
            status, error = None, ""
            try:
                answer = self._http.post(subscription.url, json=batch, auth=subscription.credentials)
                status = answer.status_code
                error = "" if answer.is_success else f"HTTP {status}: {answer.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.deliveries.append({"webhook_id": webhook_id, "url": subscription.url, "events": batch,
                                        "attempt": attempt, "status": status, "error": error})
                subscription.last_error, subscription.state = error, "X" if error else "A"
                if not error:
                    return

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was posted (or given up on); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http.close()
