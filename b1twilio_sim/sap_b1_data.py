"""Entity schemas, record builders and the seeded demo data of the B1 Service Layer simulator.

Field names and value forms are those of a real Service Layer's public models, so the pipeline's `$select`
lists and filters are checked against the names it will meet in production: an unknown field is an error,
not a silent empty.
Dates are stored as `YYYY-MM-DD` and times as `HH:MM:SS` (B1 server local time); the server renders
dates per protocol version.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

# Field types: "int", "float", "str", "date", "time", "coll" (a nested collection, not filterable).
FieldTypes = dict[str, str]

DOCUMENT_LINE_FIELDS: FieldTypes = {
    "LineNum": "int", "ItemCode": "str", "ItemDescription": "str", "Quantity": "float", "Price": "float",
    "LineTotal": "float", "WarehouseCode": "str", "Currency": "str",
}

DOCUMENT_FIELDS: FieldTypes = {
    "DocEntry": "int", "DocNum": "int", "DocType": "str", "DocDate": "date", "DocDueDate": "date",
    "TaxDate": "date", "DocTime": "time", "CardCode": "str", "CardName": "str", "NumAtCard": "str",
    "DocTotal": "float", "DocTotalFc": "float", "DocTotalSys": "float", "DocCurrency": "str",
    "PaidToDate": "float", "PaidToDateFC": "float", "Series": "int", "Comments": "str",
    "DocumentStatus": "str", "Cancelled": "str", "CancelStatus": "str", "DocObjectCode": "str",
    "CreationDate": "date", "UpdateDate": "date", "UpdateTime": "time", "DocumentLines": "coll",
}

# IncomingPayments deliberately have no UpdateDate/UpdateTime: the Service Layer's public models have none
# (so a client must poll payments by DocDate or DocEntry, not by change time).
PAYMENT_FIELDS: FieldTypes = {
    "DocEntry": "int", "DocNum": "int", "DocType": "str", "DocDate": "date", "DueDate": "date",
    "CardCode": "str", "CardName": "str", "DocCurrency": "str", "CashSum": "float", "TransferSum": "float",
    "TransferDate": "date", "Cancelled": "str", "Remarks": "str", "PaymentInvoices": "coll",
    "PaymentChecks": "coll", "PaymentCreditCards": "coll",
}

ITEM_FIELDS: FieldTypes = {
    "ItemCode": "str", "ItemName": "str", "QuantityOnStock": "float", "QuantityOrderedFromVendors": "float",
    "QuantityOrderedByCustomers": "float", "MinInventory": "float", "MaxInventory": "float",
    "MinOrderQuantity": "float", "ManageStockByWarehouse": "str", "InventoryItem": "str",
    "CreateDate": "date", "CreateTime": "time", "UpdateDate": "date", "UpdateTime": "time",
    "ItemWarehouseInfoCollection": "coll",
}

WAREHOUSE_ROW_DEFAULTS: dict[str, Any] = {
    "InStock": 0.0, "Committed": 0.0, "Ordered": 0.0, "MinimalStock": 0.0, "MaximalStock": 0.0,
    "MinimalOrder": 0.0, "Locked": "tNO",
}


@dataclass(frozen=True)
class SimulatedCollection:
    """One entity set: its key field, field types and, for documents, the object code."""

    name: str
    key: str
    fields: FieldTypes
    object_code: str | None = None
    partner_kind: str = "customer"


ENTITIES: dict[str, SimulatedCollection] = {
    "PurchaseInvoices": SimulatedCollection("PurchaseInvoices", "DocEntry", DOCUMENT_FIELDS, "oPurchaseInvoices",
                                   "supplier"),
    "Invoices": SimulatedCollection("Invoices", "DocEntry", DOCUMENT_FIELDS, "oInvoices", "customer"),
    "PurchaseOrders": SimulatedCollection("PurchaseOrders", "DocEntry", DOCUMENT_FIELDS, "oPurchaseOrders",
                                 "supplier"),
    "IncomingPayments": SimulatedCollection("IncomingPayments", "DocEntry", PAYMENT_FIELDS, None, "customer"),
    "Items": SimulatedCollection("Items", "ItemCode", ITEM_FIELDS),
}

DOC_NUM_START = {"PurchaseInvoices": 7001, "Invoices": 1001, "PurchaseOrders": 4001, "IncomingPayments": 2001}

SUPPLIERS = {
    "V10000": "Acme Office Supplies",
    "V20000": "Northwind Components",
    "V30000": "Blue Ridge Logistics",
}
CUSTOMERS = {
    "C20000": "Maxi-Teq",
    "C30000": "Parameter Technology",
    "C40000": "Earthshaker Corporation",
    "C50000": "Mashina Corporation",
}
PARTNERS = {**SUPPLIERS, **CUSTOMERS}

# (code, name, price, MinInventory, {warehouse: (InStock, MinimalStock)})
ITEM_CATALOG: list[tuple[str, str, float, float, dict[str, tuple[float, float]]]] = [
    ("A00001", "J.B. Officeprint 1420", 400.0, 20, {"01": (35, 10), "02": (12, 10)}),
    ("A00002", "J.B. Officeprint 1111", 520.0, 15, {"01": (4, 8), "02": (9, 5)}),
    ("A00003", "J.B. Officeprint 1186", 660.0, 10, {"01": (10, 10), "02": (0, 4)}),
    ("A00004", "Rainbow Color Printer 5.0", 340.0, 12, {"01": (30, 6), "02": (30, 6)}),
    ("A00005", "Rainbow Color Printer 7.5", 540.0, 8, {"01": (2, 5), "02": (3, 3)}),
    ("A00006", "Rainbow Nuance Ink 5x", 25.0, 100, {"01": (45, 60), "02": (40, 40)}),
    ("C00001", "Motherboard BTX", 180.0, 30, {"01": (120, 20), "02": (80, 20)}),
    ("C00002", "Motherboard MicroATX", 150.0, 25, {"01": (11, 15), "02": (3, 10)}),
]


def iso(day: date) -> str:
    return day.isoformat()


def document_defaults(spec: SimulatedCollection, doc_entry: int, doc_num: int, today: date, now_time: str) -> dict:
    """A new marketing document with every field present, as a GET without `$select` returns it."""
    card_code = next(iter(SUPPLIERS if spec.partner_kind == "supplier" else CUSTOMERS))
    return {
        "DocEntry": doc_entry, "DocNum": doc_num, "DocType": "dDocument_Items", "DocDate": iso(today),
        "DocDueDate": iso(today + timedelta(days=30)), "TaxDate": iso(today), "DocTime": now_time,
        "CardCode": card_code, "CardName": PARTNERS[card_code], "NumAtCard": None, "DocTotal": 0.0,
        "DocTotalFc": 0.0, "DocTotalSys": 0.0, "DocCurrency": "$", "PaidToDate": 0.0, "PaidToDateFC": 0.0,
        "Series": 1, "Comments": None, "DocumentStatus": "bost_Open", "Cancelled": "tNO",
        "CancelStatus": "csNo", "DocObjectCode": spec.object_code, "CreationDate": iso(today),
        "UpdateDate": iso(today), "UpdateTime": now_time, "DocumentLines": [],
    }


def payment_defaults(doc_entry: int, doc_num: int, today: date) -> dict:
    card_code = next(iter(CUSTOMERS))
    return {
        "DocEntry": doc_entry, "DocNum": doc_num, "DocType": "rCustomer", "DocDate": iso(today),
        "DueDate": iso(today), "CardCode": card_code, "CardName": PARTNERS[card_code], "DocCurrency": "$",
        "CashSum": 0.0, "TransferSum": 0.0, "TransferDate": iso(today), "Cancelled": "tNO", "Remarks": None,
        "PaymentInvoices": [], "PaymentChecks": [], "PaymentCreditCards": [],
    }


def item_defaults(item_code: str, today: date, now_time: str) -> dict:
    return {
        "ItemCode": item_code, "ItemName": item_code, "QuantityOnStock": 0.0,
        "QuantityOrderedFromVendors": 0.0,
        "QuantityOrderedByCustomers": 0.0, "MinInventory": 0.0, "MaxInventory": 0.0, "MinOrderQuantity": 0.0,
        "ManageStockByWarehouse": "tYES", "InventoryItem": "tYES", "CreateDate": iso(today),
        "CreateTime": now_time, "UpdateDate": iso(today), "UpdateTime": now_time,
        "ItemWarehouseInfoCollection": [],
    }


def document_line(line_num: int, item_code: str, quantity: float, price: float | None = None,
                  warehouse: str = "01") -> dict:
    """A document line; the price defaults to the catalogue price."""
    names = {code: (name, p) for code, name, p, _m, _w in ITEM_CATALOG}
    name, list_price = names.get(item_code, (item_code, 10.0))
    unit = list_price if price is None else price
    return {"LineNum": line_num, "ItemCode": item_code, "ItemDescription": name,
            "Quantity": float(quantity), "Price": unit, "LineTotal": round(quantity * unit, 2),
            "WarehouseCode": warehouse, "Currency": "$"}


class SeedTarget(Protocol):
    """The part of the simulator's admin API the seed uses (so seeding follows the same rules as tests)."""

    def add_document(self, entity: str, fields: dict[str, Any], *, apply_payment: bool = True) -> dict: ...


