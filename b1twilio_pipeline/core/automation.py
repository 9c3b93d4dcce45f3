"""Shared pieces of what starts work: run tags, "is a run of this job in flight", and the declarative
automation conditions the stages use.

Work is launched for change, never for time alone: a sensor asks B1 what changed and requests runs only for
that; declarative automation moves work from asset to asset (a state refresh on its cron, the evaluations
that follow an input updated outside a run that already evaluated them or a refresh that found the state
changed, overdue reminders after midnight).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from b1twilio_pipeline.core.company_scope import company_tags

AC = dg.AutomationCondition
RUNNING = dg.DefaultSensorStatus.RUNNING
TAG_PREFIX = "b1twilio"
KIND = f"{TAG_PREFIX}/kind"  # change | refresh | notification | delivery: the one tag to filter runs by
# On every run that sent notifications (a notification run, or a change run that sent what it planned at
# once): how many. Such runs' events are the notification history, kept for its own retention period.
SENT = f"{TAG_PREFIX}/notifications"
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
# A run that has not moved for this long is a dead worker's (the default launcher cannot tell): ignore it.
STALE_RUN = timedelta(minutes=10)
# When an overdue invoice becomes one more day overdue: reminders are evaluated once after midnight.
CALENDAR_CRON = "5 0 * * *"
# The assets read whole on a cron (`b1.state`). Each reports a data version, the fingerprint of what it read,
# so what reads them is evaluated again only when the state changed: most refreshes find it as it was.
STATE_GROUP = "b1_state"


def runs_in_flight(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str] | None = None,
                   stale: timedelta = STALE_RUN) -> int:
    """Unfinished runs of a job updated within `stale`: launching another would only pile up."""
    return instance.get_runs_count(dg.RunsFilter(
        job_name=job_name, statuses=UNFINISHED, tags={**company_tags(), **(tags or {})},
        updated_after=datetime.now(UTC) - stale))


def refresh_condition(cron: str, timezone: str) -> dg.AutomationCondition:
    """A full refresh: on its cron, and once at first start."""
    first_start = AC.missing() & AC.initial_evaluation()
    return (AC.cron_tick_passed(cron, timezone).since_last_handled() | first_start) & ~AC.in_progress()


def follow_condition(calendar_timezone: str | None = None) -> dg.AutomationCondition:
    """An evaluation: when an input was updated by a run that did not evaluate it already, or a refresh
    found the state it reads changed (with a calendar time zone: also after midnight there); and in the same
    run as an input about to be updated, or about to be read for the first time. Updates without a run (the
    change sensor's record of a window with no change) and refreshes that found nothing new trigger nothing.

    A refresh leaves this condition's evaluation as it was (Dagster stores an evaluation only when it
    changed): `missing()` comes first, so `will_be_requested()` of a state input is asked only at first start.
    """
    state = dg.AssetSelection.groups(STATE_GROUP)
    trigger = (AC.any_deps_match(AC.any_new_update_has_run_tags()).ignore(state)
               | AC.any_deps_match(AC.data_version_changed()).allow(state))
    if calendar_timezone is not None:
        trigger = trigger | AC.cron_tick_passed(CALENDAR_CRON, calendar_timezone)
    with_inputs = (AC.any_deps_match(AC.will_be_requested()).ignore(state)
                   | AC.any_deps_match(AC.missing() & AC.will_be_requested()).allow(state))
    return (trigger.since_last_handled() | with_inputs) & ~AC.any_deps_in_progress() & ~AC.in_progress()


def with_condition(asset: dg.AssetsDefinition, condition: dg.AutomationCondition) -> dg.AssetsDefinition:
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition))
