"""The notification run: one run per notification (alert x recipient x channel), launched by the
notification sensor under a run key equal to the notification id, so Dagster refuses a duplicate.

Exactly-once protocol with the ledger (SPEC section 4): the row exists before anything is sent; the run
marks it `sending`, calls Twilio, then records the SID. A run that finds a row already `sending` (a
crash or retry between the two) first asks Twilio whether a message to that recipient went out since
the attempt started, and adopts its SID instead of sending again.
"""

from datetime import timedelta
from typing import Any

import dagster as dg

from b1twilio_pipeline.masking import mask_phones_in
from b1twilio_pipeline.resources.rules import RulesResource
from b1twilio_pipeline.resources.store import StoreResource
from b1twilio_pipeline.resources.twilio import SentNotification, TwilioResource, TwilioSendError
from b1twilio_pipeline.rules import RulesConfig
from b1twilio_pipeline.settings import ConfigurationError
from b1twilio_pipeline.store import PLANNED, SENDING, Ledger, Notification

NOTIFICATIONS_KEY = dg.AssetKey(["notifications", "sent_notifications"])
TAG_PREFIX = "b1twilio"
# Twilio's clock and ours differ a little; look this far before the attempt started.
CLOCK_SLACK = timedelta(minutes=2)


def notification_tags(n: Notification) -> dict[str, str]:
    """Run tags: filter the run list by any of them to read the audit trail. The phone is masked."""
    return {
        f"{TAG_PREFIX}/rule": n.rule_id,
        f"{TAG_PREFIX}/document": n.document,
        f"{TAG_PREFIX}/recipient": f"{n.recipient_name} {n.recipient_masked}",
        f"{TAG_PREFIX}/channel": n.channel,
    }


class NotifyConfig(dg.Config):
    notification_id: str


def _phone(config: RulesConfig, n: Notification) -> str:
    for group in config.recipients.values():
        for person in group:
            if person.key == n.recipient:
                return person.resolve_phone()
    raise ConfigurationError(f"recipient {n.recipient_name!r} of rule {n.rule_id!r} is no longer in "
                             f"{config.source.name}: add them back or let the alert lapse")


def _already_sent(twilio: TwilioResource, phone: str, n: Notification) -> SentNotification | None:
    """After a crash between 'sending' and the SID: did Twilio get it anyway?"""
    if n.attempt_started_at is None:
        return None
    for record in twilio.sent_since(phone, n.attempt_started_at - CLOCK_SLACK, n.channel):
        if n.channel == "voice" or record.body == n.body:
            return SentNotification(record.sid, record.status, n.channel)
    return None


def _send(twilio: TwilioResource, phone: str, n: Notification) -> SentNotification:
    if n.channel == "voice":
        return twilio.place_call(phone, n.body)
    return twilio.send_sms(phone, n.body)


def _materialization(n: Notification, sid: str | None, status: str, **extra: Any) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=NOTIFICATIONS_KEY,
        description=f"{n.channel} to {n.recipient_name} for {n.document}",
        metadata={
            "notification_id": n.notification_id, "rule": n.rule_id, "document": n.document,
            "recipient": n.recipient_name, "recipient_phone": n.recipient_masked, "channel": n.channel,
            "twilio_sid": sid or "", "status": status, **extra,
        },
    )


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    description="Send one notification through Twilio, recorded in the ledger before and after.",
)
def send_notification(context: dg.OpExecutionContext, config: NotifyConfig, rules: RulesResource,
                      twilio: TwilioResource, store: StoreResource) -> None:
    ledger = store.ledger()
    n = ledger.get(config.notification_id)
    if n is None:
        raise dg.Failure(f"notification {config.notification_id!r} is not in the ledger", allow_retries=False)
    if n.sid or n.status not in (PLANNED, SENDING):
        context.log.info(f"already handled ({n.status}, {n.sid or 'no SID'}): nothing sent")
        return
    phone = _phone(rules.load(), n)
    sent = _already_sent(twilio, phone, n) if n.status == SENDING else None
    if sent is not None:
        context.log.warning(f"Twilio already has {sent.sid} from an interrupted attempt: adopted, not resent")
    else:
        sent = _send_recorded(context, ledger, twilio, phone, n)
    ledger.mark_sent(n.notification_id, sent.sid, sent.status)
    context.instance.add_run_tags(context.run_id, {f"{TAG_PREFIX}/sid": sent.sid,
                                                   f"{TAG_PREFIX}/status": sent.status})
    context.log_event(_materialization(n, sent.sid, sent.status))
    context.log.info(f"{n.channel} {sent.sid} to {n.recipient_name} {n.recipient_masked}: {sent.status}")


def _send_recorded(context: dg.OpExecutionContext, ledger: Ledger, twilio: TwilioResource, phone: str,
                   n: Notification) -> SentNotification:
    ledger.mark_sending(n.notification_id, context.run_id)
    try:
        return _send(twilio, phone, n)
    except TwilioSendError as error:
        if not error.permanent:
            raise  # transient after the resource's own backoff: the op retry policy tries again
        message = mask_phones_in(str(error))
        ledger.mark_failed(n.notification_id, "failed", error.code, message)
        context.instance.add_run_tags(context.run_id, {f"{TAG_PREFIX}/status": "failed"})
        context.log_event(_materialization(n, None, "failed", error_code=error.code or 0, error=message))
        raise dg.Failure(f"Twilio refused the {n.channel} to {n.recipient_name}: {message}",
                         allow_retries=False) from None


@dg.job(
    description="Send one notification (launched by the notification sensor, one run per notification).",
    tags={"b1twilio/kind": "notification"},
)
def notify_job() -> None:
    send_notification()
