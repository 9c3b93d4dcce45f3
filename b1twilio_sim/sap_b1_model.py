"""The company database behind the Service Layer simulator: records, user tables, queries, the clock.

Records are created and changed as B1 would (defaults, keys, DocNum, totals, payments applied to invoices,
stock sums) and stamped with UpdateDate/UpdateTime from a simulated clock in the B1 server's time zone,
because B1 stores them in server local time. Tests, the demo and the HTTP admin API change data through the
same methods, so a change made behind the pipeline's back looks like one made in B1.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from b1twilio_sim.sap_b1_data import (
    DOC_NUM_START,
    ENTITIES,
    PARTNERS,
    WAREHOUSE_ROW_DEFAULTS,
    FieldTypes,
    SimulatedCollection,
    bulk_invoice_factory,
    document_defaults,
    item_defaults,
    payment_defaults,
    seed_demo_data,
)
from b1twilio_sim.sap_b1_errors import already_exists, bad_request, not_found
from b1twilio_sim.sap_b1_odata import CollectionQuery, norm_date, norm_time
from b1twilio_sim.sap_b1_udt import UserTable, field_definition, new_user_table, no_such_table

_QUERY_CACHE_SIZE = 32


class SimClock:
    """The simulator's "now": a source clock (real time by default) plus an adjustable offset, seen in
    the B1 server's time zone."""

    def __init__(self, timezone: str = "UTC", source: Callable[[], datetime] | None = None) -> None:
        self.tz = ZoneInfo(timezone)
        self._source = source or (lambda: datetime.now(UTC))
        self._offset = timedelta()

    def now(self) -> datetime:
        return (self._source() + self._offset).astimezone(self.tz)

    def advance(self, seconds: float) -> datetime:
        self._offset += timedelta(seconds=seconds)
        return self.now()


def _copy(record: dict) -> dict:
    return json.loads(json.dumps(record))


