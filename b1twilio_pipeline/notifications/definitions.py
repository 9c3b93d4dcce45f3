"""The notification stage's definitions: the plan (following the alerts), the sending job and its
sensor, delivery status and its sensor, the write-back of receipts to B1, and the dry run of a rules file."""

import dagster as dg

from b1twilio_pipeline.core.automation import follow_condition, with_condition
from b1twilio_pipeline.notifications.b1_audit import b1_audit_records
from b1twilio_pipeline.notifications.deliveries import notification_deliveries, sent_notifications
from b1twilio_pipeline.notifications.plan import notification_plan
from b1twilio_pipeline.notifications.preview_asset import rules_preview
from b1twilio_pipeline.notifications.send import notify_job
from b1twilio_pipeline.notifications.sensors import delivery_job, delivery_status_sensor, notification_sensor

planning = with_condition(notification_plan, follow_condition())

defs = dg.Definitions(
    assets=[planning, sent_notifications, notification_deliveries, b1_audit_records, rules_preview],
    jobs=[notify_job, delivery_job],
    sensors=[notification_sensor, delivery_status_sensor],
)
