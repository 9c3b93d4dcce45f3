"""Sending: `send_due` sends a list of due notifications with bounded concurrency (Twilio limits concurrent
requests per account) and logs one materialization of `notifications/sent_notifications` per
notification, so the asset's events are the audit trail. The plan step calls it for what is due at once;
the notification run (`notify_job`, launched by the notification sensor) for everything that becomes due
later.

Each notification goes through the ledger's state machine (see `ledger`): claim, send, record the SID.
Nothing here retries by itself: a failure that may pass (an outage, a missing secret, a recipient
removed from the rules) hands the row back with a backoff and a message saying what to fix; the sensor
picks it up again, and after `B1TWILIO_SEND_MAX_ATTEMPTS` failures it is failed for good and the admins
are told in the same transaction. An attempt that may have reached Twilio makes the next one look the
message up before sending (`TwilioResource.deliver`).
"""


from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
from sqlalchemy.exc import IntegrityError

from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import Recipient, RulesConfig
from b1twilio_pipeline.core.automation import KIND, SENT
from b1twilio_pipeline.core.company_scope import asset_key, company_tags, pipeline_name
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.phones import mask_phones_in
from b1twilio_pipeline.core.settings import ConfigurationError, current
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.acknowledgements import Acknowledgements
from b1twilio_pipeline.notifications.ledger import (
    REVIEW,
    SKIPPED,
    Ledger,
    Notification,
    PlannedNotification,
    bounded_id,
)
from b1twilio_pipeline.notifications.twilio_api import AmbiguousDelivery, Outbound, SentNotification, TwilioSendError
from b1twilio_pipeline.notifications.twilio_auth import TwilioAuth
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource

NOTIFICATIONS_KEY = asset_key("notifications", "sent_notifications")
ADMIN_RULE = "b1twilio-admin"  # rule id of the pipeline's own alerts to the admins group
# Another worker is sending to the same person: a call lookup now could mistake its call for ours.
BUSY_RETRY = timedelta(seconds=30)


def admin_group() -> str:
    """The recipients group told about notifications that failed for good (B1TWILIO_ADMIN_GROUP)."""
    return current().b1twilio_admin_group


def outgoing_text(n: Notification, acknowledgeable: bool) -> str:
    """What the person receives: an SMS carries its reference, by which a lookup recognises it, and which
    the person replies to acknowledge it when the receiver can hear replies."""
    if n.channel != "sms" or not n.ref:
        return n.body
    return f"{n.body} Reply {n.ref} to acknowledge." if acknowledgeable else f"{n.body} (ref {n.ref})"


@dataclass(frozen=True)
class Outcome:
    """What one notification's attempt came to: sent, adopted, held, retry, failed, review, skipped (its alert
    was acknowledged first) or lost (another worker took it over)."""

    result: str
    n: Notification
    sid: str | None = None
    status: str | None = None
    message: str = ""