class CompanyDatabase:
    """Entity records and user tables of one company, guarded by `data_lock`.

    `version` ("v1" or "v2") is the Service Layer version records are rendered for: v2 dates carry a time
    part. Sorted query results are cached until the next change, so walking 100,000 records page by page
    filters and sorts them once.
    """

    def __init__(self, *, version: str, timezone: str, clock: Callable[[], datetime] | None, seed: bool,
                 next_link_on_full_page: bool) -> None:
        self.version = version
        self.timezone = timezone
        self.clock = SimClock(timezone, clock)
        self.next_link_on_full_page = next_link_on_full_page
        self.data_lock = threading.RLock()
        self.data: dict[str, dict[Any, dict]] = {name: {} for name in ENTITIES}
        self.next_entry: dict[str, int] = dict.fromkeys(ENTITIES, 1)
        self.next_num: dict[str, int] = dict(DOC_NUM_START)
        self.user_tables: dict[str, UserTable] = {}
        # (entity, key, "Created" | "Updated" | "Deleted") of every change: the webhook messenger listens.
        self.on_change: Callable[[str, Any, str], None] = lambda entity, key, action: None
        self._changes = 0
        self._query_cache: dict[tuple, list[dict]] = {}
        if seed:
            today, now_time = self._now_parts()
            seed_demo_data(self, today, now_time)

    def advance_clock(self, seconds: float) -> datetime:
        with self.data_lock:
            return self.clock.advance(seconds)

    def _touch(self) -> None:
        self._changes += 1
        self._query_cache.clear()

    def _now_parts(self) -> tuple[date, str]:
        now = self.clock.now()
        return now.date(), now.strftime("%H:%M:%S")

    # ------------------------------------------------------------------------- documents

    @staticmethod
    def _spec(entity: str) -> SimulatedCollection:
        spec = ENTITIES.get(entity)
        if spec is None:
            raise ValueError(f"unknown entity set {entity!r}: use one of {', '.join(ENTITIES)}")
        return spec

    @staticmethod
    def _check_fields(spec: SimulatedCollection, fields: dict[str, Any]) -> None:
        unknown = [name for name in fields if name not in spec.fields]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {spec.name}")

    @staticmethod
    def _normalise(spec: SimulatedCollection, fields: dict[str, Any]) -> dict[str, Any]:
        result = dict(fields)
        for name, value in fields.items():
            kind = spec.fields[name]
            if value is None:
                continue
            if kind == "date":
                result[name] = norm_date(str(value))
            elif kind == "time" and not re.fullmatch(r"\d{2}:\d{2}:\d{2}", str(value)):
                result[name] = norm_time(str(value)) + ":00"
            elif kind == "float":
                result[name] = float(value)
        return result

    def add_document(self, entity: str, fields: dict[str, Any] | None = None, *,
                     apply_payment: bool = True) -> dict:
        """Create a record as B1 would (defaults, key, DocNum, totals, change stamps from the simulator
        clock); explicit fields, including UpdateDate/UpdateTime/DocDate/DocDueDate, win. Returns a copy.
        An incoming payment is applied to the invoices it names unless `apply_payment` is False."""
        spec = self._spec(entity)
        fields = dict(fields or {})
        self._check_fields(spec, fields)
        with self.data_lock:
            today, now_time = self._now_parts()
            if spec.key == "ItemCode":
                code = fields.get("ItemCode")
                if not code:
                    raise ValueError("Items need an ItemCode")
                if code in self.data[entity]:
                    raise ValueError(f"item {code!r} already exists")
                record = item_defaults(code, today, now_time)
            else:
                entry, num = self.next_entry[entity], self.next_num[entity]
                if spec.name == "IncomingPayments":
                    record = payment_defaults(entry, num, today)
                else:
                    record = document_defaults(spec, entry, num, today, now_time)
                self.next_entry[entity] += 1
                self.next_num[entity] += 1
            if "CardCode" in fields and "CardName" not in fields:
                record["CardName"] = PARTNERS.get(fields["CardCode"], fields["CardCode"])
            if "DocDate" in fields:
                day = norm_date(str(fields["DocDate"]))
                if spec.object_code is not None:
                    due = (date.fromisoformat(day) + timedelta(days=30)).isoformat()
                    record.update(TaxDate=day, DocDueDate=due)
                elif spec.name == "IncomingPayments":
                    record.update(DueDate=day, TransferDate=day)
            record.update(self._normalise(spec, fields))
            self._derive(spec, record, fields, creating=True)
            self.data[entity][record[spec.key]] = record
            if spec.name == "IncomingPayments" and apply_payment:
                self._apply_payment(record)
            self._touch()
            self.on_change(entity, record[spec.key], "Created")
            return _copy(record)

    @staticmethod
    def _derive(spec: SimulatedCollection, record: dict, fields: dict[str, Any], *, creating: bool) -> None:
        """Compute what B1 computes (line totals, document totals, stock sums, payment sums) from what was
        given now; explicitly given totals win."""
        if spec.object_code is not None:
            lines = []
            for number, line in enumerate(record.get("DocumentLines") or []):
                line = {"LineNum": number, "WarehouseCode": "01", "Currency": record["DocCurrency"], **line}
                line.setdefault("Price", 0.0)
                line.setdefault("Quantity", 1.0)
                line.setdefault("LineTotal", round(float(line["Quantity"]) * float(line["Price"]), 2))
                line.setdefault("ItemDescription", line.get("ItemCode"))
                lines.append(line)
            record["DocumentLines"] = lines
            if "DocTotal" not in fields and (creating or "DocumentLines" in fields):
                record["DocTotal"] = round(sum(float(line["LineTotal"]) for line in lines), 2)
            if "DocTotalSys" not in fields:
                record["DocTotalSys"] = record["DocTotal"]
        elif spec.name == "Items":
            rows = [{"ItemCode": record["ItemCode"], "WarehouseCode": row["WarehouseCode"],
                     **WAREHOUSE_ROW_DEFAULTS, **row} for row in record["ItemWarehouseInfoCollection"]]
            record["ItemWarehouseInfoCollection"] = rows
            if "QuantityOnStock" not in fields and (creating or "ItemWarehouseInfoCollection" in fields):
                record["QuantityOnStock"] = float(sum(float(row["InStock"]) for row in rows))
        elif spec.name == "IncomingPayments":
            rows = [{"LineNum": n, "InvoiceType": "it_Invoice", **row}
                    for n, row in enumerate(record["PaymentInvoices"])]
            record["PaymentInvoices"] = rows
            paid_otherwise = ("CashSum", "TransferSum", "PaymentChecks", "PaymentCreditCards")
            if creating and not any(fields.get(name) for name in paid_otherwise):
                record["TransferSum"] = round(sum(float(row.get("SumApplied", 0)) for row in rows), 2)

    def _apply_payment(self, payment: dict) -> None:
        today, now_time = self._now_parts()
        for row in payment["PaymentInvoices"]:
            invoice = self.data["Invoices"].get(row.get("DocEntry"))
            if invoice is None:
                continue
            invoice["PaidToDate"] = round(invoice["PaidToDate"] + float(row.get("SumApplied", 0)), 2)
            if invoice["PaidToDate"] >= invoice["DocTotal"] - 0.005:
                invoice["DocumentStatus"] = "bost_Close"
            invoice["UpdateDate"], invoice["UpdateTime"] = today.isoformat(), now_time
            self.on_change("Invoices", invoice["DocEntry"], "Updated")

    def update_document(self, entity: str, key: Any, fields: dict[str, Any]) -> dict:
        """Change a record; UpdateDate/UpdateTime move to the simulator clock unless given explicitly."""
        spec = self._spec(entity)
        self._check_fields(spec, fields)
        with self.data_lock:
            record = self.data[entity].get(key)
            if record is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            today, now_time = self._now_parts()
            if "UpdateDate" in spec.fields:
                record.update(UpdateDate=today.isoformat(), UpdateTime=now_time)
            record.update(self._normalise(spec, fields))
            self._derive(spec, record, fields, creating=False)
            self._touch()
            self.on_change(entity, key, "Updated")
            return _copy(record)

    def set_item_stock(self, item_code: str, warehouse: str, in_stock: float) -> dict:
        """Set one warehouse's on-hand quantity (adding the warehouse row if needed) and restamp the item."""
        with self.data_lock:
            item = self.data["Items"].get(item_code)
            if item is None:
                raise KeyError(f"Items({item_code!r}) does not exist")
            rows = [dict(row) for row in item["ItemWarehouseInfoCollection"]]
            for row in rows:
                if row["WarehouseCode"] == warehouse:
                    row["InStock"] = float(in_stock)
                    break
            else:
                rows.append({"WarehouseCode": warehouse, "InStock": float(in_stock)})
            return self.update_document("Items", item_code, {
                "ItemWarehouseInfoCollection": rows,
                "QuantityOnStock": float(sum(float(row["InStock"]) for row in rows)),
            })

    def corrupt_record(self, entity: str, key: Any, fields: dict[str, Any]) -> dict:
        """Store raw values as they are, unchecked (what a broken add-on or a bad import leaves behind:
        `{"DocDueDate": "31/12/2026"}`, `{"DocEntry": null}`), and restamp the record so a poll reads it."""
        with self.data_lock:
            record = self.data[self._spec(entity).name].get(key)
            if record is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            today, now_time = self._now_parts()
            if "UpdateDate" in record:
                record.update(UpdateDate=today.isoformat(), UpdateTime=now_time)
            record.update(fields)
            self._touch()
            self.on_change(entity, key, "Updated")
            return _copy(record)

    def delete_record(self, entity: str, key: Any) -> None:
        """Remove a record (a deleted draft, or a company database restored from an older backup)."""
        with self.data_lock:
            if self.data[self._spec(entity).name].pop(key, None) is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            self._touch()
            self.on_change(entity, key, "Deleted")

    def generate_invoices(self, count: int, entity: str = "Invoices", seed: int = 7) -> dict[str, int]:
        """Add `count` plausible documents fast (benchmarks: 100,000 in seconds)."""
        spec = self._spec(entity)
        if spec.object_code is None:
            raise ValueError(f"generate_invoices makes documents; {entity} is not a document entity")
        with self.data_lock:
            make = bulk_invoice_factory(spec, self.clock.now().date(), seed + self.next_entry[entity])
            table = self.data[entity]
            first = self.next_entry[entity]
            for offset in range(count):
                record = make(first + offset, self.next_num[entity] + offset)
                table[record["DocEntry"]] = record
            self.next_entry[entity] += count
            self.next_num[entity] += count
            self._touch()
            return {"created": count, "first_doc_entry": first, "last_doc_entry": first + count - 1}

    def get_record(self, entity: str, key: Any) -> dict | None:
        with self.data_lock:
            record = self.data[self._spec(entity).name].get(key)
            return None if record is None else _copy(record)

    # ----------------------------------------------------------------------- user tables

    def udt_rows(self, table: str) -> list[dict]:
        """The rows of user table `table` (with or without the '@'), for tests and the demo."""
        with self.data_lock:
            udt = self.user_tables.get(table.lstrip("@"))
            return [] if udt is None else [dict(row) for row in udt.rows.values()]

    def create_user_table(self, body: dict[str, Any]) -> dict:
        table = new_user_table(body)
        with self.data_lock:
            if table.name in self.user_tables:
                raise already_exists("User Tables (OUTB)")
            self.user_tables[table.name] = table
            return dict(table.meta)

    def create_user_field(self, body: dict[str, Any]) -> dict:
        table_name, name, field_type = field_definition(body)
        with self.data_lock:
            udt = self.user_tables.get(table_name)
            if udt is None:
                raise bad_request(f"Table '@{table_name}' does not exist", code=-1029)
            return udt.add_field(name, field_type, body)

    def user_table(self, name: str) -> UserTable:
        """The table `U_<name>` addresses; 404 when it was never created."""
        udt = self.user_tables.get(name)
        if udt is None:
            raise no_such_table(name)
        return udt

    def create_udt_row(self, table: str, body: dict[str, Any]) -> dict:
        with self.data_lock:
            return self.user_table(table).add_row(body)

    def udt_row(self, table: str, code: str) -> dict:
        with self.data_lock:
            row = self.user_table(table).rows.get(code)
            if row is None:
                raise not_found()
            return dict(row)

    def update_udt_row(self, table: str, code: str, body: dict[str, Any]) -> None:
        with self.data_lock:
            udt = self.user_table(table)
            row = udt.rows.get(code)
            if row is None:
                raise not_found()
            values = udt.check_values(body)
            if values.get("Code", row["Code"]) != row["Code"]:
                raise bad_request("Code is the key and cannot be changed")
            row.update(values)

    def delete_udt_row(self, table: str, code: str) -> None:
        with self.data_lock:
            if self.user_table(table).rows.pop(code, None) is None:
                raise not_found()

    def metadata_rows(self, name: str) -> tuple[list[dict], str]:
        """The rows of `UserTablesMD` or `UserFieldsMD` and their key field."""
        with self.data_lock:
            if name == "UserTablesMD":
                return [dict(udt.meta) for udt in self.user_tables.values()], "TableName"
            return [dict(meta) for udt in self.user_tables.values() for meta in udt.fields.values()], "Name"

    # ------------------------------------------------------------------------- queries

    def query(self, entity: str, options: Mapping[str, str],
              page_size: int) -> tuple[list[dict], str | None, int | None]:
        """One page of a collection: (rendered rows, relative next link or None, count when asked)."""
        if entity.startswith("U_"):
            udt = self.user_table(entity[2:])
            fields, key = udt.field_types(), "Code"
        else:
            udt, spec = None, ENTITIES[entity]
            fields, key = spec.fields, spec.key
        query = CollectionQuery.parse(entity, options, fields, key)
        with self.data_lock:
            if udt is not None:
                matched = query.matching(list(udt.rows.values()))
            else:
                cache_key = (entity, query.filter, query.order, self._changes)
                matched = self._query_cache.get(cache_key)
                if matched is None:
                    matched = query.matching(list(self.data[entity].values()))
                    if len(self._query_cache) > _QUERY_CACHE_SIZE:
                        self._query_cache.clear()
                    self._query_cache[cache_key] = matched
            window = query.window(len(matched), page_size, link_full_pages=self.next_link_on_full_page)
            page = [self.render(row, fields, query.select) for row in matched[window.start:window.stop]]
        return page, window.next_link, len(matched) if query.count else None

    def render(self, record: dict, fields: FieldTypes, select: list[str] | None) -> dict:
        """A record as the wire shows it: v2 dates carry a time part; collections are copied."""
        out: dict[str, Any] = {}
        for name in select or fields:
            value = record.get(name)
            if value is not None and self.version == "v2" and fields.get(name) == "date":
                value = f"{value}T00:00:00Z"
            elif isinstance(value, list):
                value = [dict(row) for row in value]
            out[name] = value
        return out
