"""Incremental B1 snapshots: one time-window partitioned asset per entity.

Each partition asks B1 for what changed in its window (plus an overlap, deduplicated by key) and upserts
it into the snapshot store, so re-running a window (the per-minute poll of the open window, its closing
re-read, a backfill) is idempotent. Two unpartitioned assets refresh *state* (every open invoice, every
stocked item) because overdue and stock rules must see records that have not changed for years.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from b1twilio_pipeline.b1 import filters as b1_filters
from b1twilio_pipeline.b1 import records as b1_records
from b1twilio_pipeline.b1.client import SapB1Error, SapB1Resource, SapB1Session
from b1twilio_pipeline.b1.snapshot_store import UpsertCounts
from b1twilio_pipeline.core.store_resource import StoreResource

SNAPSHOT_GROUP = "b1_snapshots"
# On top of the client's own backoff: a B1 outage longer than its retry budget gets two more tries.
B1_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@dataclass(frozen=True)
class EntitySpec:
    """How one B1 entity set is polled: its key, the fields we need and how a window is filtered."""

    asset_name: str
    entity: str
    key: str
    select: tuple[str, ...]
    by_doc_date: bool = False  # IncomingPayments carry no UpdateDate/UpdateTime (API_FACTS)

    def window_filter(self, start: datetime, end: datetime, b1_timezone: str) -> str:
        if self.by_doc_date:
            # DocDate is a date: re-read the day before too, the upsert drops what is unchanged.
            tz = ZoneInfo(b1_timezone)
            first = (start.astimezone(tz) - timedelta(days=1)).date()
            return b1_filters.date_window_filter("DocDate", first, end.astimezone(tz).date())
        return b1_filters.update_window_filter(start, end, b1_timezone=b1_timezone)


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec("purchase_invoices", "PurchaseInvoices", "DocEntry", tuple(b1_filters.DOCUMENT_FIELDS)),
    EntitySpec("sales_invoices", "Invoices", "DocEntry", tuple(b1_filters.DOCUMENT_FIELDS)),
    EntitySpec("purchase_orders", "PurchaseOrders", "DocEntry", tuple(b1_filters.PURCHASE_ORDER_FIELDS)),
    EntitySpec("incoming_payments", "IncomingPayments", "DocEntry", tuple(b1_filters.PAYMENT_FIELDS),
               by_doc_date=True),
    EntitySpec("item_stock", "Items", "ItemCode", tuple(b1_filters.ITEM_FIELDS)),
)
ENTITY_BY_NAME = {spec.asset_name: spec for spec in ENTITIES}


def snapshot_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["b1", spec.asset_name])


def _metadata(counts: UpsertCounts, requests: int, **extra: Any) -> dict[str, Any]:
    return {
        "dagster/row_count": counts.fetched,
        "rows_fetched": counts.fetched,
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "b1_requests": requests,
        **extra,
    }


def _counting(session: SapB1Session, work: Callable[[], UpsertCounts]) -> tuple[UpsertCounts, int]:
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
        retry_policy=B1_RETRY,
        check_specs=[b1_records.check_spec(key)],
    )
    def _snapshot(context: dg.AssetExecutionContext, sap: SapB1Resource,
                  store: StoreResource) -> dg.MaterializeResult:
        window = context.partition_time_window  # also right for multi-partition backfill runs
        session = sap.session()
        query = spec.window_filter(window.start, window.end, sap.resolved_timezone())
        quarantine = b1_records.Quarantine(spec.key)
        counts, requests = _counting(session, lambda: store.snapshots().upsert(
            spec.entity, spec.key, quarantine.screen(
                session.get_all(spec.entity, filter=query, select=spec.select, orderby=spec.key))))
        context.log.info(f"{spec.entity} {window.start:%Y-%m-%d %H:%M}..{window.end:%H:%M}: "
                         f"{counts.new} new, {counts.updated} updated, {counts.unchanged} unchanged, "
                         f"{len(quarantine.rejected)} quarantined")
        return dg.MaterializeResult(metadata=_metadata(
            counts, requests, window_start=window.start.isoformat(), window_end=window.end.isoformat(),
            b1_filter=query, **quarantine.metadata()), check_results=[quarantine.check_result()])

    return _snapshot


# --- state refresh --------------------------------------------------------------------------------

OPEN_INVOICES_KEY = dg.AssetKey(["b1", "open_invoices_state"])
STOCK_LEVELS_KEY = dg.AssetKey(["b1", "stock_levels_state"])
STATE_GROUP = "b1_state"


def _refetch_closed(session: SapB1Session, keys: list[str], select: tuple[str, ...],
                    vanished: list[str]) -> Iterator[dict[str, Any]]:
    """Invoices we hold as open that B1 no longer lists as open: read each once to learn its state. One
    that B1 answers 404 for (deleted, or a company database restored from a backup) goes to `vanished`."""
    for key in keys:
        try:
            row = session.get(f"Invoices({key})", params={"$select": ",".join(select)})
        except SapB1Error as error:
            if error.status != 404:
                raise
            vanished.append(key)
            continue
        if isinstance(row, dict):
            yield {k: v for k, v in row.items() if not k.startswith(("odata.", "@odata."))}


@dg.asset(
    key=OPEN_INVOICES_KEY,
    group_name=STATE_GROUP,
    kinds={"sap", "sql"},
    description="Full refresh of every open sales invoice (`DocumentStatus eq 'bost_Open'`): overdue is "
                "a state, and an invoice becomes overdue with no change in B1.",
    retry_policy=B1_RETRY,
    check_specs=[b1_records.check_spec(OPEN_INVOICES_KEY)],
)
def open_invoices_state(context: dg.AssetExecutionContext, sap: SapB1Resource,
                        store: StoreResource) -> dg.MaterializeResult:
    session = sap.session()
    spec = ENTITY_BY_NAME["sales_invoices"]
    snapshots = store.snapshots()
    known_open = snapshots.open_keys(spec.entity)
    seen: set[str] = set()
    quarantine = b1_records.Quarantine(spec.key)

    def rows() -> Iterator[dict[str, Any]]:
        for row in quarantine.screen(session.get_all(spec.entity, filter="DocumentStatus eq 'bost_Open'",
                                                     select=spec.select, orderby=spec.key)):
            seen.add(str(row[spec.key]))
            yield row

    counts, requests = _counting(session, lambda: snapshots.upsert(spec.entity, spec.key, rows()))
    gone = sorted(known_open - seen)
    vanished: list[str] = []
    closed, closed_requests = _counting(session, lambda: snapshots.upsert(
        spec.entity, spec.key, quarantine.screen(_refetch_closed(session, gone, spec.select, vanished))))
    snapshots.close_vanished(spec.entity, vanished)
    return dg.MaterializeResult(metadata=_metadata(
        counts, requests + closed_requests, open_invoices=len(seen), closed_since_last_refresh=closed.updated,
        vanished_from_b1=len(vanished), **quarantine.metadata()), check_results=[quarantine.check_result()])


@dg.asset(
    key=STOCK_LEVELS_KEY,
    group_name=STATE_GROUP,
    kinds={"sap", "sql"},
    description="Full refresh of stock levels of every inventory item: stock moves do not always touch "
                "the item's UpdateDate, and reorder alerts are about the current level.",
    retry_policy=B1_RETRY,
    check_specs=[b1_records.check_spec(STOCK_LEVELS_KEY)],
)
def stock_levels_state(context: dg.AssetExecutionContext, sap: SapB1Resource,
                       store: StoreResource) -> dg.MaterializeResult:
    session = sap.session()
    spec = ENTITY_BY_NAME["item_stock"]
    quarantine = b1_records.Quarantine(spec.key)
    counts, requests = _counting(session, lambda: store.snapshots().upsert(
        spec.entity, spec.key, quarantine.screen(session.get_all(
            spec.entity, filter="InventoryItem eq 'tYES'", select=spec.select, orderby=spec.key))))
    return dg.MaterializeResult(metadata=_metadata(counts, requests, **quarantine.metadata()),
                                check_results=[quarantine.check_result()])


STATE_ASSETS = (open_invoices_state, stock_levels_state)
