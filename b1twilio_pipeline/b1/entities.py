"""The B1 entity sets the pipeline reads: their key, the fields every reader needs (key, change stamps, the
state the snapshot store keeps), and how a window of changes is filtered for each. What else is asked for
(`$select`) is what the rule kinds declare they read (`EntitySpec.reading`), so a field a rule uses is
always requested."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from b1twilio_pipeline.b1 import filters as b1_filters

DOCUMENT_BASE = ("DocEntry", "DocNum", "DocDate", "DocumentStatus", "Cancelled", "CancelStatus", "CreationDate",
                 "UpdateDate", "UpdateTime")


@dataclass(frozen=True)
class EntitySpec:
    """How one B1 entity set is read: its key, the fields asked for and how a window is filtered."""

    asset_name: str
    entity: str
    key: str
    select: tuple[str, ...]
    by_doc_date: bool = False  # IncomingPayments carry no UpdateDate/UpdateTime in the Service Layer

    def reading(self, fields: Iterable[str]) -> EntitySpec:
        """This entity asking for `fields` too (the fields the rule kinds read), in a stable order."""
        return replace(self, select=tuple(dict.fromkeys([*self.select, *sorted(set(fields) - set(self.select))])))

    def window_filter(self, start: datetime, end: datetime, b1_timezone: str) -> str:
        if self.by_doc_date:
            # DocDate is a date: re-read the day before too, the upsert drops what is unchanged.
            tz = ZoneInfo(b1_timezone)
            first = (start.astimezone(tz) - timedelta(days=1)).date()
            return b1_filters.date_window_filter("DocDate", first, end.astimezone(tz).date())
        return b1_filters.update_window_filter(start, end, b1_timezone=b1_timezone)


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec("purchase_invoices", "PurchaseInvoices", "DocEntry", DOCUMENT_BASE),
    EntitySpec("sales_invoices", "Invoices", "DocEntry", DOCUMENT_BASE),
    EntitySpec("purchase_orders", "PurchaseOrders", "DocEntry", DOCUMENT_BASE),
    EntitySpec("incoming_payments", "IncomingPayments", "DocEntry", ("DocEntry", "DocNum", "DocDate", "Cancelled"),
               by_doc_date=True),
    EntitySpec("item_stock", "Items", "ItemCode", ("ItemCode", "InventoryItem", "UpdateDate", "UpdateTime")),
)
ENTITY_BY_NAME = {spec.asset_name: spec for spec in ENTITIES}


def snapshot_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["b1", spec.asset_name])
