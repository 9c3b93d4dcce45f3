"""Incremental B1 snapshots: one time-window partitioned asset per entity.

Each partition asks B1 for what changed in its window (plus an overlap, deduplicated by key) and upserts
it into the snapshot store, so reading a window again (the read after a change, its closing read, a
backfill) is idempotent. Malformed records are quarantined, never fatal (see `records`).
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from b1twilio_pipeline.b1 import records as b1_records
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.entities import EntitySpec, snapshot_key
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore, UpsertCounts
from b1twilio_pipeline.core.database_resource import DatabaseResource

SNAPSHOT_GROUP = "b1_snapshots"


def snapshot_metadata(counts: UpsertCounts, requests: int, **extra: Any) -> dict[str, Any]:
    return {
        "dagster/row_count": counts.fetched,
        "rows_fetched": counts.fetched,
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "b1_requests": requests,
        **extra,
    }


def counting(session: SapB1Session, work: Callable[[], UpsertCounts]) -> tuple[UpsertCounts, int]:
    before = session.requests_made
    counts = work()
    return counts, session.requests_made - before


def build_snapshot_asset(spec: EntitySpec, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    key = snapshot_key(spec)

    @dg.asset(
        key=key,
        group_name=SNAPSHOT_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=96),
        kinds={"sap", "sql"},
        description=f"Incremental snapshot of B1 `{spec.entity}` keyed by `{spec.key}`: each window "
                    "re-reads what changed in it, with a one-minute overlap, and upserts.",
        check_specs=[b1_records.check_spec(key)],
    )
    def _snapshot(context: dg.AssetExecutionContext, sap: SapB1Resource,
                  database: DatabaseResource) -> dg.MaterializeResult:
        window = context.partition_time_window  # also right for multi-partition backfill runs
        session = sap.session()
        query = spec.window_filter(window.start, window.end, sap.resolved_timezone())
        quarantine = b1_records.Quarantine(spec.key)
        counts, requests = counting(session, lambda: SnapshotStore(database.engine).upsert(
            spec.entity, spec.key, quarantine.screen(
                session.get_all(spec.entity, filter=query, select=spec.select, orderby=spec.key))))
        context.log.info(f"{spec.entity} {window.start:%Y-%m-%d %H:%M}..{window.end:%H:%M}: "
                         f"{counts.new} new, {counts.updated} updated, {counts.unchanged} unchanged, "
                         f"{len(quarantine.rejected)} quarantined")
        return dg.MaterializeResult(metadata=snapshot_metadata(
            counts, requests, window_start=window.start.isoformat(), window_end=window.end.isoformat(),
            b1_filter=query, **quarantine.metadata()), check_results=[quarantine.check_result()])

    return _snapshot
