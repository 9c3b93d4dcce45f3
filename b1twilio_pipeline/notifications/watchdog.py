"""`b1twilio watchdog`: is the Dagster daemon still ticking? An alerting pipeline that silently stops is
worse than none, and a dead daemon cannot report its own death, so this runs outside Dagster (a systemd
timer every few minutes, see the README).

It reads the heartbeat every tick of `b1_change_sensor` writes. When the heartbeat is older than
`--stale-minutes` it texts the admins group (B1TWILIO_ADMIN_GROUP) once: the incident is recorded in the
store, so the next timer run stays quiet. When the heartbeat is fresh again it texts once more that it
recovered. A text that cannot be sent reopens the question for the next run rather than losing it.

It is also the way out for what no SMS can tell: when Twilio refuses the pipeline's credentials (see
`twilio_auth`), the first run that sees it prints one line and exits with status 3, so the timer's unit
fails and its `OnFailure=` unit (a mail, a page through another provider) tells someone at once; later runs
of the same incident only print it (once per incident, not a mail every timer run).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.b1.sensors import HEARTBEAT
from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.company_scope import pipeline_name
from b1twilio_pipeline.core.database import engine_for
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.settings import current
from b1twilio_pipeline.notifications.twilio_api import TwilioSendError
from b1twilio_pipeline.notifications.twilio_auth import REFUSED
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource

INCIDENT = "incident:daemon-silent"
TWILIO_TOLD = "watchdog:twilio-refusal-told"  # the refusal the watchdog failed about already
TWILIO_REFUSES = 3  # the exit status when it first sees Twilio refuse the credentials


def _tell_admins(text: str) -> int:
    """Text every person of the admins group directly through Twilio (no run can do it: the daemon is
    what is missing). Returns how many were texted."""
    group = current().b1twilio_admin_group
    people = load_rules(current().b1twilio_config).recipients.get(group, [])
    if not people:
        raise ConfigurationError(f"no recipients group '{group}' in the rules file to tell: add it, or set "
                                 "B1TWILIO_ADMIN_GROUP to the group that should hear about outages")
    twilio = TwilioResource()
    for person in people:
        twilio.send_sms(person.resolve_phone(), text)
    return len(people)


def watch(engine: Engine, now: datetime, stale_after: timedelta) -> str:
    """One look at the heartbeat; texts the admins on a change of state. Returns what it saw."""
    beat = milestones.read(engine, HEARTBEAT)
    if beat is None or now - beat > stale_after:
        since = f"since {beat:%Y-%m-%d %H:%M} UTC" if beat else "ever"
        if not milestones.open_once(engine, INCIDENT, now):
            return f"daemon silent {since}: the admins were told already"
        try:
            told = _tell_admins(f"{pipeline_name()}: the Dagster daemon has not run its sensors {since}: no alerts are "
                                "going out. Check the b1twilio-daemon service.")
        except Exception:
            milestones.close(engine, INCIDENT)  # the next run tries again
            raise
        return f"daemon silent {since}: {told} admin(s) told"
    if milestones.close(engine, INCIDENT):
        told = _tell_admins(f"{pipeline_name()}: the Dagster daemon runs again (last tick {beat:%H:%M} UTC): alerts "
                            "are going out.")
        return f"daemon ticking again: {told} admin(s) told"
    return f"daemon ticking (last tick {beat:%Y-%m-%d %H:%M:%S} UTC)"


def watchdog_command(args: argparse.Namespace) -> int:
    """`b1twilio watchdog [--stale-minutes N]`: 0 when all is well (or the admins were told), 1 when they
    could not be texted, 3 when it first sees Twilio refuse the pipeline's credentials."""
    if args.stale_minutes < 1:
        raise ConfigurationError(f"--stale-minutes {args.stale_minutes}: give 1 or more")
    engine = engine_for()
    try:
        print(watch(engine, datetime.now(UTC), timedelta(minutes=args.stale_minutes)))
    except TwilioSendError as error:
        print(f"error: the admins could not be texted ({error}); the next run tries again", file=sys.stderr)
        return 1
    refused = milestones.read(engine, REFUSED)
    if refused is None:
        milestones.close(engine, TWILIO_TOLD)  # the next refusal is a new incident
        return 0
    print(f"error: Twilio refuses the pipeline's credentials since {refused:%Y-%m-%d %H:%M} UTC (HTTP 401, error "
          "20003): no SMS or call goes out. Set TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) for "
          "the account and region.", file=sys.stderr)
    return TWILIO_REFUSES if milestones.open_once(engine, TWILIO_TOLD, datetime.now(UTC)) else 0
