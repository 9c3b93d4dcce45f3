"""Delivery status: `notification_deliveries` reconciles every message or call that is not final yet by
polling Twilio (the status callback receiver updates the same ledger when callbacks can reach us: either
path alone gives the full picture), reports every status reached since the last run, plans escalations,
shows the audit view (`audit_view`) and checks the ledger's state (`delivery_checks`).
"""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import RulesConfig
from b1twilio_pipeline.core import settings
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.markdown import markdown_table
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.acknowledgements import Acknowledgements
from b1twilio_pipeline.notifications.audit_view import audit_table
from b1twilio_pipeline.notifications.delivery_checks import (
    EXCEPTION_CHECK,
    FAILED_CHECK,
    WINDOW,
    exception_check,
    failed_check,
)
from b1twilio_pipeline.notifications.delivery_log import DeliveryEvent, DeliveryLog
from b1twilio_pipeline.notifications.ledger import Ledger, Notification
from b1twilio_pipeline.notifications.ledger_reads import LedgerReads
from b1twilio_pipeline.notifications.plan import NOTIFICATION_PLAN_KEY, plan_for
from b1twilio_pipeline.notifications.send import NOTIFICATIONS_KEY
from b1twilio_pipeline.notifications.statuses import StatusEvent, is_exception, is_final
from b1twilio_pipeline.notifications.twilio_api import TwilioSendError
from b1twilio_pipeline.notifications.twilio_auth import TwilioAuth
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource

DELIVERIES_PATH = ("notifications", "notification_deliveries")  # the receiver reports to it for each company
DELIVERIES_KEY = asset_key(*DELIVERIES_PATH)
DELIVERY_GROUP = "notifications"

sent_notifications = dg.AssetSpec(
    NOTIFICATIONS_KEY,
    deps=[NOTIFICATION_PLAN_KEY],
    group_name=DELIVERY_GROUP,
    kinds={"twilio"},
    description="Each SMS or call handed to Twilio; materialized by the notification runs, one per "
                "notification, with rule, document, masked recipient, channel and SID.",
)


def _poll(twilio: TwilioResource, deliveries: DeliveryLog, log: Any) -> int:
    """Ask Twilio for what is due for a poll, least recently polled first; stop waiting for receipts
    older than B1TWILIO_RECEIPT_MAX_HOURS (their last status, e.g. `sent`, stands). Whether Twilio accepted
    our credentials is recorded for self-monitoring (`twilio_auth`)."""
    now = utcnow()
    expired = deliveries.expire_unconfirmed(now, timedelta(hours=settings.current().b1twilio_receipt_max_hours))
    if expired:
        log.info(f"{expired} message(s)/call(s) without a final status after the receipt window: final now")
    changed = 0
    auth = TwilioAuth(deliveries.engine)
    for sid, channel in deliveries.due_for_poll(now):
        try:
            status = twilio.fetch_status(sid)
        except TwilioSendError as error:
            auth.saw(error)
            log.warning(f"could not poll {sid}: {error}")
            continue
        finally:
            deliveries.mark_polled(sid, now)
        auth.saw(None)
        changed += deliveries.apply_status(StatusEvent(
            sid=sid, channel=channel, status=status.status, error_code=status.error_code, source="poll",
            received_at=utcnow()))
    return changed


def _notifications_of(ledger: Ledger, events: Sequence[DeliveryEvent]) -> dict[str, Notification | None]:
    """The notification behind each event's SID, read once per SID."""
    return {sid: ledger.by_sid(sid) for sid in dict.fromkeys(event.sid for event in events)}


def _escalate(config: RulesConfig, ledger: Ledger) -> int:
    """SMS undelivered/failed -> a voice call to the same person (sms_then_voice); SMS or call failed or
    not answered -> the next person of an on-call chain (escalation.next_recipient); nothing once the alert
    was acknowledged. The decision and the escalation's notification are recorded in one transaction."""
    planned = 0
    waiting = ledger.needs_escalation()
    taken_on = Acknowledgements(ledger.engine).of_alerts([n.alert_id for n in waiting])
    for n in waiting:
        if n.alert_id in taken_on:  # somebody has it: nobody else needs to be told
            ledger.escalate(n.notification_id, [])
            continue
        rule = config.find_rule(n.rule_id)
        person = config.person(n.recipient)
        target, channel = None, n.channel
        if rule is not None and person is not None and is_exception(n.channel, n.status):
            target, channel = (person, "voice") if n.channel == "sms" and rule.escalates_to_voice else (
                config.next_recipient(rule, person), n.channel)
        rows = [] if target is None or rule is None else plan_for(
            rule, [target], n.alert_id, n.document, ledger.alert_fields(n.alert_id), channel, utcnow(),
            escalation_of=n.notification_id)
        planned += ledger.escalate(n.notification_id, rows)
    return planned


def _event_rows(events: Sequence[DeliveryEvent],
                notifications: dict[str, Notification | None]) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        n = notifications[event.sid]
        rows.append({
            "sid": event.sid, "status": event.status, "source": event.source,
            "error_code": event.error_code or "", "rule": n.rule_id if n else "",
            "document": n.document if n else "",
            "recipient": f"{n.recipient_name} {n.recipient_masked}" if n else "",
        })
    return rows


@dg.asset(
    key=DELIVERIES_KEY,
    deps=[NOTIFICATIONS_KEY],
    group_name=DELIVERY_GROUP,
    kinds={"twilio", "sql"},
    description="The audit view: who was told what, when, and did it arrive (the table "
                "`who_was_told_what` of the latest materialization: every notification of the last 24 hours "
                "with its latest status). Each run reconciles what is not final yet (status callbacks, and "
                "polling Twilio) and reports the statuses reached; undelivered/failed are delivery exceptions.",
    check_specs=[dg.AssetCheckSpec(EXCEPTION_CHECK, asset=DELIVERIES_KEY,
                                   description=f"No SMS undelivered/failed and no call unanswered/failed in "
                                               f"the last {WINDOW.total_seconds() / 3600:.0f} hours that "
                                               "no escalation of it made up for (the voice call or the "
                                               "next person on call, delivered or answered)."),
                 dg.AssetCheckSpec(FAILED_CHECK, asset=DELIVERIES_KEY,
                                   description=f"No notification failed for good or waits for review in "
                                               f"the last {WINDOW.total_seconds() / 3600:.0f} hours (the "
                                               "admins were told of each).")],
)
def notification_deliveries(context: dg.AssetExecutionContext, rules: RulesResource, twilio: TwilioResource,
                            database: DatabaseResource) -> dg.MaterializeResult:
    ledger, deliveries, reads = Ledger(database.engine), DeliveryLog(database.engine), LedgerReads(database.engine)
    polled = _poll(twilio, deliveries, context.log)
    events = deliveries.unreported()
    notifications = _notifications_of(ledger, events)
    escalations = _escalate(rules.load(), ledger)
    rows = _event_rows(events, notifications)
    exceptions = [row for row, event in zip(rows, events, strict=True)
                  if is_exception(event.channel, event.status)]
    deliveries.mark_reported(event.seq for event in events)
    final = sum(1 for e in events if is_final(e.channel, e.status))
    return dg.MaterializeResult(
        metadata={
            "who_was_told_what": audit_table(reads, utcnow()),
            "statuses_reported": len(events), "final_statuses": final, "changed_by_polling": polled,
            "delivery_exceptions": len(exceptions), "escalations_planned": escalations,
            "statuses": dg.MetadataValue.md(markdown_table(rows, empty="No new delivery statuses.")),
        },
        check_results=[exception_check(reads, utcnow()), failed_check(reads, utcnow())],
    )
