"""Rule evaluation: snapshots in, alert candidates out. Pure functions, so every rule kind is testable
without B1 or Dagster.

Each candidate carries a deterministic alert id, the dedup key of "the same event":
- new documents: rule + DocNum + document date (the seed's rule: B1 may hand a document over twice);
- overdue invoices: rule + DocEntry + reminder number, derived from the calendar, so a reminder every
  `renotify_every_days` needs no state and a pipeline that was down does not flood missed reminders;
- purchase orders: rule + DocEntry + digest of the fields people care about (a new change, a new alert);
- stock: rule + item + warehouse + episode (episodes are counted in the store: fall, recover, fall).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from b1twilio_pipeline.alerts.rules import Rule
from b1twilio_pipeline.alerts.rules.base import DOCUMENT_FIELDS
from b1twilio_pipeline.b1.snapshot_store import Snapshot

PO_TRACKED_FIELDS = ("DocTotal", "DocDueDate", "DocumentStatus", "Cancelled", "CardCode")


@dataclass(frozen=True)
class Candidate:
    alert_id: str
    document: str  # human reference shown in run tags and the audit table, e.g. "PurchaseInvoices 4711"
    fields: dict[str, Any]


def parse_day(value: Any) -> date | None:
    """B1 dates come as '2026-11-24' (v1) or '2026-11-24T00:00:00Z' (v2); anything else is no date (the
    record is skipped by the rule rather than stopping the evaluation of every other one)."""
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _cancelled(doc: Mapping[str, Any]) -> bool:
    return doc.get("Cancelled") == "tYES" or doc.get("CancelStatus") in ("csYes", "csCancellation")


def document_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: doc.get(name) for name in DOCUMENT_FIELDS}
    for name in ("DocDate", "DocDueDate"):
        day = parse_day(doc.get(name))
        fields[name] = day.isoformat() if day else ""
    for name in ("DocTotal", "PaidToDate"):
        fields[name] = _num(doc.get(name))
    fields["DocCurrency"] = doc.get("DocCurrency") or ""
    fields["NumAtCard"] = doc.get("NumAtCard") or ""
    fields["Comments"] = doc.get("Comments") or ""
    return fields


def _is_recent(doc: Mapping[str, Any], since: date) -> bool:
    """Only documents created lately are 'new': the first sync must not announce years of history."""
    created = parse_day(doc.get("CreationDate")) or parse_day(doc.get("DocDate"))
    return created is not None and created >= since


def new_document_candidates(rule: Rule, docs: Iterable[Snapshot], *, label: str,
                            since: date) -> list[Candidate]:
    """purchase_invoice_received / sales_invoice_created: each document once, by DocNum + DocDate."""
    out = []
    for snap in docs:
        doc = snap.payload
        if _cancelled(doc) or not _is_recent(doc, since):
            continue
        fields = document_fields(doc)
        if fields["DocTotal"] < (rule.min_amount or 0):
            continue
        out.append(Candidate(f"{rule.id}:{doc.get('DocNum')}:{fields['DocDate']}",
                             f"{label} {doc.get('DocNum')}", fields))
    return out


def open_amount(doc: Mapping[str, Any]) -> float:
    """Open amount in the document's currency: foreign-currency totals when the invoice has them."""
    if _num(doc.get("DocTotalFc")) > 0:
        return round(_num(doc.get("DocTotalFc")) - _num(doc.get("PaidToDateFC")), 2)
    return round(_num(doc.get("DocTotal")) - _num(doc.get("PaidToDate")), 2)


def overdue_candidates(rule: Rule, invoices: Iterable[Snapshot], *, today: date) -> list[Candidate]:
    """payment_overdue: open, not cancelled, due more than N days ago, something left to pay."""
    threshold = rule.days_overdue or 0
    out = []
    for snap in invoices:
        doc = snap.payload
        due = parse_day(doc.get("DocDueDate"))
        if doc.get("DocumentStatus") != "bost_Open" or _cancelled(doc) or due is None:
            continue
        days = (today - due).days
        amount = open_amount(doc)
        if days < threshold or amount <= 0.005 or amount < (rule.min_amount or 0):
            continue
        reminder = (days - threshold) // rule.renotify_every_days if rule.renotify_every_days else 0
        fields = {**document_fields(doc), "days_overdue": days, "open_amount": amount}
        out.append(Candidate(f"{rule.id}:{doc.get('DocEntry')}:r{reminder}",
                             f"Invoices {doc.get('DocNum')}", fields))
    return out


