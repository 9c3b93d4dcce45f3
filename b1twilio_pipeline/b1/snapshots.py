"""Incremental B1 snapshots: one time-window partitioned asset per entity.

Each partition asks B1 for what changed in its window (plus an overlap, deduplicated by key) and upserts
it into the snapshot store, so reading a window again (the read after a change, its closing read, a
backfill) is idempotent. Malformed records are quarantined, never fatal (see `records`).

A run launched for B1's webhook events (`webhook_sensor`) names the records instead (`SnapshotConfig.keys`):
the partition is then the window of now, and only those records are read, by key.
"""

from collections.abc import Callable
from itertools import chain
from typing import Any

import dagster as dg

from b1twilio_pipeline.b1 import records as b1_records
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.entities import EntitySpec, snapshot_key
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore, UpsertCounts
from b1twilio_pipeline.core.database_resource import DatabaseResource

SNAPSHOT_GROUP = "b1_snapshots"


class SnapshotConfig(dg.Config):
    """Empty: read what changed in the window. Set (by `b1_webhook_sensor`, or by hand from the launchpad):
    read exactly these records, by their DocEntry or ItemCode, whatever window they changed in."""

    keys: list[str] = []


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
                    "re-reads what changed in it, with a one-minute overlap, and upserts (a run for B1's "
                    "webhooks reads the records they name, by key).",
        check_specs=[b1_records.check_spec(key)],
    )
    def _snapshot(context: dg.AssetExecutionContext, config: SnapshotConfig, sap: SapB1Resource,
                  database: DatabaseResource) -> dg.MaterializeResult:
        window = context.partition_time_window  # also right for multi-partition backfill runs
        session = sap.session()
        queries = spec.keys_filters(config.keys) if config.keys else \
            [spec.window_filter(window.start, window.end, sap.resolved_timezone())]
        quarantine = b1_records.Quarantine(spec.key)
        counts, requests = counting(session, lambda: SnapshotStore(database.engine).upsert(
            spec.entity, spec.key, quarantine.screen(chain.from_iterable(
                session.get_all(spec.entity, filter=query, select=spec.select, orderby=spec.key)
                for query in queries))))
        context.log.info(f"{spec.entity} {window.start:%Y-%m-%d %H:%M}..{window.end:%H:%M}: "
                         f"{counts.new} new, {counts.updated} updated, {counts.unchanged} unchanged, "
                         f"{len(quarantine.rejected)} quarantined")
        return dg.MaterializeResult(metadata=snapshot_metadata(
            counts, requests, window_start=window.start.isoformat(), window_end=window.end.isoformat(),
            b1_filter=" | ".join(queries), read_by="keys" if config.keys else "window", **quarantine.metadata()),
            check_results=[quarantine.check_result()])

    return _snapshot
