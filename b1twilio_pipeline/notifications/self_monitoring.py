"""Loud when blind: the pipeline watches itself and tells the admins group (B1TWILIO_ADMIN_GROUP) once when
something keeps it from alerting anyone, and once more when that is over. An alerting pipeline that
silently stops is worse than none.

What is watched, each where it is seen (the moments are milestones in the store):
- B1 not answering the change sensor at all (unreachable, failing, refusing the login) for
  B1TWILIO_BLIND_AFTER_MINUTES (`b1.probe_health.B1_FAILING`);
- an entity whose question went unanswered that long while B1 answers the others
  (`b1.probe_health.entity_failing`). While B1 as a whole does not answer, that one incident explains
  every entity: the admins get one message, not one per entity;
- Twilio refusing our credentials (`twilio_auth.REFUSED`), at once. No SMS can go out while it lasts, so
  the incident is shown in the UI and by `b1twilio watchdog` failing (for systemd's OnFailure=), and the
  admins hear of it, with its start, when Twilio accepts the credentials again;
- notifications due for that long and not sent. The re-drive schedule makes a row due only once its
  backoff is over, and the next notification run takes it within seconds, so a row due for many minutes
  means the runs are not taking it (a jammed run queue or launcher). While the watchdog has the daemon
  reported silent (`watchdog.INCIDENT`) its backlog belongs to that incident. A notification failed for
  good is not one of these: the sender tells the admins about it itself (`Sender.admin_alerts`).
The daemon not ticking at all is the watchdog's (`watchdog.py`): nothing inside Dagster can report that.

An open incident is one milestone row (`incident:...`), opened with `open_once` and closed with `close` in
the transaction that plans the admins' messages about it. Those are ordinary ledger rows (rule
`send.ADMIN_RULE`, ids derived from the incident and the moment it opened), so they get the ledger's
retries, and a repeated tick, or a second daemon, finds the row and plans nothing: one message when an
incident opens, one when it closes.

This runs on every tick of the notification sensor, which ticks anyway (no sensor of its own: idle CPU
is what this pipeline is measured on): one read of the milestones, and the due rows that sensor reads
anyway; the rules file is read only when an incident opens or closes. Each opening and closing is also
reported as an evaluation of the asset checks of `self_monitoring_checks`, which is how the UI shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from b1twilio_pipeline.alerts.rules import Recipient, RulesConfig
from b1twilio_pipeline.b1.entities import ENTITIES, ENTITY_BY_NAME
from b1twilio_pipeline.b1.probe_health import B1_FAILING, entity_failing
from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.company_scope import pipeline_name
from b1twilio_pipeline.core.settings import current
from b1twilio_pipeline.notifications import watchdog
from b1twilio_pipeline.notifications.ledger import SENDING, Ledger, Notification, PlannedNotification, bounded_id
from b1twilio_pipeline.notifications.send import ADMIN_RULE, admin_group
from b1twilio_pipeline.notifications.twilio_auth import REFUSED

B1_INCIDENT = "incident:b1-unreachable"
TWILIO_INCIDENT = "incident:twilio-auth"
STUCK_INCIDENT = "incident:notifications-stuck"
# The asset checks showing them (see `self_monitoring_checks`).
B1_CHECK = "b1_reachable"  # on b1/service_layer
POLL_CHECK = "polled_"  # + the snapshot asset's name, on b1/service_layer: one per watched entity
TWILIO_CHECK = "twilio_accepts_credentials"  # on notifications/sent_notifications
STUCK_CHECK = "no_stuck_notifications"  # on notifications/sent_notifications


def poll_incident(entity: str) -> str:
    return f"incident:b1-blind:{entity}"


def incident_of(check_name: str) -> str | None:
    """The incident an asset check shows; None for any other check."""
    if check_name.startswith(POLL_CHECK) and (spec := ENTITY_BY_NAME.get(check_name[len(POLL_CHECK):])):
        return poll_incident(spec.entity)
    return {B1_CHECK: B1_INCIDENT, TWILIO_CHECK: TWILIO_INCIDENT, STUCK_CHECK: STUCK_INCIDENT}.get(check_name)


@dataclass(frozen=True)
class Condition:
    """One thing that can keep the pipeline from alerting, as one tick sees it."""

    incident: str
    trouble: bool  # it is there: an open incident stays open
    tell: bool  # it has lasted long enough, and nothing else explains it: open the incident
    problem: str  # one line for the admins and the UI when it opens
    recovered: str  # ... and when it closes
    texted: bool = True  # False: no SMS can go out about it (shown in the UI; the admins hear when it is over)


@dataclass(frozen=True)
class Transition:
    """An incident that opened (`over` False) or closed in a tick, and what was said about it."""

    incident: str
    over: bool
    text: str


def _line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def _at(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "an unknown time"


def _due_since(n: Notification) -> datetime:
    """When a due row became due: its retry or hold time, or the end of a dead worker's lease."""
    moment = (n.lease_until or n.attempt_started_at) if n.status == SENDING else n.next_attempt_at
    return moment or n.created_at


