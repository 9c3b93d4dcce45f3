"""The rule kinds, one class each: its parameters, default channel and template, the fields its template may
use, what it reads from B1 (the snapshot `$select` is built from these, so a field a kind uses is always
asked for) and which inputs it evaluates and watches. Each kind has one evaluator in `alerts.evaluators`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from b1twilio_pipeline.alerts.rules.base import DOCUMENT_FIELDS, DOCUMENT_TEMPLATE_FIELDS, Channel, Rule, amount_text
from b1twilio_pipeline.alerts.rules.fields import Amount, Days, ItemCodes, WarehouseCodes

# What the evaluators read of a document besides its template fields (state, cancellation, creation).
DOCUMENT_READS = (*DOCUMENT_FIELDS, "DocumentStatus", "Cancelled", "CancelStatus", "CreationDate", "UpdateDate",
                  "DocTotalFc", "PaidToDateFC")


class AmountRule(Rule):
    """A kind about documents with an amount: `min_amount` leaves out smaller ones, and the kind describes
    itself as "when <SUBJECT>[ of at least N] <EVENT>"."""

    SUBJECT: ClassVar[str]
    EVENT: ClassVar[str]

    min_amount: Amount | None = None

    def trigger(self) -> str:
        return f"when {self.SUBJECT}{amount_text(self.min_amount)} {self.EVENT}"

    def parameters(self) -> dict[str, object]:
        return {**super().parameters(), "min_amount": self.min_amount}


class PurchaseInvoiceReceived(AmountRule):
    """A new supplier invoice (not cancelled), once per DocNum and document date."""

    TEMPLATE_FIELDS: ClassVar = DOCUMENT_TEMPLATE_FIELDS
    READS: ClassVar = {"PurchaseInvoices": DOCUMENT_READS}
    INPUTS: ClassVar = ("purchase_invoices",)
    WATCHES: ClassVar = ("purchase_invoices",)
    SUBJECT: ClassVar = "a supplier invoice"
    EVENT: ClassVar = "arrives"
    ASSET: ClassVar = "purchase_invoice_alerts"

    kind: Literal["purchase_invoice_received"] = "purchase_invoice_received"
    template: str = "New supplier invoice {DocNum} from {CardName}: {DocTotalText}, due {DocDueDate}"


class SalesInvoiceCreated(AmountRule):
    """A new customer invoice, once per DocNum and document date."""

    TEMPLATE_FIELDS: ClassVar = DOCUMENT_TEMPLATE_FIELDS
    READS: ClassVar = {"Invoices": DOCUMENT_READS}
    INPUTS: ClassVar = ("sales_invoices",)
    WATCHES: ClassVar = ("sales_invoices",)
    SUBJECT: ClassVar = "a sales invoice"
    EVENT: ClassVar = "is created"
    ASSET: ClassVar = "sales_invoice_alerts"

    kind: Literal["sales_invoice_created"] = "sales_invoice_created"
    template: str = "Sales invoice {DocNum} created for {CardName}: {DocTotalText}"


class PaymentOverdue(Rule):
    """An open customer invoice N days past due with something left to pay; again every
    `renotify_every_days` while it stays overdue. A state: evaluated over every open invoice, and again
    after midnight (an invoice becomes overdue with no change in B1)."""

    TEMPLATE_FIELDS: ClassVar = {**DOCUMENT_TEMPLATE_FIELDS, "days_overdue": int, "open_amount": float,
                                 "open_amount_text": str}
    READS: ClassVar = {"Invoices": DOCUMENT_READS}
    INPUTS: ClassVar = ("sales_invoices", "open_invoices_state")
    WATCHES: ClassVar = ()
    CALENDAR: ClassVar = True
    ASSET: ClassVar = "payment_overdue_alerts"

    kind: Literal["payment_overdue"] = "payment_overdue"
    channel: Channel = "voice"
    template: str = ("{CardName} is {days_overdue} days overdue on invoice {DocNum}: {open_amount_text} open, due "
                     "{DocDueDate}.")
    days_overdue: Days = Field(description="alert when an invoice is this many days past its due date")
    renotify_every_days: Days | None = None
    min_amount: Amount | None = None

    def trigger(self) -> str:
        again = (f", again every {self.renotify_every_days} days while overdue" if self.renotify_every_days
                 else ", once")
        return (f"when a customer invoice{amount_text(self.min_amount)} is {self.days_overdue}+ days past due"
                f"{again}")

    def parameters(self) -> dict[str, object]:
        return {"days_overdue": self.days_overdue, "renotify_every_days": self.renotify_every_days,
                "min_amount": self.min_amount, **super().parameters()}


class PaymentReceived(AmountRule):
    """A new customer payment (cash, transfer, cheques and cards), naming the invoices it settles."""

    TEMPLATE_FIELDS: ClassVar = {"DocEntry": int, "DocNum": int, "DocDate": str, "CardCode": str, "CardName": str,
                                 "DocCurrency": str, "amount": float, "amount_text": str, "invoices": str}
    READS: ClassVar = {
        "IncomingPayments": ("DocEntry", "DocNum", "DocType", "DocDate", "CardCode", "CardName", "DocCurrency",
                             "CashSum", "TransferSum", "PaymentChecks", "PaymentCreditCards", "PaymentInvoices",
                             "Cancelled"),
        "Invoices": ("DocEntry", "DocNum"),
    }
    INPUTS: ClassVar = ("incoming_payments", "sales_invoices")
    WATCHES: ClassVar = ("incoming_payments",)
    SUBJECT: ClassVar = "a customer payment"
    EVENT: ClassVar = "arrives"
    ASSET: ClassVar = "payment_received_alerts"

    kind: Literal["payment_received"] = "payment_received"
    template: str = "Payment {DocNum} received from {CardName}: {amount_text} for {invoices}"


class PurchaseOrderChanged(AmountRule):
    """A purchase order that is new, or whose total, due date, status, supplier or lines changed."""

    TEMPLATE_FIELDS: ClassVar = {**DOCUMENT_TEMPLATE_FIELDS, "change": str}
    READS: ClassVar = {"PurchaseOrders": (*DOCUMENT_READS, "DocumentLines")}
    INPUTS: ClassVar = ("purchase_orders",)
    WATCHES: ClassVar = ("purchase_orders",)
    SUBJECT: ClassVar = "a purchase order"
    EVENT: ClassVar = "is created or changed"
    ASSET: ClassVar = "purchase_order_alerts"

    kind: Literal["purchase_order_changed"] = "purchase_order_changed"
    template: str = "Purchase order {DocNum} for {CardName} ({DocTotalText}): {change}"


class StockBelowReorder(Rule):
    """An item below its reorder point: per warehouse (`MinimalStock`) where `warehouses` are given, else
    per item (`MinInventory`); again only after it recovered and fell again."""

    TEMPLATE_FIELDS: ClassVar = {"ItemCode": str, "ItemName": str, "WarehouseCode": str, "InStock": float,
                                 "MinimalStock": float}
    READS: ClassVar = {"Items": ("ItemCode", "ItemName", "QuantityOnStock", "MinInventory", "InventoryItem",
                                 "ItemWarehouseInfoCollection")}
    INPUTS: ClassVar = ("item_stock", "stock_levels_state")
    WATCHES: ClassVar = ("item_stock",)
    ASSET: ClassVar = "stock_alerts"

    kind: Literal["stock_below_reorder"] = "stock_below_reorder"
    channel: Channel = "voice"
    template: str = ("Stock of {ItemCode} {ItemName} in {WarehouseCode} is {InStock:g}, below reorder point "
                     "{MinimalStock:g}.")
    warehouses: WarehouseCodes | None = None
    items: ItemCodes | None = None

    def trigger(self) -> str:
        what = f"the stock of {_counted('item', self.items)}" if self.items else "an item's stock"
        if self.warehouses:
            where, point = f" in {_counted('warehouse', self.warehouses)}", "MinimalStock"
        else:
            where, point = " (all warehouses together)", "MinInventory"
        return f"when {what}{where} falls below the reorder point ({point}), again only after it recovered"

    def parameters(self) -> dict[str, object]:
        return {"warehouses": ", ".join(self.warehouses) if self.warehouses else None,
                "items": ", ".join(self.items) if self.items else None, **super().parameters()}


def _counted(noun: str, codes: tuple[str, ...]) -> str:
    """"warehouse 01", "warehouses 01, 02"."""
    return f"{noun}{'s' if len(codes) > 1 else ''} {', '.join(codes)}"


RULE_KINDS: tuple[type[Rule], ...] = (PurchaseInvoiceReceived, SalesInvoiceCreated, PaymentOverdue,
                                      PaymentReceived, PurchaseOrderChanged, StockBelowReorder)
KINDS: tuple[str, ...] = tuple(kind.model_fields["kind"].default for kind in RULE_KINDS)
KIND_BY_NAME: dict[str, type[Rule]] = dict(zip(KINDS, RULE_KINDS, strict=True))


def reads_by_entity() -> dict[str, list[str]]:
    """What the kinds read of each B1 entity, every kind enabled or not (a rule enabled later finds its
    fields already stored)."""
    reads: dict[str, list[str]] = {}
    for kind in RULE_KINDS:
        for entity, fields in kind.READS.items():
            reads.setdefault(entity, []).extend(fields)
    return reads