def seed_demo_data(target: SeedTarget, today: date, now_time: str, seed: int = 1420) -> None:
    """Deterministic demo data, dated relative to `today` (the simulator clock's date).

    Holds a purchase invoice created "now" (alerted at the first poll), overdue sales invoices (one partly
    paid), paid invoices with their incoming payments, purchase orders, and items whose stock sits above,
    on and below their reorder points.
    """
    rng = random.Random(seed)

    def ago(days: int) -> str:
        return iso(today - timedelta(days=days))

    def stamp(days: int) -> dict[str, str]:
        return {"UpdateDate": ago(days), "CreationDate": ago(days),
                "UpdateTime": f"{rng.randint(8, 17):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"}

    for code, name, _price, min_inv, warehouses in ITEM_CATALOG:
        rows = [{"WarehouseCode": wh, "InStock": float(on_hand), "MinimalStock": float(minimal),
                 "MaximalStock": float(minimal * 5), "MinimalOrder": float(max(1, minimal // 2))}
                for wh, (on_hand, minimal) in warehouses.items()]
        days = rng.randint(3, 60)
        target.add_document("Items", {
            "ItemCode": code, "ItemName": name, "MinInventory": float(min_inv),
            "MaxInventory": float(min_inv * 6),
            "MinOrderQuantity": float(max(1, min_inv // 2)), "ItemWarehouseInfoCollection": rows,
            "CreateDate": ago(days + 200), "UpdateDate": ago(days),
            "UpdateTime": f"{rng.randint(8, 17):02d}:{rng.randint(0, 59):02d}:00",
        })

    suppliers = list(SUPPLIERS)
    for index, days in enumerate([40, 25, 12, 6, 2]):
        lines = [document_line(0, rng.choice(ITEM_CATALOG)[0], rng.randint(2, 20))]
        doc_date = today - timedelta(days=days)
        target.add_document("PurchaseInvoices", {
            "CardCode": suppliers[index % len(suppliers)], "NumAtCard": f"SUP-{7000 + index}",
            "DocDate": iso(doc_date), "TaxDate": iso(doc_date),
            "DocDueDate": iso(doc_date + timedelta(days=30)), "DocumentLines": lines,
            "DocumentStatus": "bost_Close" if days > 20 else "bost_Open",
            "PaidToDate": sum(line["LineTotal"] for line in lines) if days > 20 else 0.0, **stamp(days),
        })
    # The new one: created "now" by the simulator clock, so the pipeline alerts it at its first poll.
    target.add_document("PurchaseInvoices", {
        "CardCode": "V20000", "NumAtCard": "NW-88121", "DocumentLines": [document_line(0, "C00002", 40)],
    })

    customers = list(CUSTOMERS)
    # (days since DocDate, payment terms in days, fraction paid)
    sales = [(95, 30, 0.0), (70, 30, 0.4), (65, 30, 1.0), (50, 14, 0.0), (40, 30, 0.0),
             (33, 30, 1.0), (20, 30, 0.0), (10, 30, 0.5), (3, 30, 0.0), (1, 30, 0.0)]
    for index, (days, terms, paid) in enumerate(sales):
        doc_date = today - timedelta(days=days)
        lines = [document_line(0, rng.choice(ITEM_CATALOG)[0], rng.randint(1, 8),
                               warehouse=rng.choice(["01", "02"]))]
        total = lines[0]["LineTotal"]
        amount = round(total * paid, 2)
        pay_days = max(0, days - terms // 2)
        invoice = target.add_document("Invoices", {
            "CardCode": customers[index % len(customers)], "DocDate": iso(doc_date), "TaxDate": iso(doc_date),
            "DocDueDate": iso(doc_date + timedelta(days=terms)), "DocumentLines": lines, **stamp(days),
            "PaidToDate": amount, "DocumentStatus": "bost_Close" if paid >= 1 else "bost_Open",
        })
        if paid:
            # The invoice above already carries the payment (stamped on its own date), so do not re-apply it.
            target.add_document("IncomingPayments", {
                "CardCode": invoice["CardCode"], "DocDate": ago(pay_days), "DueDate": ago(pay_days),
                "TransferDate": ago(pay_days), "TransferSum": amount,
                "PaymentInvoices": [{"DocEntry": invoice["DocEntry"], "SumApplied": amount}],
            }, apply_payment=False)

    for index, days in enumerate([15, 8, 1]):
        doc_date = today - timedelta(days=days)
        target.add_document("PurchaseOrders", {
            "CardCode": suppliers[index % len(suppliers)], "DocDate": iso(doc_date), "TaxDate": iso(doc_date),
            "DocDueDate": iso(doc_date + timedelta(days=14)),
            "DocumentLines": [document_line(0, code, qty) for code, qty in (("A00002", 20), ("A00005", 10))],
            **stamp(days),
        })


InvoiceFactory = Callable[[int, int], dict]


def bulk_invoice_factory(spec: SimulatedCollection, today: date, seed: int = 7) -> InvoiceFactory:
    """A fast maker of plausible invoices for benchmarks (100,000 in a few seconds).

    Line lists are shared between generated documents to keep memory low: the simulator never mutates
    a line in place (updates replace whole field values).
    """
    rng = random.Random(seed)
    shared_lines = [[document_line(0, code, qty)]
                    for code, _n, _p, _m, _w in ITEM_CATALOG for qty in (1, 3, 7)]
    partners = list(SUPPLIERS if spec.partner_kind == "supplier" else CUSTOMERS)
    days_cache = [iso(today - timedelta(days=d)) for d in range(0, 400)]

    def make(doc_entry: int, doc_num: int) -> dict:
        lines = shared_lines[rng.randrange(len(shared_lines))]
        age = rng.randrange(365)
        total = lines[0]["LineTotal"]
        overdue_open = age > 60 and rng.random() < 0.1
        card = partners[rng.randrange(len(partners))]
        time = f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
        return {
            "DocEntry": doc_entry, "DocNum": doc_num, "DocType": "dDocument_Items",
            "DocDate": days_cache[age], "DocDueDate": days_cache[max(0, age - 30)],
            "TaxDate": days_cache[age], "DocTime": time,
            "CardCode": card, "CardName": PARTNERS[card], "NumAtCard": None, "DocTotal": total,
            "DocTotalFc": 0.0, "DocTotalSys": total, "DocCurrency": "$",
            "PaidToDate": 0.0 if overdue_open else total, "PaidToDateFC": 0.0, "Series": 1, "Comments": None,
            "DocumentStatus": "bost_Open" if overdue_open else "bost_Close", "Cancelled": "tNO",
            "CancelStatus": "csNo", "DocObjectCode": spec.object_code, "CreationDate": days_cache[age],
            "UpdateDate": days_cache[age], "UpdateTime": time, "DocumentLines": lines,
        }

    return make
