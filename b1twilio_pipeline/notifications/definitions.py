"""The notification stage's definitions: the plan (following the alerts), the sending job, delivery
status, the sensor that watches the ledger for both, the write-back of receipts to B1, and the dry run of
a rules file."""

import dagster as dg

from b1twilio_pipeline.core.automation import follow_condition, with_condition
from b1twilio_pipeline.notifications.b1_audit import b1_audit_records
from b1twilio_pipeline.notifications.deliveries import notification_deliveries, sent_notifications
from b1twilio_pipeline.notifications.plan import notification_plan
from b1twilio_pipeline.notifications.preview_asset import rules_preview
from b1twilio_pipeline.notifications.send import notify_job
from b1twilio_pipeline.notifications.sensors import build_notification_sensor, delivery_job


def notifications_definitions(check_seconds: int) -> dg.Definitions:
    """The stage, its sensor ticking every `check_seconds` (B1TWILIO_NOTIFICATION_CHECK_SECONDS)."""
    return dg.Definitions(
        assets=[with_condition(notification_plan, follow_condition()), sent_notifications, notification_deliveries,
                b1_audit_records, rules_preview],
        jobs=[notify_job, delivery_job],
        sensors=[build_notification_sensor(check_seconds)],
    )