def payment_candidates(rule: Rule, payments: Iterable[Snapshot], *, since: date,
                       invoice_numbers: Mapping[str, Any]) -> list[Candidate]:
    """payment_received: customer payments, once each, with the invoices they settle (by DocNum)."""
    out = []
    for snap in payments:
        doc = snap.payload
        if _cancelled(doc) or doc.get("DocType", "rCustomer") != "rCustomer" or not _is_recent(doc, since):
            continue
        amount = round(_num(doc.get("CashSum")) + _num(doc.get("TransferSum"))
                       + sum(_num(line.get("CheckSum")) for line in doc.get("PaymentChecks") or [])
                       + sum(_num(line.get("CreditSum")) for line in doc.get("PaymentCreditCards") or []), 2)
        if amount < (rule.min_amount or 0):
            continue
        paid = [str(invoice_numbers.get(str(line.get("DocEntry")), line.get("DocEntry")))
                for line in doc.get("PaymentInvoices") or []]
        day = parse_day(doc.get("DocDate"))
        fields = {
            "DocEntry": doc.get("DocEntry"), "DocNum": doc.get("DocNum"),
            "DocDate": day.isoformat() if day else "", "CardCode": doc.get("CardCode"),
            "CardName": doc.get("CardName"), "DocCurrency": doc.get("DocCurrency") or "",
            "amount": amount, "invoices": ", ".join(paid),
        }
        out.append(Candidate(f"{rule.id}:{doc.get('DocNum')}:{fields['DocDate']}",
                             f"IncomingPayments {doc.get('DocNum')}", fields))
    return out


def _tracked(doc: Mapping[str, Any]) -> dict[str, Any]:
    lines = [(ln.get("ItemCode"), _num(ln.get("Quantity")), _num(ln.get("Price")))
             for ln in doc.get("DocumentLines") or []]
    return {**{name: doc.get(name) for name in PO_TRACKED_FIELDS}, "lines": lines}


FIRST_SEEN_CHANGE = "changed (first seen by the pipeline: no earlier version to compare)"


def describe_change(before: Mapping[str, Any] | None, after: Mapping[str, Any], *, since: date) -> str:
    """'created', or the tracked fields that changed: 'DocTotal 100.00 -> 120.00; 2 lines -> 3 lines'. An
    order seen for the first time is 'created' only if it was created lately (`since`): an older one that
    changed after the pipeline started was never read before, and calling it new would be wrong."""
    if before is None:
        return "created" if _is_recent(after, since) else FIRST_SEEN_CHANGE
    old, new = _tracked(before), _tracked(after)
    parts = []
    for name in (*PO_TRACKED_FIELDS, "lines"):
        if old[name] == new[name]:
            continue
        if name == "lines":
            parts.append(f"lines changed ({len(old[name])} -> {len(new[name])})")
        elif name == "DocTotal":
            parts.append(f"DocTotal {_num(old[name]):,.2f} -> {_num(new[name]):,.2f}")
        else:
            parts.append(f"{name} {old[name]} -> {new[name]}")
    return "; ".join(parts)


def purchase_order_candidates(rule: Rule, orders: Iterable[Snapshot], *, since: date) -> list[Candidate]:
    """purchase_order_changed: a PO that is new, or whose tracked fields changed since the last version."""
    out = []
    for snap in orders:
        doc = snap.payload
        updated = parse_day(doc.get("UpdateDate")) or parse_day(doc.get("DocDate"))
        if updated is None or updated < since:
            continue
        change = describe_change(snap.previous, doc, since=since)
        if not change:
            continue
        fields = {**document_fields(doc), "change": change}
        if fields["DocTotal"] < (rule.min_amount or 0):
            continue
        digest = hashlib.sha256(json.dumps(_tracked(doc), sort_keys=True, default=str).encode()).hexdigest()
        out.append(Candidate(f"{rule.id}:{doc.get('DocEntry')}:{digest[:12]}",
                             f"PurchaseOrders {doc.get('DocNum')}", fields))
    return out


@dataclass(frozen=True)
class StockLevel:
    item_code: str
    item_name: str
    warehouse: str
    in_stock: float
    minimal_stock: float

    @property
    def below(self) -> bool:
        return self.minimal_stock > 0 and self.in_stock < self.minimal_stock

    def fields(self) -> dict[str, Any]:
        return {"ItemCode": self.item_code, "ItemName": self.item_name, "WarehouseCode": self.warehouse,
                "InStock": self.in_stock, "MinimalStock": self.minimal_stock}


ALL_WAREHOUSES = "all"


def stock_levels(rule: Rule, items: Iterable[Snapshot]) -> list[StockLevel]:
    """Per configured warehouse (InStock vs MinimalStock), or per item (QuantityOnStock vs MinInventory)."""
    wanted_items = set(rule.items or [])
    warehouses = set(rule.warehouses or [])
    out = []
    for snap in items:
        item = snap.payload
        code = str(item.get("ItemCode"))
        if wanted_items and code not in wanted_items:
            continue
        name = item.get("ItemName") or ""
        if not warehouses:
            out.append(StockLevel(code, name, ALL_WAREHOUSES, _num(item.get("QuantityOnStock")),
                                  _num(item.get("MinInventory"))))
            continue
        for line in item.get("ItemWarehouseInfoCollection") or []:
            if line.get("WarehouseCode") in warehouses:
                out.append(StockLevel(code, name, str(line["WarehouseCode"]), _num(line.get("InStock")),
                                      _num(line.get("MinimalStock"))))
    return out
