"""The notification plan: each new alert becomes one ledger row per recipient (recorded before anything is
sent), with the quiet-hours hold already computed, and one row per person of each step of the rule's
escalation policy, due at its minutes. What is due at once is sent by the same step, in the run that
found the change: a second run (and the wait for the sensor that would launch it) is the larger part of
a change's way to the phone. Everything later (quiet hours, escalation steps, retries, what a dead run
left) is the notification sensor's: it launches the sending run for rows that become due. Both send
through the ledger's claims, so a row is sent once whoever gets to it."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from b1twilio_pipeline.alerts.assets import ALERTS_GROUP, alert_key
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import RULE_KINDS, Recipient, Rule, RulesConfig
from b1twilio_pipeline.alerts.rules.base import NEXT_RECIPIENT
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.markdown import markdown_table
from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.digests import Digests
from b1twilio_pipeline.notifications.ledger import Ledger, PlannedNotification, bounded_id
from b1twilio_pipeline.notifications.send import Sender, send_due
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource

NOTIFICATION_PLAN_KEY = asset_key("alerts", "notification_plan")


def masked_phone_of(recipient: Recipient) -> str:
    """The number masked (+49*******678); a reference whose number is not stored yet shows its name."""
    try:
        return mask_phone(recipient.resolve_phone())
    except ConfigurationError:
        return recipient.masked


def plan_for(rule: Rule, recipients: Sequence[Recipient], alert_id: str, document: str,
             fields: dict[str, Any], channel: str, now: datetime,
             escalation_of: str | None = None) -> list[PlannedNotification]:
    """One ledger row per recipient, its text in the recipient's locale, held until quiet hours end unless
    the rule may ring now."""
    return [
        PlannedNotification(
            notification_id=bounded_id(alert_id, person.key, channel),
            alert_id=alert_id, rule_id=rule.id, document=document, recipient=person.key,
            recipient_name=person.name, recipient_masked=masked_phone_of(person), channel=channel,
            body=rule.render(fields, person.locale),
            not_before=rule.hold_until(now, person.tz, channel) or now, escalation_of=escalation_of,
        )
        for person in recipients
    ]


def policy_steps(config: RulesConfig, rule: Rule, first: Sequence[PlannedNotification],
                 fields: dict[str, Any]) -> list[PlannedNotification]:
    """The rows of the rule's escalation policy, planned with the first notice: each step its minutes after
    that notice goes out (quiet hours may hold it), pointing back at it, so an acknowledgement before then
    makes the sender skip the step (`send.Sender`) instead of anyone deciding later."""
    if not first or not rule.escalation.steps:
        return []
    start, head = max(row.not_before for row in first), first[0]
    notified = len(first)  # of a chain: its head; a next_recipient step takes the one after
    rows: list[PlannedNotification] = []
    for step in rule.escalation.steps:
        people = config.step_recipients(rule, step, notified)
        notified += 1 if step.to == NEXT_RECIPIENT else 0
        rows += plan_for(rule, people, head.alert_id, head.document, fields, step.channel or rule.first_channel,
                         start + timedelta(minutes=step.after_minutes), escalation_of=head.notification_id)
    return rows


def gather(config: RulesConfig, rule: Rule, rows: Sequence[PlannedNotification], digests: Digests,
           now: datetime) -> int:
    """A digest rule's alert joins each person's open digest (or opens one, due after the rule's period or
    at its time of day, held by quiet hours like any SMS); each row's text becomes a line of the digest."""
    assert rule.digest is not None
    for row in rows:
        person = config.person(row.recipient)
        until = rule.digest.until(now, rule.tz)
        due = rule.hold_until(until, person.tz if person else None, "sms") or until
        digests.add(row, until=due, max_items=rule.digest.max_items)
    return len(rows)


@dg.asset(
    key=NOTIFICATION_PLAN_KEY,
    deps=[alert_key(kind) for kind in RULE_KINDS],
    group_name=ALERTS_GROUP,
    kinds={"python", "sql"},
    description="Each new alert becomes one notification per recipient in the ledger (recorded before "
                "anything is sent), held until quiet hours end where the rule says so; those due now are "
                "sent at once (each logged as an event of notifications/sent_notifications).",
)
def notification_plan(context: dg.AssetExecutionContext, rules: RulesResource, twilio: TwilioResource,
                      database: DatabaseResource) -> dg.MaterializeResult:
    config = rules.load()
    alerts, ledger = AlertStore(database.engine), Ledger(database.engine)
    planned = held = 0
    now = utcnow()
    problems: list[dict[str, str]] = []
    due_now: list[tuple[str, int]] = []  # (notification id, claims so far): fresh rows have none
    for event in alerts.unplanned():
        rule = config.find_rule(event.rule_id)
        try:
            rows = [] if rule is None or not rule.enabled else plan_for(
                rule, config.initial_recipients(rule), event.alert_id, event.document, event.fields,
                rule.first_channel, now)
            if rule is not None and rule.digest is not None:
                planned += gather(config, rule, rows, Digests(database.engine), now)
                continue
            rows += [] if rule is None else policy_steps(config, rule, rows, event.fields)
            planned += ledger.plan(rows, alert_id=event.alert_id)
        except (ValueError, ConfigurationError, SQLAlchemyError) as error:
            # One alert that cannot be planned (a template that no longer fits its fields, a database
            # that refuses a value) must not hold up every alert after it: record why and go on.
            reason = " ".join(str(error).split())[:300]
            alerts.record_plan_error(event.alert_id, reason)
            problems.append({"alert": event.alert_id, "rule": event.rule_id, "why": reason})
            context.log.warning(f"alert {event.alert_id} not planned: {reason}")
            continue
        held += sum(1 for row in rows if row.not_before > now)
        due_now += [(row.notification_id, 0) for row in rows if row.not_before <= now]
    context.log.info(f"planned {planned} notification(s), {held} held by quiet hours")
    outcomes = send_due(context, Sender(ledger, twilio, config, owner=context.run_id), due_now,
                        twilio.max_concurrency) if due_now else []
    return dg.MaterializeResult(metadata={
        "planned": planned, "held_by_quiet_hours": held, "not_planned": len(problems),
        "sent_at_once": sum(1 for outcome in outcomes if outcome.result in ("sent", "adopted")),
        "not_planned_alerts": dg.MetadataValue.md(markdown_table(problems, empty="None."))})
