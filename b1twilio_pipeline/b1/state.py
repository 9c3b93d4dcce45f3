"""State refresh: every open sales invoice and every stocked item, read whole on a cron. Overdue and stock
rules are about state, not change: they must see records last changed long before the pipeline was
deployed, an invoice becomes overdue with no change in B1, and stock moves do not always touch an item's
UpdateDate.

Each refresh reports a data version, the fingerprint of the state as it read it: the evaluations that read
the state follow a refresh only when the version changed (`core.automation.follow_condition`)."""

import hashlib
from collections.abc import Iterator
from typing import Any

import dagster as dg

from b1twilio_pipeline.b1 import records as b1_records
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.entities import EntitySpec
from b1twilio_pipeline.b1.errors import SapB1Error
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.b1.snapshots import counting, snapshot_metadata
from b1twilio_pipeline.core.automation import STATE_GROUP
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource

OPEN_INVOICES_KEY = asset_key("b1", "open_invoices_state")
STOCK_LEVELS_KEY = asset_key("b1", "stock_levels_state")


class Fingerprint:
    """One hash of every record B1 listed (ordered by key): the same state read twice gives the same data
    version. A record that left the list (an invoice paid) changes it by its absence, once. Fed by the
    snapshot upsert (`SnapshotStore.upsert(on_hashed=...)`), which hashes each record anyway."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, key: str, digest: str) -> None:
        self._hash.update(f"{key}:{digest}\n".encode())

    def version(self) -> dg.DataVersion:
        return dg.DataVersion(self._hash.hexdigest())


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


def build_state_assets(invoices: EntitySpec, items: EntitySpec) -> list[dg.AssetsDefinition]:
    """The open-invoice and stock-level state of the entities as they are read (`EntitySpec.reading`)."""

    @dg.asset(
        key=OPEN_INVOICES_KEY,
        group_name=STATE_GROUP,
        kinds={"sap", "sql"},
        description="Full refresh of every open sales invoice (`DocumentStatus eq 'bost_Open'`): overdue is "
                    "a state, and an invoice becomes overdue with no change in B1.",
        check_specs=[b1_records.check_spec(OPEN_INVOICES_KEY)],
    )
    def open_invoices_state(context: dg.AssetExecutionContext, sap: SapB1Resource,
                            database: DatabaseResource) -> dg.MaterializeResult:
        session = sap.session()
        snapshots = SnapshotStore(database.engine)
        known_open = snapshots.open_keys(invoices.entity)
        seen: set[str] = set()
        quarantine = b1_records.Quarantine(invoices.key)
        fingerprint = Fingerprint()

        def rows() -> Iterator[dict[str, Any]]:
            for row in quarantine.screen(session.get_all(
                    invoices.entity, filter="DocumentStatus eq 'bost_Open'", select=invoices.select,
                    orderby=invoices.key)):
                seen.add(str(row[invoices.key]))
                yield row

        counts, requests = counting(session, lambda: snapshots.upsert(
            invoices.entity, invoices.key, rows(), on_hashed=fingerprint.add))
        gone = sorted(known_open - seen)
        vanished: list[str] = []
        closed, closed_requests = counting(session, lambda: snapshots.upsert(
            invoices.entity, invoices.key,
            quarantine.screen(_refetch_closed(session, gone, invoices.select, vanished))))
        snapshots.close_vanished(invoices.entity, vanished)
        return dg.MaterializeResult(metadata=snapshot_metadata(
            counts, requests + closed_requests, open_invoices=len(seen),
            closed_since_last_refresh=closed.updated, vanished_from_b1=len(vanished), **quarantine.metadata()),
            check_results=[quarantine.check_result()], data_version=fingerprint.version())

    @dg.asset(
        key=STOCK_LEVELS_KEY,
        group_name=STATE_GROUP,
        kinds={"sap", "sql"},
        description="Full refresh of stock levels of every inventory item: stock moves do not always touch "
                    "the item's UpdateDate, and reorder alerts are about the current level.",
        check_specs=[b1_records.check_spec(STOCK_LEVELS_KEY)],
    )
    def stock_levels_state(context: dg.AssetExecutionContext, sap: SapB1Resource,
                           database: DatabaseResource) -> dg.MaterializeResult:
        session = sap.session()
        quarantine = b1_records.Quarantine(items.key)
        fingerprint = Fingerprint()
        counts, requests = counting(session, lambda: SnapshotStore(database.engine).upsert(
            items.entity, items.key, quarantine.screen(session.get_all(
                items.entity, filter="InventoryItem eq 'tYES'", select=items.select, orderby=items.key)),
            on_hashed=fingerprint.add))
        return dg.MaterializeResult(metadata=snapshot_metadata(counts, requests, **quarantine.metadata()),
                                    check_results=[quarantine.check_result()], data_version=fingerprint.version())

    return [open_invoices_state, stock_levels_state]