class Sender:
    """Processes one due notification at a time (thread-safe: all state is in the ledger)."""

    def __init__(self, ledger: Ledger, twilio: TwilioResource, rules: RulesConfig, owner: str) -> None:
        self.ledger, self.twilio, self.rules, self.owner = ledger, twilio, rules, owner
        self.acks = Acknowledgements(ledger.engine)
        self.auth = TwilioAuth(ledger.engine)  # self-monitoring: does Twilio accept our credentials?

    def process(self, notification_id: str, attempts: int) -> Outcome | None:
        now = utcnow()
        claimed = self.ledger.claim(notification_id, attempts, self.owner, now)
        if claimed is None:
            return None  # already taken by another worker, or no longer due
        try:
            return self._attempt(claimed, now)
        except ConfigurationError as error:
            return self._retry(claimed, None, str(error), may_have_sent=False)
        except AmbiguousDelivery as error:
            return self._give_up(claimed, None, f"needs review: {error}", status=REVIEW)
        except TwilioSendError as error:
            self.auth.saw(error)
            if error.permanent:
                return self._give_up(claimed, error.code, str(error))
            return self._retry(claimed, error.code, str(error), may_have_sent=error.may_have_sent)

    def _attempt(self, n: Notification, now: datetime) -> Outcome:
        lookup_since = n.lookup_since
        taken_on = self.acks.get(n.alert_id) if n.escalation_of and lookup_since is None else None
        if taken_on is not None:  # nobody needs this escalation any more (an earlier attempt would be looked up)
            reason = f"not sent: {taken_on.who} acknowledged the alert at {taken_on.acknowledged_at:%H:%M} UTC"
            self.ledger.skip(n, self.owner, reason)
            return Outcome(SKIPPED, n, message=reason)
        person = self._person(n)
        out = Outbound(n.channel, person.resolve_phone(), outgoing_text(n, self.twilio.acknowledgeable()),
                       n.ref if n.channel == "sms" else None)
        if lookup_since is not None and n.channel == "voice" and self.ledger.sending_elsewhere(n, now):
            return self._retry(n, None, "another call to the same person is in flight: looking up later",
                               may_have_sent=True, retry_at=now + BUSY_RETRY, count=False)
        hold = self._hold(n, person, now)
        if hold is not None:
            found = self.twilio.lookup(out, lookup_since, self._foreign(n)) if lookup_since else None
            if found is None:
                self.ledger.postpone(n, self.owner, hold)
                return Outcome("held", n, message=f"quiet hours: held until {hold:%Y-%m-%d %H:%M %Z}")
            return self._complete(n, found)
        return self._complete(n, self.twilio.deliver(out, lookup_since=lookup_since, is_foreign=self._foreign(n)))

    def _complete(self, n: Notification, sent: SentNotification) -> Outcome:
        self.auth.saw(None)
        try:
            recorded = self.ledger.complete(n.notification_id, self.owner, sent.sid, sent.status)
        except IntegrityError:
            return self._give_up(n, None, f"needs review: {sent.sid} is already recorded for another notification",
                                 status=REVIEW)
        if not recorded:
            return Outcome("lost", n, sent.sid, sent.status, "lost the lease before recording the SID")
        return Outcome("adopted" if sent.adopted else "sent", n, sent.sid, sent.status)

    def _foreign(self, n: Notification) -> Callable[[str], bool]:
        return lambda sid: self.ledger.sid_owner(sid) not in (None, n.notification_id)

    def _retry(self, n: Notification, code: int | None, message: str, *, may_have_sent: bool,
               retry_at: datetime | None = None, count: bool = True) -> Outcome:
        message = mask_phones_in(message)
        if count and n.failures + 1 >= self.ledger.policy.max_attempts:
            return self._give_up(n, code, f"gave up after {n.failures + 1} failed attempts: {message}")
        due = self.ledger.release(n, self.owner, error_code=code, message=message, may_have_sent=may_have_sent,
                                  retry_at=retry_at, count=count)
        when = f"retrying at {due:%H:%M:%S} UTC" if due else "lost the lease"
        return Outcome("retry", n, message=f"{message} ({when}, attempt {n.attempts})")

    def _give_up(self, n: Notification, code: int | None, message: str, status: str = "failed") -> Outcome:
        message = mask_phones_in(message)
        self.ledger.fail(n, self.owner, error_code=code, message=message, status=status,
                         admin_alerts=self.admin_alerts(n, message))
        return Outcome(status, n, message=message)

    def admin_alerts(self, n: Notification, reason: str) -> list[PlannedNotification]:
        """One SMS per person of the admins group about a notification that will not go out by itself."""
        if n.rule_id == ADMIN_RULE:
            return []  # never alert about alerts to the admins: that could loop
        text = (f"{pipeline_name()}: the {n.channel} to {n.recipient_name} about {n.document} (rule {n.rule_id}) "
                f"did not go out: {reason}")[:600]
        now = utcnow()
        alert_id = bounded_id("admin", n.notification_id, limit=200)
        return [PlannedNotification(
            notification_id=bounded_id(alert_id, person.key, "sms"), alert_id=alert_id, rule_id=ADMIN_RULE,
            document=n.document, recipient=person.key, recipient_name=person.name,
            recipient_masked=person.masked, channel="sms", body=text, not_before=now,
        ) for person in self.rules.recipients.get(admin_group(), [])]

    def _person(self, n: Notification) -> Recipient:
        person = self.rules.person(n.recipient)
        if person is None:
            raise ConfigurationError(f"recipient {n.recipient_name!r} of rule {n.rule_id!r} is no longer in "
                                     f"{self.rules.source.name}: add them back (the notification then goes out)")
        return person

    def _hold(self, n: Notification, person: Recipient, now: datetime) -> datetime | None:
        """Quiet hours are checked again when sending: a run that waited in the queue must not ring
        inside them."""
        rule = self.rules.find_rule(n.rule_id)
        return None if rule is None else rule.hold_until(now, person.tz, n.channel)


