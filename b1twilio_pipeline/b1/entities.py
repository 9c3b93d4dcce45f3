"""The B1 entity sets the pipeline reads: their key, the fields it asks for, and how a window of changes
is filtered for each."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from b1twilio_pipeline.b1 import filters as b1_filters


@dataclass(frozen=True)
class EntitySpec:
    """How one B1 entity set is polled: its key, the fields we need and how a window is filtered."""

    asset_name: str
    entity: str
    key: str
    select: tuple[str, ...]
    by_doc_date: bool = False  # IncomingPayments carry no UpdateDate/UpdateTime in the Service Layer

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
