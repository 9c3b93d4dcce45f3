"""The B1 entity sets the pipeline reads: their key, the fields every reader needs (key, change stamps, the
state the snapshot store keeps), and how a window of changes is filtered for each. What else is asked for
(`$select`) is what the rule kinds declare they read (`EntitySpec.reading`), so a field a rule uses is
always requested."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from b1twilio_pipeline.b1 import filters as b1_filters
from b1twilio_pipeline.core.company_scope import asset_key

KEYS_PER_REQUEST = 40  # records named in one `$filter` when reading by key: the URL stays well under 2 KB
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

    def keys_filters(self, keys: Collection[str]) -> list[str]:
        """Filters reading exactly the records named by `keys` (B1's webhook events name them): one request
        for a usual batch, one per KEYS_PER_REQUEST keys beyond. DocEntry keys are integers in B1."""
        if self.key == "DocEntry":
            if not all(key.isascii() and key.isdigit() for key in keys):
                raise ValueError(f"{self.entity} keys are DocEntry numbers, got {sorted(keys)[:5]}")
            typed: list[int | str] = sorted({int(key) for key in keys})
        else:
            typed = sorted(set(keys))
        return [b1_filters.keys_filter(self.key, typed[start:start + KEYS_PER_REQUEST])
                for start in range(0, len(typed), KEYS_PER_REQUEST)]


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
    return asset_key("b1", spec.asset_name)
