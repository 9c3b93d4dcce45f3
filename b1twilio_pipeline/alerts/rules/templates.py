"""Message templates: Python format strings over the fields a rule kind provides, checked when the rules
file loads (every field known, every format fitting its field's type, no width that would exhaust memory)
and rendered tolerantly (a field B1 left empty renders empty rather than losing the alert).

Amount fields come twice: as the number B1 gave (`{DocTotal:,.2f}`, formatted as written) and as text in
the reader's locale with the document's currency (`{DocTotalText}`: "$1,200.00" in en-US, "1.200,00 €" in
de-DE), computed when the message is rendered for a recipient (see `money`).

Every kind also offers `{company}`: the name of the company the alert is about, when one deployment watches
several (empty with one). A template that does not place it gets the name in front ("Muster GmbH: ..."),
so a person who hears from several companies always knows which one it is."""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from typing import Any

from b1twilio_pipeline.alerts.rules.fields import fail
from b1twilio_pipeline.alerts.rules.money import format_amount

MAX_FORMAT_WIDTH = 200
COMPANY = "company"
# Text field -> the amount it writes out, in the currency of field CURRENCY, for the recipient's locale. A
# kind offers one by listing it in its TEMPLATE_FIELDS (as str) next to the amount and the currency.
AMOUNT_TEXTS = {"DocTotalText": "DocTotal", "PaidToDateText": "PaidToDate", "open_amount_text": "open_amount",
                "amount_text": "amount"}
CURRENCY = "DocCurrency"
# What the pipeline passes for a field of each type; used to try a template at load time.
SAMPLE_VALUES: dict[str, Any] = {
    "DocEntry": 4711, "DocNum": 1001, "DocDate": "2026-11-24", "DocDueDate": "2026-12-24", "CardCode": "V10000",
    "CardName": "Acme Supplies Ltd", "NumAtCard": "INV-778", "DocTotal": 1234.5, "DocCurrency": "EUR",
    "PaidToDate": 0.0, "Comments": "", "days_overdue": 31, "open_amount": 1234.5,
    "change": "DocTotal 100.00 -> 120.00", "amount": 500.0, "invoices": "1001, 1002", "ItemCode": "A00001",
    "ItemName": "Printer paper A4", "WarehouseCode": "01", "InStock": 3.0, "MinimalStock": 10.0,
    "DocTotalText": "€1,234.50", "PaidToDateText": "€0.00", "open_amount_text": "€1,234.50", "amount_text": "€500.00",
    COMPANY: "Muster GmbH",
}


def references(template: str) -> list[tuple[str, str, str | None]]:
    """(field name, format spec, conversion) of every replacement field, nested specs included."""
    found: list[tuple[str, str, str | None]] = []
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        found.append((name, spec or "", conversion))
        if spec and "{" in spec:
            found.extend(references(spec))
    return found


def check_template(template: Any, kind: str, provided: Mapping[str, type]) -> str:
    """The template, or a PydanticCustomError saying what is wrong with it for `kind`."""
    if not isinstance(template, str) or not template.strip():
        raise fail("must be non-empty text such as \"Invoice {DocNum} ...\"")
    provided = {**provided, COMPANY: str}
    try:
        found = references(template)
    except ValueError as exc:
        raise fail(f"is not a valid template: {exc}") from None
    for name, spec, conversion in found:
        _check_reference(name, spec, conversion, kind, provided)
    try:
        template.format_map({name: SAMPLE_VALUES[name] for name in provided})
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise fail(f"cannot be rendered with sample values: {exc}") from None
    return template


def _check_reference(name: str, spec: str, conversion: str | None, kind: str, provided: Mapping[str, type]) -> None:
    if name == "" or name.isdigit():
        raise fail("positional {} fields are not allowed: name a field like {DocNum}")
    if not re.fullmatch(r"\w+", name):
        raise fail(f"'{{{name}}}': only plain field names are allowed (no . or [])")
    if name not in provided:
        hint = difflib.get_close_matches(name, provided, n=1)
        suggestion = f"did you mean '{hint[0]}'? " if hint else ""
        raise fail(f"unknown field '{{{name}}}' for kind {kind} ({suggestion}fields: {', '.join(provided)})")
    too_wide = [int(n) for n in re.findall(r"\d+", spec) if int(n) > MAX_FORMAT_WIDTH]
    if too_wide:
        raise fail(f"'{{{name}:{spec}}}': width or precision {too_wide[0]} is too large (at most {MAX_FORMAT_WIDTH})")
    if "{" in spec:
        return  # a nested spec: checked by rendering the whole template
    sample = SAMPLE_VALUES[name]
    try:
        format(sample if conversion is None else (repr(sample) if conversion == "r" else str(sample)), spec)
    except (ValueError, TypeError) as exc:
        raise fail(f"'{{{name}:{spec}}}': format '{spec}' does not fit {name} ({provided[name].__name__}): "
                   f"{exc}") from None


class _Blank:
    """Stands in for a missing field: formats to empty text whatever the format spec."""

    def __format__(self, spec: str) -> str:
        return ""

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return ""


def render(template: str, provided: Mapping[str, type], fields: Mapping[str, Any], locale: str | None = None,
           company: str | None = None) -> str:
    """The message text: numbers given as text become numbers, ISO midnights become dates, amount texts
    follow `locale`, missing fields render empty; `company` (a name, when there are several companies) where
    the template places it, else in front. ValueError when a value does not fit its format."""
    values: dict[str, Any] = {**fields, COMPANY: company or _Blank()}
    for name, kind_type in provided.items():
        value = fields.get(name)
        if value is None:
            values[name] = _Blank()
        elif kind_type in (int, float) and isinstance(value, str):
            try:
                values[name] = kind_type(float(value)) if kind_type is int else float(value)
            except ValueError:
                values[name] = value
        elif name in ("DocDate", "DocDueDate") and isinstance(value, str) and value.endswith("T00:00:00Z"):
            values[name] = value[:10]
    for name, amount in AMOUNT_TEXTS.items():
        if name in provided:
            values[name] = format_amount(values.get(amount), fields.get(CURRENCY), locale) or _Blank()
    if company and COMPANY not in {name for name, _spec, _conversion in references(template)}:
        template = "{company}: " + template
    try:
        return template.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"cannot render template: {exc}") from None
