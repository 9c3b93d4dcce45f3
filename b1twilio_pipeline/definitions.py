"""The code location: every asset, job, sensor, schedule and resource, merged into one `defs`.

The rules file is read here (not a secret) so the UI shows the rules and a broken file is refused when
the code location loads; secrets are only read when a run starts.
"""

from __future__ import annotations

import dagster as dg

from b1twilio_pipeline.assets.alerts import ALERT_KINDS, build_alert_asset, notification_plan
from b1twilio_pipeline.assets.deliveries import b1_audit_records, notification_deliveries, sent_notifications
from b1twilio_pipeline.assets.receivables import overdue_receivables
from b1twilio_pipeline.assets.snapshots import ENTITIES, STATE_ASSETS, build_snapshot_asset
from b1twilio_pipeline.automation import (
    alert_evaluation_sensor,
    alerts_job,
    build_poll_schedule,
    build_snapshot_job,
    build_state_refresh_sensor,
    delivery_job,
    delivery_status_sensor,
    notification_sensor,
    state_refresh_job,
)
from b1twilio_pipeline.notify import notify_job
from b1twilio_pipeline.polling import PollingSettings
from b1twilio_pipeline.resources.rules import RulesResource
from b1twilio_pipeline.resources.sap_b1 import SapB1Resource
from b1twilio_pipeline.resources.store import StoreResource
from b1twilio_pipeline.resources.twilio import TwilioResource
from b1twilio_pipeline.rules import load_rules


def build_definitions(rules_path: str | None = None,
                      resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """`defs` for the code location; tests pass their own rules file and resources aimed at simulators."""
    rules = load_rules(rules_path)
    polling = PollingSettings.from_settings(rules.timezone)
    partitions_def = polling.partitions_def()
    snapshot_job = build_snapshot_job(partitions_def)
    rules_markdown = rules.describe()
    return dg.Definitions(
        # Steps are small and wait on HTTP: one process per run, not per step (a fresh Python per step
        # costs seconds of CPU each). Scale-out comes from the run launcher, not the executor.
        executor=dg.in_process_executor,
        assets=[
            *(build_snapshot_asset(spec, partitions_def) for spec in ENTITIES),
            *STATE_ASSETS,
            *(build_alert_asset(kind, rules_markdown) for kind in ALERT_KINDS),
            notification_plan,
            overdue_receivables,
            sent_notifications,
            notification_deliveries,
            b1_audit_records,
        ],
        jobs=[snapshot_job, state_refresh_job, alerts_job, notify_job, delivery_job],
        schedules=[build_poll_schedule(polling, partitions_def, snapshot_job)],
        sensors=[build_state_refresh_sensor(polling), alert_evaluation_sensor, notification_sensor,
                 delivery_status_sensor],
        resources={
            "sap": SapB1Resource(),
            "twilio": TwilioResource(),
            "store": StoreResource(),
            "rules": RulesResource(path=rules_path),
            **(resources or {}),
        },
    )


defs = build_definitions()
