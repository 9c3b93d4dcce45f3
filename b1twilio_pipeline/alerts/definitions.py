"""The alert stage's definitions: one evaluation asset per rule kind, following its inputs (and, for
overdue reminders, the calendar), and the job that evaluates every rule at once."""

import dagster as dg

from b1twilio_pipeline.alerts.assets import ALERT_KINDS, ALERTS_GROUP, CALENDAR_KINDS, build_alert_asset
from b1twilio_pipeline.alerts.rules import RulesConfig
from b1twilio_pipeline.core.automation import follow_condition, with_condition

alerts_job = dg.define_asset_job(
    "alerts_job", selection=dg.AssetSelection.groups(ALERTS_GROUP),
    description="Evaluate every rule over the snapshots and plan notifications for new alerts.")


def alerts_definitions(rules: RulesConfig) -> dg.Definitions:
    rules_markdown = rules.describe()
    return dg.Definitions(
        assets=[with_condition(build_alert_asset(kind, rules_markdown),
                               follow_condition(rules.timezone if kind in CALENDAR_KINDS else None))
                for kind in ALERT_KINDS],
        jobs=[alerts_job],
    )
