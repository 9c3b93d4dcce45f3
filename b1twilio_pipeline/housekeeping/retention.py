"""The retention job: Dagster's run history (and each run's event log) grows for ever unless something
deletes it, and an instance that keeps every change run's events slows down its UI and its database.

Two periods: operational runs (change windows, state refreshes, delivery reconciliation, this job) are
kept `B1TWILIO_RETENTION_DAYS`; runs that sent notifications (tagged `b1twilio/notifications`: notification
runs, and change runs that sent what they planned at once), whose `sent_notifications` events are the
notification history people search by rule, document and recipient, are kept
`B1TWILIO_NOTIFICATION_RETENTION_DAYS`.
Unfinished runs are never touched. The permanent record is elsewhere: the B1 audit table (`@B1TW_AUDIT`)
and the store's ledger, which this job does not prune.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from b1twilio_pipeline.core.automation import KIND, SENT
from b1twilio_pipeline.core.company_scope import company_tags
from b1twilio_pipeline.core.settings import current

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PAGE = 200


class RetentionConfig(dg.Config):
    """Unset fields take B1TWILIO_RETENTION_DAYS and B1TWILIO_NOTIFICATION_RETENTION_DAYS."""

    operational_days: int | None = Field(None, ge=0, description="keep other runs this many days")
    notification_days: int | None = Field(None, ge=0, description="keep notification runs this many days")
    max_deletions: int = Field(20_000, ge=1, description="per run, so one run stays short; the next goes on")


@dg.op(tags={KIND: "retention"})
def delete_old_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> dg.Output[int]:
    settings = current()
    now = datetime.now(UTC)
    operational_days = settings.b1twilio_retention_days if config.operational_days is None \
        else config.operational_days
    notification_days = settings.b1twilio_notification_retention_days if config.notification_days is None \
        else config.notification_days
    operational_cutoff = now - timedelta(days=operational_days)
    notification_cutoff = now - timedelta(days=notification_days)
    instance = context.instance
    deleted = {"operational": 0, "notification": 0}
    cursor: str | None = None
    while sum(deleted.values()) < config.max_deletions:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, created_before=max(operational_cutoff, notification_cutoff),
                          tags=company_tags()),
            limit=PAGE, order_by="create_timestamp", ascending=True, cursor=cursor)
        if not records:
            break
        cursor = records[-1].dagster_run.run_id
        for record in records:
            run = record.dagster_run
            if run.run_id == context.run_id:
                continue
            kind = "notification" if SENT in run.tags else "operational"
            cutoff = notification_cutoff if kind == "notification" else operational_cutoff
            if record.create_timestamp < cutoff:
                instance.delete_run(run.run_id)
                deleted[kind] += 1
    context.log.info(f"deleted {deleted['operational']} operational run(s) older than {operational_days} day(s) "
                     f"and {deleted['notification']} notification run(s) older than {notification_days} day(s)")
    return dg.Output(sum(deleted.values()), metadata={
        "operational_runs_deleted": deleted["operational"], "notification_runs_deleted": deleted["notification"],
        "operational_days": operational_days, "notification_days": notification_days})


@dg.job(tags={KIND: "retention", **company_tags()},
        description="Delete finished runs and their events past their retention (operational runs after "
                    "B1TWILIO_RETENTION_DAYS, notification runs after B1TWILIO_NOTIFICATION_RETENTION_DAYS).")
def retention_job() -> None:
    delete_old_runs()
