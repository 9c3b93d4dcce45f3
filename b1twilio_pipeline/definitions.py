"""The code location: every asset, job, sensor and resource, merged into one `defs`.

The rules file is read here (not a secret) so the UI shows the rules, the change sensor watches only what
the enabled rules need, and a broken file is refused when the code location loads; secrets are only read
when a run starts or a sensor asks B1.
"""

from __future__ import annotations

import dagster as dg

from b1twilio_pipeline.alerts.assets import (
    ALERT_KINDS,
    CALENDAR_KINDS,
    WATCHED_BY_KIND,
    build_alert_asset,
    notification_plan,
)
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.b1.client import SapB1Resource
from b1twilio_pipeline.b1.snapshots import ENTITIES, ENTITY_BY_NAME, STATE_ASSETS, build_snapshot_asset
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core.store_resource import StoreResource
from b1twilio_pipeline.notifications.deliveries import b1_audit_records, notification_deliveries, sent_notifications
from b1twilio_pipeline.notifications.send import notify_job
from b1twilio_pipeline.notifications.sensors import (
    alerts_job,
    automation_sensor,
    build_change_sensor,
    build_snapshot_jobs,
    delivery_job,
    delivery_status_sensor,
    follow_condition,
    notification_sensor,
    refresh_condition,
    state_refresh_job,
)
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_pipeline.reporting.receivables import overdue_receivables


def _automated(asset: dg.AssetsDefinition, condition: dg.AutomationCondition) -> dg.AssetsDefinition:
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition))


def build_definitions(rules_path: str | None = None,
                      resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """`defs` for the code location; tests pass their own rules file and resources aimed at simulators."""
    rules = load_rules(rules_path)
    polling = PollingSettings.from_settings(rules.timezone)
    partitions_def = polling.partitions_def()
    rules_markdown = rules.describe()
    calendar = follow_condition(calendar_timezone=polling.timezone)
    snapshots = [build_snapshot_asset(spec, partitions_def) for spec in ENTITIES]
    evaluations = [
        *(_automated(build_alert_asset(kind, rules_markdown), calendar if kind in CALENDAR_KINDS else
                     follow_condition()) for kind in ALERT_KINDS),
        _automated(notification_plan, follow_condition()),
        _automated(overdue_receivables, calendar),
    ]
    assets = [*snapshots, *(_automated(a, refresh_condition(polling)) for a in STATE_ASSETS), *evaluations]
    watched = sorted({name for rule in rules.enabled_rules() for name in WATCHED_BY_KIND[rule.kind]})
    return dg.Definitions(
        # Steps are small and wait on HTTP: one process per run, not per step (a fresh Python per step
        # costs seconds of CPU each). Scale-out comes from the run launcher, not the executor.
        executor=dg.in_process_executor,
        assets=[*assets, sent_notifications, notification_deliveries, b1_audit_records],
        jobs=[*build_snapshot_jobs(partitions_def), state_refresh_job, alerts_job, notify_job, delivery_job],
        sensors=[build_change_sensor(polling, partitions_def, [ENTITY_BY_NAME[n] for n in watched], assets),
                 automation_sensor(polling), notification_sensor, delivery_status_sensor],
        resources={
            "sap": SapB1Resource(),
            "twilio": TwilioResource(),
            "store": StoreResource(),
            "rules": RulesResource(path=rules_path),
            **(resources or {}),
        },
    )


defs = build_definitions()