def conditions(moments: Mapping[str, datetime], due: Sequence[Notification], now: datetime,
               blind_after: timedelta) -> list[Condition]:
    """Every condition as `moments` (the milestones) and the due ledger rows show it at `now`."""
    b1_since = moments.get(B1_FAILING)
    found = [Condition(
        B1_INCIDENT, b1_since is not None, b1_since is not None and now - b1_since >= blind_after,
        f"SAP B1 has not answered since {_at(b1_since)} (unreachable, failing, refusing the login, or its "
        "settings are wrong): changes in B1 alert nobody. The failed ticks of b1_change_sensor say why.",
        f"SAP B1 answers again (not answering was reported at {_at(moments.get(B1_INCIDENT))}).")]
    for spec in ENTITIES:
        since = moments.get(entity_failing(spec.entity))
        found.append(Condition(
            poll_incident(spec.entity), since is not None,
            since is not None and b1_since is None and now - since >= blind_after,
            f"B1 has not answered the question about {spec.entity} since {_at(since)} while it answers the "
            f"others: changes of {spec.entity} alert nobody. The log of b1_change_sensor says what B1 said.",
            f"{spec.entity} is polled again (reported unpolled at {_at(moments.get(poll_incident(spec.entity)))})."))
    refused = moments.get(REFUSED)
    found.append(Condition(
        TWILIO_INCIDENT, refused is not None, refused is not None,
        f"Twilio refuses the pipeline's credentials since {_at(refused)} (HTTP 401, error 20003): no SMS or call "
        "goes out. Set TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) for the account and region.",
        f"Twilio accepts the pipeline's credentials again; it refused them from "
        f"{_at(moments.get(TWILIO_INCIDENT))} to {_at(now)}: SMS and calls of that time went out late, or "
        "failed (see notifications/notification_deliveries).", texted=False))
    stuck = [n for n in due if now - _due_since(n) >= blind_after]
    oldest = min((_due_since(n) for n in stuck), default=None)
    found.append(Condition(
        STUCK_INCIDENT, bool(stuck), bool(stuck) and watchdog.INCIDENT not in moments,
        f"{len(stuck)} notification(s) due since {_at(oldest)} have not gone out: the notification runs are not "
        "taking them. Check the runs of notify_job and the run queue in Dagster.",
        f"Notifications go out again (stuck ones were reported at {_at(moments.get(STUCK_INCIDENT))})."))
    return found


def _messages(people: Sequence[Recipient], incident: str, opened: datetime, kind: str, text: str,
              now: datetime) -> list[PlannedNotification]:
    """One SMS per admin, its id derived from the incident, the moment it opened and `kind`: planning it
    twice plans it once."""
    alert_id = bounded_id("self-monitoring", incident, opened.isoformat(), limit=200)
    return [PlannedNotification(
        notification_id=bounded_id(alert_id, kind, person.key, "sms"), alert_id=alert_id, rule_id=ADMIN_RULE,
        document=incident, recipient=person.key, recipient_name=person.name, recipient_masked=person.masked,
        channel="sms", body=f"{pipeline_name()}: {text}"[:600], not_before=now) for person in people]


class SelfMonitoring:
    """Opens and closes incidents for one tick; the admins are read from the rules only when needed."""

    def __init__(self, ledger: Ledger, rules: Callable[[], RulesConfig], log: Any) -> None:
        self.ledger, self.rules, self.log = ledger, rules, log

    def evaluate(self, due: Sequence[Notification], now: datetime) -> list[Transition]:
        """Open what must be told, close what is over; what opened or closed in this tick."""
        moments = milestones.read_all(self.ledger.engine)
        blind_after = timedelta(minutes=current().b1twilio_blind_after_minutes)
        changed: list[Transition] = []
        for condition in conditions(moments, due, now, blind_after):
            opened = moments.get(condition.incident)
            try:
                if opened is None and condition.tell and self._open(condition, now):
                    changed.append(Transition(condition.incident, False, condition.problem))
                elif opened is not None and not condition.trouble and self._close(condition, opened, now):
                    changed.append(Transition(condition.incident, True, condition.recovered))
            except Exception as error:  # e.g. a broken rules file: the others are still judged
                self.log.warning(f"self-monitoring: {condition.incident} not judged this tick: {_line(error)}")
        return changed

    def _open(self, condition: Condition, now: datetime) -> bool:
        text = condition.problem if condition.texted else ""
        with self.ledger.engine.begin() as conn:
            if not milestones.open_once(conn, condition.incident, now):
                return False  # another evaluation opened it
            self.ledger.insert_planned(conn, _messages(self._admins(condition.incident), condition.incident, now,
                                                       "alert", text, now) if text else [])
        self.log.warning(f"self-monitoring: {condition.problem}")
        return True

    def _close(self, condition: Condition, opened: datetime, now: datetime) -> bool:
        with self.ledger.engine.begin() as conn:
            if not milestones.close(conn, condition.incident):
                return False
            self.ledger.insert_planned(conn, _messages(self._admins(condition.incident), condition.incident,
                                                       opened, "recovered", condition.recovered, now))
        self.log.info(f"self-monitoring: {condition.recovered}")
        return True

    def _admins(self, incident: str) -> list[Recipient]:
        config = self.rules()
        people = config.recipients.get(admin_group(), [])
        if not people:
            self.log.warning(f"self-monitoring: no recipients group '{admin_group()}' in {config.source.name} to "
                             f"tell about {incident}: it is shown in the UI only")
        return people


def watch(context: dg.SensorEvaluationContext, ledger: Ledger, rules: Callable[[], RulesConfig],
          due: Sequence[Notification], now: datetime) -> list[dg.AssetCheckEvaluation]:
    """Self-monitoring for one tick of the notification sensor, never in its way: a failure here is logged
    and tried again next tick while the sensor goes on sending. Returns the evaluations of the code
    location's checks that show an incident which opened or closed."""
    try:
        changed = SelfMonitoring(ledger, rules, context.log).evaluate(due, now)
    except Exception as error:
        context.log.warning(f"self-monitoring failed this tick (tried again next tick): {_line(error)}")
        return []
    declared = context.repository_def.asset_graph.asset_check_keys if changed and context.repository_def else ()
    return [dg.AssetCheckEvaluation(asset_key=key.asset_key, check_name=key.name, passed=change.over,
                                    description=change.text, severity=dg.AssetCheckSeverity.ERROR)
            for change in changed for key in declared if incident_of(key.name) == change.incident]
