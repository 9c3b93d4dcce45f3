"""The alert stage's definitions: one evaluation asset per rule kind, following its inputs (and, for kinds
the calendar alone can make true, re-evaluated after midnight), and the job that evaluates every rule."""

import dagster as dg

from b1twilio_pipeline.alerts.assets import ALERTS_GROUP, build_alert_asset
from b1twilio_pipeline.alerts.rules import RULE_KINDS, RulesConfig
from b1twilio_pipeline.core.automation import follow_condition, with_condition
from b1twilio_pipeline.core.company_scope import company_tags

alerts_job = dg.define_asset_job(
    "alerts_job", selection=dg.AssetSelection.groups(ALERTS_GROUP), tags=company_tags(),
    description="Evaluate every rule over the snapshots and plan notifications for new alerts.")


def alerts_definitions(rules: RulesConfig) -> dg.Definitions:
    rules_markdown = rules.describe()
    return dg.Definitions(
        assets=[with_condition(build_alert_asset(kind, rules_markdown),
                               follow_condition(rules.timezone if kind.CALENDAR else None))
                for kind in RULE_KINDS],
        jobs=[alerts_job],
    )
