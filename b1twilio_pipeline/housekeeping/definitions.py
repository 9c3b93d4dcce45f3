"""Housekeeping's definitions: the retention job, nightly in the company's time zone."""

import dagster as dg

from b1twilio_pipeline.housekeeping.retention import retention_job


def housekeeping_definitions(timezone: str) -> dg.Definitions:
    nightly = dg.ScheduleDefinition(
        name="retention_schedule", job=retention_job, cron_schedule="40 3 * * *", execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly: delete runs past their retention.")
    return dg.Definitions(jobs=[retention_job], schedules=[nightly])