def _materialization(outcome: Outcome) -> dg.AssetMaterialization:
    n = outcome.n
    return dg.AssetMaterialization(
        asset_key=NOTIFICATIONS_KEY,
        description=f"{n.channel} to {n.recipient_name} for {n.document}",
        metadata={
            "notification_id": n.notification_id, "rule": n.rule_id, "document": n.document,
            "recipient": n.recipient_name, "recipient_phone": n.recipient_masked, "channel": n.channel,
            "twilio_sid": outcome.sid or "", "status": outcome.status or outcome.result,
            "attempt": n.attempts, "outcome": outcome.result, "error": outcome.message,
        },
    )


class DueNotification(dg.Config):
    notification_id: str
    attempts: int  # the claims it had when the sensor saw it: a claim succeeds only from this count


class NotifyConfig(dg.Config):
    notifications: list[DueNotification]


def send_due(context: dg.OpExecutionContext | dg.AssetExecutionContext, sender: Sender,
             due: Sequence[tuple[str, int]], concurrency: int) -> list[Outcome]:
    """Send `due` (notification id, claims seen) at most `concurrency` at once, logging one line and, for
    each that went out or ended for good, one materialization of `notifications/sent_notifications`."""
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="notify") as pool:
        futures = [pool.submit(sender.process, notification_id, attempts) for notification_id, attempts in due]
        for future in as_completed(futures):
            outcome = future.result()
            if outcome is None:
                continue
            outcomes.append(outcome)
            n = outcome.n
            line = (f"{n.channel} to {n.recipient_name} {n.recipient_masked} for {n.document}: {outcome.result}"
                    f"{' ' + outcome.sid if outcome.sid else ''}{': ' + outcome.message if outcome.message else ''}")
            if outcome.result in ("sent", "adopted", "failed", "review", SKIPPED):
                context.log_event(_materialization(outcome))
            (context.log.info if outcome.result in ("sent", "adopted", "held", SKIPPED) else context.log.warning)(line)
    counts = {result: sum(1 for o in outcomes if o.result == result)
              for result in ("sent", "adopted", "held", "retry", "failed", "review", SKIPPED)}
    context.log.info(f"notifications: {counts}")
    if outcomes and SENT not in context.run.tags:  # its events are notification history: kept as long
        context.instance.add_run_tags(context.run_id, {SENT: str(len(outcomes))})
    return outcomes


@dg.op(description="Send the due notifications of one sensor tick through Twilio, each recorded in the "
                   "ledger before and after, at most TwilioResource.max_concurrency at once.")
def send_notifications(context: dg.OpExecutionContext, config: NotifyConfig, rules: RulesResource,
                       twilio: TwilioResource, database: DatabaseResource) -> None:
    sender = Sender(Ledger(database.engine), twilio, rules.load(), owner=context.run_id)
    outcomes = send_due(context, sender, [(due.notification_id, due.attempts) for due in config.notifications],
                        twilio.max_concurrency)
    lost = [o for o in outcomes if o.result in ("failed", "review")]
    if lost:
        first = lost[0]
        raise dg.Failure(
            description=f"{len(lost)} notification(s) did not go out and the admins were told; first: "
                        f"{first.n.channel} to {first.n.recipient_name} for {first.n.document}: {first.message}",
            allow_retries=False)


@dg.job(
    description="Send the due notifications picked up by one notification sensor tick.",
    # The ledger owns retries (re-drive with backoff): Dagster must not re-execute a failed send step.
    tags={KIND: "notification", "dagster/max_retries": "0", **company_tags()},
)
def notify_job() -> None:
    send_notifications()

