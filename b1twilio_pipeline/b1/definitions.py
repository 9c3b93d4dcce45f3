"""The B1 stage's definitions: snapshot assets (partitioned by window), the state refresh on its cron, the
jobs to read windows (backfills) and refresh state, the change sensor, and the webhook sensor (on when B1
sends webhooks: B1_WEBHOOK_USERNAME is set)."""

from collections.abc import Mapping, Sequence

import dagster as dg

from b1twilio_pipeline.b1.entities import ENTITIES, EntitySpec
from b1twilio_pipeline.b1.sensors import build_change_sensor
from b1twilio_pipeline.b1.snapshots import SNAPSHOT_GROUP, build_snapshot_asset
from b1twilio_pipeline.b1.state import build_state_assets
from b1twilio_pipeline.b1.webhook_sensor import build_webhook_sensor
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core.automation import KIND, STATE_GROUP, refresh_condition, with_condition
from b1twilio_pipeline.core.company_scope import company_tags
from b1twilio_pipeline.core.settings import current

state_refresh_job = dg.define_asset_job(
    "state_refresh_job", selection=dg.AssetSelection.groups(STATE_GROUP),
    tags={KIND: "refresh", **company_tags()},
    description="Full refresh of open invoices and stock levels (state that changes without UpdateDate).")


def read_specs(reads: Mapping[str, Sequence[str]]) -> dict[str, EntitySpec]:
    """Each entity, asking B1 for what every reader needs plus `reads[entity]` (what the rule kinds read)."""
    return {spec.asset_name: spec.reading(reads.get(spec.entity, ())) for spec in ENTITIES}


def snapshot_assets(specs: Mapping[str, EntitySpec],
                    partitions_def: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [build_snapshot_asset(spec, partitions_def) for spec in specs.values()]


def b1_definitions(polling: PollingSettings, partitions_def: dg.TimeWindowPartitionsDefinition,
                   specs: Mapping[str, EntitySpec], watched: Sequence[str],
                   follow: Mapping[str, Sequence[dg.AssetKey]]) -> dg.Definitions:
    """`watched` are the snapshot assets the enabled rules alert on; `follow[entity]` what a change run of it
    materializes (see `sensors`)."""
    refresh = refresh_condition(polling.refresh_cron, polling.timezone)
    state = build_state_assets(specs["sales_invoices"], specs["item_stock"])
    return dg.Definitions(
        assets=[*snapshot_assets(specs, partitions_def), *(with_condition(asset, refresh) for asset in state)],
        jobs=[
            dg.define_asset_job(
                "snapshot_job", selection=dg.AssetSelection.groups(SNAPSHOT_GROUP), tags=company_tags(),
                description="Read what changed in B1 in a window; backfill missed windows from the UI or CLI."),
            state_refresh_job,
        ],
        sensors=[build_change_sensor(polling, partitions_def, [specs[name] for name in watched], follow),
                 build_webhook_sensor(current().b1_webhook_username is not None, partitions_def, follow)],
    )
