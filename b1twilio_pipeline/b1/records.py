"""Screening of B1 records before they are stored: B1 data is input from outside, and one malformed record
must never stop a window, a refresh or a rule kind. A record without its key, with a key that is not a
number or short text, with a date that is not a date or an amount that is not a number, or with line
collections that are not lists of objects is quarantined: skipped, with its key and the reason reported
in the materialization's metadata and by a warning asset check. The rest of the window is processed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from b1twilio_pipeline.core.markdown import markdown_table

MAX_KEY_LENGTH = 64
DATE_FIELDS = ("DocDate", "DocDueDate", "TaxDate", "CreationDate", "UpdateDate", "CreateDate", "DueDate",
               "TransferDate")
NUMBER_FIELDS = ("DocTotal", "DocTotalFc", "DocTotalSys", "PaidToDate", "PaidToDateFC", "CashSum", "TransferSum",
                 "QuantityOnStock", "MinInventory")
# Line collections and the numbers each line must carry as numbers.
LINE_NUMBERS: dict[str, tuple[str, ...]] = {
    "DocumentLines": ("Quantity", "Price", "LineTotal"),
    "ItemWarehouseInfoCollection": ("InStock", "MinimalStock"),
    "PaymentInvoices": ("SumApplied",),
    "PaymentChecks": ("CheckSum",),
    "PaymentCreditCards": ("CreditSum",),
}
CHECK_NAME = "valid_b1_records"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number_problem(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return f"{name} {_shown(value)} is not a number"
    try:
        number = float(value)
    except ValueError:
        return f"{name} {_shown(value)} is not a number"
    return None if math.isfinite(number) else f"{name} {_shown(value)} is not a finite number"


def _date_problem(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        date.fromisoformat(str(value)[:10])
    except ValueError:
        return f"{name} {_shown(value)} is not a date"
    return None


def problem(row: Any, key_field: str) -> str | None:
    """Why `row` cannot be stored, or None when it can."""
    if not isinstance(row, Mapping):
        return "not a JSON object"
    key = row.get(key_field)
    if key is None or key == "":
        return f"no {key_field}"
    if isinstance(key, bool) or not isinstance(key, int | str):
        return f"{key_field} {_shown(key)} is not a number or text"
    if len(str(key)) > MAX_KEY_LENGTH:
        return f"{key_field} is longer than {MAX_KEY_LENGTH} characters"
    for name in DATE_FIELDS:
        reason = _date_problem(name, row.get(name))
        if reason:
            return reason
    for name in NUMBER_FIELDS:
        reason = _number_problem(name, row.get(name))
        if reason:
            return reason
    for collection, numbers in LINE_NUMBERS.items():
        lines = row.get(collection)
        if lines is None:
            continue
        if not isinstance(lines, list) or not all(isinstance(line, Mapping) for line in lines):
            return f"{collection} is not a list of objects"
        for line in lines:
            reason = next(filter(None, (_number_problem(f"{collection}.{n}", line.get(n)) for n in numbers)), None)
            if reason:
                return reason
    return None


@dataclass
class Quarantine:
    """Passes the valid records of a stream through and keeps (key, reason) of the others."""

    key_field: str
    rejected: list[dict[str, str]] = field(default_factory=list)

    def screen(self, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
        for row in rows:
            reason = problem(row, self.key_field)
            if reason is None:
                yield dict(row)
            else:
                key = row.get(self.key_field) if isinstance(row, Mapping) else None
                self.rejected.append({"key": _shown(key) if key is not None else "(none)", "reason": reason})

    def metadata(self) -> dict[str, Any]:
        return {"quarantined": len(self.rejected),
                "quarantined_records": dg.MetadataValue.md(markdown_table(self.rejected[:50], empty="None."))}

    def check_result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            check_name=CHECK_NAME, passed=not self.rejected, severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantined": len(self.rejected),
                      "records": dg.MetadataValue.md(markdown_table(self.rejected[:50], empty="None."))})


def check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(CHECK_NAME, asset=asset_key,
                             description="Every record B1 returned could be stored; malformed ones (no key, "
                                         "a date or amount that is not one) are listed and skipped.")
