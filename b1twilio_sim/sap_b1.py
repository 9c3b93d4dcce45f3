"""A loopback simulator of the SAP Business One Service Layer, faithful to API_FACTS.md.

It speaks the protocol the pipeline's client speaks to a real Service Layer (Login/Logout, B1SESSION and
ROUTEID cookies, idle session timeout, v1/v2 envelopes and error bodies, OData `$filter`/`$select`/
`$orderby`/`$top`/`$skip`, server-driven paging with relative next links, user-defined tables), so tests
exercise the real client code paths. A simulated clock in the B1 server's time zone stamps UpdateDate/
UpdateTime; tests and the demo drive it (and inject faults) through an in-process admin API or the same
admin API over HTTP under `/_admin/...`.

Run: `python -m b1twilio_sim.sap_b1 --host 127.0.0.1 --port 0 [--version v1|v2]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from b1twilio_sim._http import LoggedRequest, SimulatorHandler, SimulatorHTTPServer, run_cli
from b1twilio_sim.sap_b1_data import (
    DOC_NUM_START,
    ENTITIES,
    PARTNERS,
    WAREHOUSE_ROW_DEFAULTS,
    EntitySpec,
    FieldTypes,
    bulk_invoice_factory,
    document_defaults,
    item_defaults,
    payment_defaults,
    seed_demo_data,
)

DEMO_COMPANY_DB = "SBODEMOUS"
DEMO_USERNAME = "manager"
DEMO_PASSWORD = "manager"
DEFAULT_PAGE_SIZE = 20
SESSION_MESSAGE = "Invalid session or session already timeout."
CONTENT_TYPES = {
    "v1": "application/json;odata=minimalmetadata;charset=utf-8",
    "v2": "application/json;odata.metadata=minimal;charset=utf-8",
}
UDT_TYPES = {"db_Alpha": "str", "db_Memo": "str", "db_Numeric": "int", "db_Float": "float", "db_Date": "date"}
UDT_TABLE_TYPES = {"bott_NoObject", "bott_NoObjectAutoIncrement", "bott_Document", "bott_DocumentLines",
                   "bott_MasterData", "bott_MasterDataLines"}


class B1Failure(Exception):
    """An error the simulator answers in B1's error body shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: int = -1000) -> B1Failure:
    return B1Failure(400, code, message)


def not_found() -> B1Failure:
    return B1Failure(404, -2028, "No matching records found (ODBC -2028)")


def already_exists(table: str) -> B1Failure:
    return B1Failure(400, -2035, f"This entry already exists in the following tables ({table}) (ODBC -2035)")


# --------------------------------------------------------------------------------------------- clock


class SimClock:
    """The simulator's "now": a source clock (real time by default) plus an adjustable offset, seen in
    the B1 server's time zone, because B1 stores UpdateDate/UpdateTime in server local time."""

    def __init__(self, timezone: str = "UTC", source: Callable[[], datetime] | None = None) -> None:
        self.tz = ZoneInfo(timezone)
        self._source = source or (lambda: datetime.now(UTC))
        self._offset = timedelta()

    def now(self) -> datetime:
        return (self._source() + self._offset).astimezone(self.tz)

    def advance(self, seconds: float) -> datetime:
        self._offset += timedelta(seconds=seconds)
        return self.now()


# --------------------------------------------------------------------------------------- OData query

Predicate = Callable[[dict], bool]
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)(?![A-Za-z_])"
                    r"|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))")
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?Z?)?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2})?$")
_NULL = object()


def _norm_date(text: str) -> str:
    match = _DATE.match(text)
    if not match:
        raise bad_request(f"Invalid date literal '{text}': use 'YYYY-MM-DD'")
    return match.group(1)


def _norm_time(text: str) -> str:
    """Times compare to the minute only, like the real Service Layer."""
    match = _TIME.match(text)
    if not match:
        raise bad_request(f"Invalid time literal '{text}': use 'HH:MM' or 'HH:MM:SS'")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _sort_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return _norm_time(value)
    if kind == "date":
        return value[:10]
    return value


class FilterParser:
    """Recursive-descent parser for the `$filter` subset the client uses: comparisons of one field with a
    literal (`eq ne gt ge lt le`), `and`, `or`, `not`, parentheses, quoted strings, numbers, `null`.
    Anything else is a B1-style 400 error, never a crash."""

    def __init__(self, text: str, fields: FieldTypes, entity: str) -> None:
        self.fields = fields
        self.entity = entity
        self.tokens: list[tuple[str, str]] = []
        for match in _TOKEN.finditer(text):
            kind = match.lastgroup or "bad"
            if kind == "bad":
                raise bad_request(f"Syntax error in $filter near '{match.group(kind)}'")
            self.tokens.append((kind, match.group(kind)))
        self.pos = 0

    def parse(self) -> Predicate:
        if not self.tokens:
            raise bad_request("Empty $filter")
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise bad_request(f"Syntax error in $filter near '{self.tokens[self.pos][1]}'")
        return predicate

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise bad_request("Unexpected end of $filter")
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token and token[0] == "word" and token[1] == word:
            self.pos += 1
            return True
        return False

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): any(p(r) for p in ps))

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._keyword("and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): all(p(r) for p in ps))

    def _unary(self) -> Predicate:
        if self._keyword("not"):
            inner = self._unary()
            return lambda r: not inner(r)
        token = self._peek()
        if token and token[0] == "lp":
            self.pos += 1
            inner = self._or()
            if self._take()[0] != "rp":
                raise bad_request("Missing ')' in $filter")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        kind, name = self._take()
        if kind != "word":
            raise bad_request(f"Expected a property name in $filter, got '{name}'")
        nxt = self._peek()
        if nxt and nxt[0] == "lp":
            raise bad_request(f"Function '{name}' is not supported in $filter")
        field_type = self.fields.get(name)
        if field_type is None:
            raise bad_request(f"Property '{name}' of '{self.entity}' is invalid")
        if field_type == "coll":
            raise bad_request(f"Property '{name}' of '{self.entity}' is a collection and cannot be filtered")
        op_kind, op = self._take()
        if op_kind != "word" or op not in _COMPARATORS:
            raise bad_request(f"Unsupported operator '{op}' in $filter")
        literal = self._literal(name, field_type, op)
        compare = _COMPARATORS[op]
        if literal is _NULL:
            return (lambda r: r.get(name) is None) if op == "eq" else (lambda r: r.get(name) is not None)

        def predicate(record: dict) -> bool:
            value = record.get(name)
            if value is None:
                return op == "ne"
            return compare(_sort_value(field_type, value), literal)

        return predicate

    def _literal(self, name: str, field_type: str, op: str) -> Any:
        kind, text = self._take()
        if kind == "word" and text == "null":
            if op not in ("eq", "ne"):
                raise bad_request(f"Operator '{op}' cannot compare '{name}' with null")
            return _NULL
        if field_type in ("int", "float"):
            if kind != "num":
                raise bad_request(f"Property '{name}' is numeric: compare it with a number, not {text}")
            return float(text) if "." in text else int(text)
        if kind != "str":
            raise bad_request(f"Property '{name}' needs a quoted string literal, not {text}")
        value = text[1:-1].replace("''", "'")
        if field_type == "date":
            return _norm_date(value)
        if field_type == "time":
            return _norm_time(value)
        return value


def parse_orderby(text: str, fields: FieldTypes, entity: str) -> list[tuple[str, bool]]:
    """`$orderby=F1 desc,F2` -> [(field, descending)]."""
    order: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise bad_request(f"Invalid $orderby clause '{part.strip()}'")
        if fields.get(words[0]) in (None, "coll"):
            raise bad_request(f"Property '{words[0]}' of '{entity}' is invalid for $orderby")
        order.append((words[0], len(words) == 2 and words[1] == "desc"))
    return order


def sort_records(records: list[dict], order: list[tuple[str, bool]], fields: FieldTypes) -> list[dict]:
    result = list(records)
    for name, descending in reversed(order):
        kind = fields[name]

        def key(record: dict, name: str = name, kind: str = kind) -> tuple[bool, Any]:
            value = _sort_value(kind, record.get(name))
            return (value is not None, value if value is not None else 0)

        result.sort(key=key, reverse=descending)
    return result


def parse_select(text: str, fields: FieldTypes, entity: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in fields:
            raise bad_request(f"Property '{name}' of '{entity}' is invalid")
    return names


def _int_option(query: dict[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise bad_request(f"Invalid value '{query[name]}' for {name}") from None
    if value < 0:
        raise bad_request(f"{name} must not be negative")
    return value


# ---------------------------------------------------------------------------------------- the server


@dataclass
class Session:
    session_id: str
    last_used: datetime


@dataclass
class UserTable:
    name: str
    meta: dict[str, Any]
    fields: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, Any]]

    def field_types(self) -> FieldTypes:
        types: FieldTypes = {"Code": "str", "Name": "str"}
        types.update({f"U_{name}": UDT_TYPES[meta["Type"]] for name, meta in self.fields.items()})
        return types


class SapB1Simulator(SimulatorHTTPServer):
    """The Service Layer simulator: state, admin API and HTTP server in one object.

    `expiry_mode` "301" answers an expired session with HTTP 401 / code 301 (real SL); "5002" with HTTP 400 /
    code -5002 and a message about the session (the customer's description). `next_link_on_full_page`
    makes every full page carry a next link even when nothing follows (allowed by real SL: the end is a
    page without a link). `login_latency_s` and `reject_parallel_logins` reproduce 500/299 "SAML Login
    Failed" for logins that overlap.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, version: str = "v1", *,
                 company_db: str = DEMO_COMPANY_DB, username: str = DEMO_USERNAME,
                 password: str = DEMO_PASSWORD,
                 session_timeout_s: float = 1800, expiry_mode: str = "301", seed: bool = True,
                 clock: Callable[[], datetime] | None = None, timezone: str = "UTC",
                 next_link_on_full_page: bool = False, login_latency_s: float = 0.0,
                 reject_parallel_logins: bool = True, route_id: str = ".node1") -> None:
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        if expiry_mode not in ("301", "5002"):
            raise ValueError(f"expiry_mode must be '301' or '5002', got {expiry_mode!r}")
        super().__init__((host, port), SapB1Handler)
        self.version = version
        self.prefix = f"/b1s/{version}"
        self.company_db = company_db
        self.username = username
        self.password = password
        self.session_timeout_s = session_timeout_s
        self.expiry_mode = expiry_mode
        self.clock = SimClock(timezone, clock)
        self.timezone = timezone
        self.next_link_on_full_page = next_link_on_full_page
        # A misconfigured proxy in front of B1 can hand out absolute next links to another host: this
        # prefix makes the simulator do the same (the client must not follow them with its session).
        self.next_link_base = ""
        self.login_latency_s = login_latency_s
        self.reject_parallel_logins = reject_parallel_logins
        self.route_id = route_id
        self.sessions: dict[str, Session] = {}
        self.data: dict[str, dict[Any, dict]] = {name: {} for name in ENTITIES}
        self.next_entry: dict[str, int] = dict.fromkeys(ENTITIES, 1)
        self.next_num: dict[str, int] = dict(DOC_NUM_START)
        self.user_tables: dict[str, UserTable] = {}
        self.version_counter = 0
        self._query_cache: dict[tuple, list[dict]] = {}
        self._logins_in_flight = 0
        if seed:
            now = self.clock.now()
            seed_demo_data(self, now.date(), now.strftime("%H:%M:%S"))

    # ----------------------------------------------------------------------------- basics

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def start_background(self) -> SapB1Simulator:
        super().start_background()
        return self

    def log_request_entry(self, entry: LoggedRequest) -> None:
        """Admin calls are the test harness talking, not the client: keep them out of the log."""
        if not entry.path.startswith("/_admin"):
            super().log_request_entry(entry)

    def check_login(self, company_db: Any, username: Any, password: Any) -> None:
        if company_db != self.company_db:
            raise B1Failure(401, -306, "Fail to get DB Credentials from SLD.")
        if username != self.username or password != self.password:
            raise B1Failure(401, -304, "Fail to NONE-SSO login from SLD.")

    def _touch(self) -> None:
        self.version_counter += 1
        self._query_cache.clear()

    def _now_parts(self) -> tuple[date, str]:
        now = self.clock.now()
        return now.date(), now.strftime("%H:%M:%S")

    # ------------------------------------------------------------------------- sessions

    def new_session(self) -> Session:
        with self.lock:
            session = Session(str(uuid.uuid4()), self.clock.now())
            self.sessions[session.session_id] = session
            return session

    def use_session(self, session_id: str | None) -> Session:
        """Validate and renew (idle timeout) a session; expired or unknown ones answer per expiry mode."""
        with self.lock:
            session = self.sessions.get(session_id or "")
            now = self.clock.now()
            if session is not None and (now - session.last_used).total_seconds() > self.session_timeout_s:
                del self.sessions[session.session_id]
                session = None
            if session is None:
                if self.expiry_mode == "5002":
                    raise B1Failure(400, -5002, "Session timeout: " + SESSION_MESSAGE)
                raise B1Failure(401, 301, SESSION_MESSAGE)
            session.last_used = now
            return session

    def expire_sessions(self) -> int:
        """Forget every session, as a server restart or an idle timeout would."""
        with self.lock:
            count = len(self.sessions)
            self.sessions.clear()
            return count

    def advance_clock(self, seconds: float) -> datetime:
        with self.lock:
            return self.clock.advance(seconds)

    # ------------------------------------------------------------------------- documents

    def _spec(self, entity: str) -> EntitySpec:
        spec = ENTITIES.get(entity)
        if spec is None:
            raise ValueError(f"unknown entity set {entity!r}: use one of {', '.join(ENTITIES)}")
        return spec

    @staticmethod
    def _check_fields(spec: EntitySpec, fields: dict[str, Any]) -> None:
        unknown = [name for name in fields if name not in spec.fields]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {spec.name}")

    @staticmethod
    def _normalise(spec: EntitySpec, fields: dict[str, Any]) -> dict[str, Any]:
        result = dict(fields)
        for name, value in fields.items():
            kind = spec.fields[name]
            if value is None:
                continue
            if kind == "date":
                result[name] = _norm_date(str(value))
            elif kind == "time" and not re.fullmatch(r"\d{2}:\d{2}:\d{2}", str(value)):
                result[name] = _norm_time(str(value)) + ":00"
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
        with self.lock:
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
                day = _norm_date(str(fields["DocDate"]))
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
            return json.loads(json.dumps(record))

    def _derive(self, spec: EntitySpec, record: dict, fields: dict[str, Any], *, creating: bool) -> None:
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

    def update_document(self, entity: str, key: Any, fields: dict[str, Any]) -> dict:
        """Change a record; UpdateDate/UpdateTime move to the simulator clock unless given explicitly."""
        spec = self._spec(entity)
        self._check_fields(spec, fields)
        with self.lock:
            record = self.data[entity].get(key)
            if record is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            today, now_time = self._now_parts()
            if "UpdateDate" in spec.fields:
                record.update(UpdateDate=today.isoformat(), UpdateTime=now_time)
            record.update(self._normalise(spec, fields))
            self._derive(spec, record, fields, creating=False)
            self._touch()
            return json.loads(json.dumps(record))

    def set_item_stock(self, item_code: str, warehouse: str, in_stock: float) -> dict:
        """Set one warehouse's on-hand quantity (adding the warehouse row if needed) and restamp the item."""
        with self.lock:
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
        with self.lock:
            record = self.data[self._spec(entity).name].get(key)
            if record is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            today, now_time = self._now_parts()
            if "UpdateDate" in record:
                record.update(UpdateDate=today.isoformat(), UpdateTime=now_time)
            record.update(fields)
            self._touch()
            return json.loads(json.dumps(record))

    def delete_record(self, entity: str, key: Any) -> None:
        """Remove a record (a deleted draft, or a company database restored from an older backup)."""
        with self.lock:
            if self.data[self._spec(entity).name].pop(key, None) is None:
                raise KeyError(f"{entity}({key!r}) does not exist")
            self._touch()

    def generate_invoices(self, count: int, entity: str = "Invoices", seed: int = 7) -> dict[str, int]:
        """Add `count` plausible documents fast (benchmarks: 100,000 in seconds)."""
        spec = self._spec(entity)
        if spec.object_code is None:
            raise ValueError(f"generate_invoices makes documents; {entity} is not a document entity")
        with self.lock:
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
        with self.lock:
            record = self.data[self._spec(entity).name].get(key)
            return None if record is None else json.loads(json.dumps(record))

    # ----------------------------------------------------------------------- user tables

    def udt_rows(self, table: str) -> list[dict]:
        """The rows of user table `table` (with or without the '@'), for tests and the demo."""
        with self.lock:
            udt = self.user_tables.get(table.lstrip("@"))
            return [] if udt is None else [dict(row) for row in udt.rows.values()]

    def create_user_table(self, body: dict[str, Any]) -> dict:
        name = body.get("TableName")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,18}", name):
            raise bad_request("TableName is required: letters, digits, underscore, at most 19 characters")
        table_type = body.get("TableType", "bott_NoObject")
        if table_type not in UDT_TABLE_TYPES:
            raise bad_request(f"Invalid TableType '{table_type}'")
        with self.lock:
            if name in self.user_tables:
                raise already_exists("User Tables (OUTB)")
            meta = {"TableName": name, "TableDescription": str(body.get("TableDescription") or name)[:30],
                    "TableType": table_type, "Archivable": "tNO"}
            self.user_tables[name] = UserTable(name, meta, {}, {})
            return dict(meta)

    def create_user_field(self, body: dict[str, Any]) -> dict:
        table_name = str(body.get("TableName") or "")
        name = body.get("Name")
        if not table_name.startswith("@"):
            raise bad_request(f"TableName '{table_name}' is not a user table: use '@' + the table name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,17}", name):
            raise bad_request("Name is required: letters, digits, underscore, at most 18 characters")
        field_type = body.get("Type", "db_Alpha")
        if field_type not in UDT_TYPES:
            raise bad_request(f"Invalid Type '{field_type}'")
        with self.lock:
            udt = self.user_tables.get(table_name[1:])
            if udt is None:
                raise bad_request(f"Table '{table_name}' does not exist", code=-1029)
            if name in udt.fields:
                raise already_exists("User Fields (CUFD)")
            meta = {"Name": name, "Type": field_type, "Size": int(body.get("Size") or 10),
                    "Description": body.get("Description") or name, "SubType": body.get("SubType", "st_None"),
                    "TableName": table_name, "FieldID": len(udt.fields)}
            udt.fields[name] = meta
            return dict(meta)

    def _udt(self, name: str) -> UserTable:
        udt = self.user_tables.get(name)
        if udt is None:
            raise B1Failure(404, -1000, f"Unrecognized resource path: U_{name} (no such user table)")
        return udt

    def _check_udt_values(self, udt: UserTable, values: dict[str, Any]) -> dict[str, Any]:
        types = udt.field_types()
        result: dict[str, Any] = {}
        for name, value in values.items():
            if name not in types:
                raise bad_request(f"Property '{name}' of '{udt.name}' is invalid")
            limit = 50 if name == "Code" else 100 if name == "Name" else udt.fields[name[2:]]["Size"]
            if value is not None and types[name] == "str" and len(str(value)) > limit:
                raise bad_request(f"Value too long in property '{name}' of '{udt.name}' (max {limit})", -1000)
            result[name] = value
        return result

    def create_udt_row(self, table: str, body: dict[str, Any]) -> dict:
        with self.lock:
            udt = self._udt(table)
            values = self._check_udt_values(udt, body)
            code = values.get("Code")
            if not code:
                raise bad_request(f"Code is required for '@{table}'")
            if code in udt.rows:
                raise already_exists(f"'@{table}'")
            row = {"Code": code, "Name": values.get("Name") or code}
            row.update({f"U_{name}": None for name in udt.fields})
            row.update(values)
            udt.rows[code] = row
            return dict(row)

    # ------------------------------------------------------------------------- queries

    def query(self, entity: str, query: dict[str, str], page_size: int) -> tuple[list[dict], dict[str, Any]]:
        """Filter, order and page a collection. Returns the page and envelope extras (next link, count)."""
        if entity.startswith("U_"):
            udt = self._udt(entity[2:])
            fields, key, rows_source = udt.field_types(), "Code", lambda: list(udt.rows.values())
        else:
            spec = ENTITIES[entity]
            fields, key, rows_source = spec.fields, spec.key, lambda: list(self.data[entity].values())
        allowed = {"$filter", "$select", "$orderby", "$top", "$skip", "$inlinecount", "$count"}
        for option in query:
            if option.startswith("$") and option not in allowed:
                raise bad_request(f"Query option '{option}' is not supported")
        top, skip = _int_option(query, "$top"), _int_option(query, "$skip") or 0
        select = parse_select(query["$select"], fields, entity) if query.get("$select") else None
        order = parse_orderby(query["$orderby"], fields, entity) if query.get("$orderby") else [(key, False)]
        cache_key = (entity, query.get("$filter"), tuple(order), self.version_counter)
        with self.lock:
            matched = self._query_cache.get(cache_key)
            if matched is None or entity.startswith("U_"):
                rows = rows_source()
                if query.get("$filter"):
                    predicate = FilterParser(query["$filter"], fields, entity).parse()
                    rows = [row for row in rows if predicate(row)]
                matched = sort_records(rows, order, fields)
                if not entity.startswith("U_"):
                    if len(self._query_cache) > 32:
                        self._query_cache.clear()
                    self._query_cache[cache_key] = matched
            limit = len(matched) - skip if top is None else min(top, max(0, len(matched) - skip))
            take = limit if page_size == 0 else min(page_size, max(0, limit))
            page = [self.render(row, fields, select) for row in matched[skip:skip + max(0, take)]]
        extras: dict[str, Any] = {}
        if query.get("$inlinecount") == "allpages" or query.get("$count") == "true":
            extras["count"] = len(matched)
        more = take < limit or (self.next_link_on_full_page and page_size and len(page) == page_size
                                and (top is None or take < top))
        if page_size and more:
            params = {name: query[name] for name in ("$select", "$filter", "$orderby") if query.get(name)}
            if top is not None:
                params["$top"] = str(top - take)
            params["$skip"] = str(skip + take)
            extras["next"] = f"{entity}?" + urlencode(params, quote_via=quote, safe="$',()")
        return page, extras

    def render(self, record: dict, fields: FieldTypes, select: list[str] | None) -> dict:
        """A record as the wire shows it: v2 dates carry a time part; collections are copied."""
        names = select or list(fields)
        out: dict[str, Any] = {}
        for name in names:
            value = record.get(name)
            if value is not None and self.version == "v2" and fields.get(name) == "date":
                value = f"{value}T00:00:00Z"
            elif isinstance(value, list):
                value = [dict(row) for row in value]
            out[name] = value
        return out

    # ------------------------------------------------------------------------- admin

    def request_counts(self) -> dict[str, int]:
        """Requests per "METHOD /path" (query stripped), admin calls excluded."""
        with self.lock:
            return dict(Counter(f"{entry.method} {urlsplit(entry.path).path}" for entry in self.requests))

    def count_requests(self, method: str | None = None, resource: str | None = None) -> int:
        """How many requests the client made, optionally of one method and one resource (e.g. "Invoices",
        "Login"; the collection path, so every page of a walk counts)."""
        wanted = None if resource is None else f"{self.prefix}/{resource}"
        with self.lock:
            return sum(1 for entry in self.requests
                       if (method is None or entry.method == method)
                       and (wanted is None or unquote(urlsplit(entry.path).path) == wanted))

    @property
    def logins(self) -> int:
        return self.count_requests("POST", "Login")

    @property
    def logouts(self) -> int:
        return self.count_requests("POST", "Logout")

    def reset_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.faults, name):
                    raise ValueError(f"unknown fault {name!r}: use {', '.join(asdict(self.faults))}")
                setattr(self.faults, name, type(getattr(self.faults, name))(value))
            return asdict(self.faults)


def _b1_error_body(version: str, code: int, message: str) -> dict:
    if version == "v1":
        return {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}
    return {"error": {"code": str(code), "message": message, "details": [{"code": "", "message": ""}]}}


_PATH = re.compile(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<key>.*)\))?(?P<count>/\$count)?$")


def _parse_key(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"Invalid key '{text}'") from None


class SapB1Handler(SimulatorHandler):
    """Routes Service Layer and admin requests to the simulator object."""

    server: SapB1Simulator

    # ----------------------------------------------------------------------- replies

    def send_b1(self, status: int, payload: Any = None, *, content_type: str | None = None,
                headers: Iterable[tuple[str, str]] = (), raw: bytes | None = None) -> None:
        """Like `reply`, but allows repeated headers (two Set-Cookie lines) and B1 content types."""
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self._current.status = status
        self.send_response(status)
        if data:
            self.send_header("Content-Type", content_type or CONTENT_TYPES[self.server.version])
        if self.server.version == "v2":
            self.send_header("OData-Version", "4.0")
        else:
            self.send_header("DataServiceVersion", "3.0")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def send_error_b1(self, failure: B1Failure) -> None:
        self.send_b1(failure.status, _b1_error_body(self.server.version, failure.code, failure.message))

    def reply_fault(self, status: int) -> None:
        """Injected 5xx in B1's shape; a 500 is the failing-node error (code 407)."""
        code, message = (407, "Service is unavailable on this node") if status == 500 else \
            (status, "Service Unavailable (injected fault)")
        self.send_error_b1(B1Failure(status, code, message))

    def _metadata(self, fragment: str) -> dict[str, str]:
        if self.server.version == "v1":
            return {"odata.metadata": f"{self.server.base_url}/$metadata#{fragment}"}
        return {"@odata.context": f"{self.server.base_url}/$metadata#{fragment}"}

    def _entity_suffix(self) -> str:
        return "/@Element" if self.server.version == "v1" else "/$entity"

    # ----------------------------------------------------------------------- routing

    def route(self, method: str, path: str, body: bytes) -> None:
        split = urlsplit(path)
        query = {name: values[-1] for name, values in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            if split.path.startswith("/_admin/"):
                self._admin(method, split.path[len("/_admin/"):], query, body)
                return
            if not split.path.startswith(self.server.prefix + "/"):
                raise B1Failure(404, -1000, "Unrecognized resource path.")
            if self.apply_faults():
                return
            self._service(method, unquote(split.path[len(self.server.prefix) + 1:]), query, body)
        except B1Failure as failure:
            self.send_error_b1(failure)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # a simulator bug must answer, not hang the client
            self.send_error_b1(B1Failure(500, -1, f"Internal simulator error: {type(exc).__name__}: {exc}"))

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise bad_request(f"Invalid JSON body: {exc.msg}") from None
        if not isinstance(value, dict):
            raise bad_request("The request body must be a JSON object")
        return value

    def _cookies(self) -> dict[str, str]:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in cookie.items()}

    def _service(self, method: str, resource: str, query: dict[str, str], body: bytes) -> None:
        sim = self.server
        if resource == "Login" and method == "POST":
            self._login(body)
            return
        match = _PATH.match(resource)
        known = ("Logout", "UserTablesMD", "UserFieldsMD", *ENTITIES)
        if match is None or not (match.group("set") in known or match.group("set").startswith("U_")):
            raise B1Failure(404, -1000, "Unrecognized resource path.")
        session = sim.use_session(self._cookies().get("B1SESSION"))
        if resource == "Logout" and method == "POST":
            with sim.lock:
                sim.sessions.pop(session.session_id, None)
            self.send_b1(204)
            return
        name, key_text, count = match.group("set"), match.group("key"), match.group("count")
        key = None if key_text is None else _parse_key(key_text)
        if name in ("UserTablesMD", "UserFieldsMD"):
            self._metadata_tables(method, name, key, body)
        elif name in ENTITIES or (name.startswith("U_") and name[2:] in sim.user_tables):
            if key is None and method == "GET":
                self._collection(name, query, bool(count))
            elif key is None and method == "POST":
                self._create(name, body)
            elif key is not None and not count:
                self._single(method, name, key, body, query)
            else:
                raise B1Failure(405, -1000, f"Method {method} is not allowed on {resource}")
        elif name.startswith("U_"):
            raise B1Failure(404, -1000, f"Unrecognized resource path: {name} (the user table does not exist)")
        else:
            raise B1Failure(404, -1000, "Unrecognized resource path.")

    def _login(self, body: bytes) -> None:
        sim = self.server
        credentials = self._json_body(body)
        with sim.lock:
            overlapping = sim._logins_in_flight > 0
            sim._logins_in_flight += 1
        try:
            if sim.login_latency_s:
                time.sleep(sim.login_latency_s)
            if overlapping and sim.reject_parallel_logins:
                raise B1Failure(500, 299, "SAML Login Failed")
            sim.check_login(credentials.get("CompanyDB"), credentials.get("UserName"),
                            credentials.get("Password"))
            session = sim.new_session()
        finally:
            with sim.lock:
                sim._logins_in_flight -= 1
        payload = {**self._metadata("B1Sessions" + self._entity_suffix()), "SessionId": session.session_id,
                   "Version": "1000110", "SessionTimeout": max(1, math.ceil(sim.session_timeout_s / 60))}
        self.send_b1(200, payload, headers=[("Set-Cookie", f"B1SESSION={session.session_id}; HttpOnly"),
                                            ("Set-Cookie", f"ROUTEID={sim.route_id}; path=/b1s")])

    def _collection(self, name: str, query: dict[str, str], count_only: bool) -> None:
        sim = self.server
        if count_only:
            page, extras = sim.query(name, {**{k: v for k, v in query.items() if k == "$filter"},
                                            "$inlinecount": "allpages"}, page_size=1)
            self.send_b1(200, raw=str(extras["count"]).encode(), content_type="text/plain;charset=utf-8")
            return
        page_size, applied = self._page_size()
        page, extras = sim.query(name, query, page_size)
        v1 = sim.version == "v1"
        payload: dict[str, Any] = self._metadata(name)
        if "count" in extras:
            payload["odata.count" if v1 else "@odata.count"] = extras["count"]
        payload["value"] = page
        if "next" in extras:
            payload["odata.nextLink" if v1 else "@odata.nextLink"] = sim.next_link_base + extras["next"]
        headers = [("Preference-Applied", f"odata.maxpagesize={page_size}")] if applied else []
        self.send_b1(200, payload, headers=headers)

    def _page_size(self) -> tuple[int, bool]:
        prefer = self.headers.get("Prefer") or ""
        match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if match:
            return int(match.group(1)), True
        header = self.headers.get("B1S-PageSize")
        if header and header.strip().isdigit():
            return int(header), False
        return DEFAULT_PAGE_SIZE, False

    def _create(self, name: str, body: bytes) -> None:
        sim = self.server
        values = self._json_body(body)
        if name.startswith("U_"):
            row = sim.create_udt_row(name[2:], values)
            self.send_b1(201, {**self._metadata(name + self._entity_suffix()), **row})
            return
        try:
            record = sim.add_document(name, values)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        spec = ENTITIES[name]
        self.send_b1(201, {**self._metadata(name + self._entity_suffix()),
                           **sim.render(record, spec.fields, None)})

    def _single(self, method: str, name: str, key: Any, body: bytes, query: dict[str, str]) -> None:
        sim = self.server
        if name.startswith("U_"):
            self._udt_single(method, name[2:], key, body)
            return
        spec = ENTITIES[name]
        if method == "GET":
            select = parse_select(query["$select"], spec.fields, name) if query.get("$select") else None
            record = sim.get_record(name, key)
            if record is None:
                raise not_found()
            self.send_b1(200, {**self._metadata(name + self._entity_suffix()),
                               **sim.render(record, spec.fields, select)})
        elif method == "PATCH":
            if sim.get_record(name, key) is None:
                raise not_found()
            try:
                sim.update_document(name, key, self._json_body(body))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            self.send_b1(204)
        else:
            raise B1Failure(405, -1000, f"Method {method} is not allowed on {name}({key!r})")

    def _udt_single(self, method: str, table: str, key: Any, body: bytes) -> None:
        sim = self.server
        with sim.lock:
            udt = sim._udt(table)
            row = udt.rows.get(str(key))
            if row is None:
                raise not_found()
            if method == "GET":
                self.send_b1(200, {**self._metadata(f"U_{table}{self._entity_suffix()}"), **row})
            elif method == "PATCH":
                values = sim._check_udt_values(udt, self._json_body(body))
                if values.get("Code", row["Code"]) != row["Code"]:
                    raise bad_request("Code is the key and cannot be changed")
                row.update(values)
                self.send_b1(204)
            elif method == "DELETE":
                del udt.rows[str(key)]
                self.send_b1(204)
            else:
                raise B1Failure(405, -1000, f"Method {method} is not allowed on U_{table}")

    def _metadata_tables(self, method: str, name: str, key: Any, body: bytes) -> None:
        sim = self.server
        if method == "POST" and key is None:
            values = self._json_body(body)
            meta = sim.create_user_table(values) if name == "UserTablesMD" else sim.create_user_field(values)
            self.send_b1(201, {**self._metadata(name + self._entity_suffix()), **meta})
            return
        if method != "GET":
            raise B1Failure(405, -1000, f"Method {method} is not allowed on {name}")
        with sim.lock:
            if name == "UserTablesMD":
                rows = [dict(udt.meta) for udt in sim.user_tables.values()]
                key_field = "TableName"
            else:
                rows = [dict(meta) for udt in sim.user_tables.values() for meta in udt.fields.values()]
                key_field = "Name"
        if key is not None:
            found = [row for row in rows if row[key_field] == key]
            if not found:
                raise not_found()
            self.send_b1(200, {**self._metadata(name + self._entity_suffix()), **found[0]})
            return
        self.send_b1(200, {**self._metadata(name), "value": rows})

    # ----------------------------------------------------------------------- admin over HTTP

    def _admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        """JSON admin API for a simulator started in another process (the demo, benchmarks)."""
        parts = [unquote(part) for part in path.split("/") if part]
        values = self._json_body(body) if body else {}
        try:
            result = self._admin_action(method, parts, query, values)
        except (ValueError, TypeError) as exc:
            self.reply(400, {"error": str(exc)})
            return
        except KeyError as exc:
            self.reply(404, {"error": str(exc.args[0]) if exc.args else "not found"})
            return
        if result is None:
            self.reply(404, {"error": f"no admin endpoint {method} /_admin/{path}",
                             "endpoints": ADMIN_ENDPOINTS})
            return
        self.reply(200, result)

    def _admin_action(self, method: str, parts: list[str], query: dict[str, str],
                      values: dict[str, Any]) -> Any:
        sim = self.server
        head = parts[0] if parts else ""
        if head == "documents" and len(parts) == 2 and method == "POST":
            return sim.add_document(parts[1], values, apply_payment=query.get("apply_payment") != "false")
        if head == "documents" and len(parts) == 3 and method == "PATCH":
            key: Any = int(parts[2]) if parts[1] != "Items" else parts[2]
            return sim.update_document(parts[1], key, values)
        if head == "documents" and len(parts) == 3 and method == "DELETE":
            sim.delete_record(parts[1], int(parts[2]) if parts[1] != "Items" else parts[2])
            return {"deleted": True}
        if head == "corrupt" and len(parts) == 3 and method == "POST":
            return sim.corrupt_record(parts[1], int(parts[2]) if parts[1] != "Items" else parts[2], values)
        if head == "documents" and len(parts) == 3 and method == "GET":
            key = int(parts[2]) if parts[1] != "Items" else parts[2]
            record = sim.get_record(parts[1], key)
            if record is None:
                raise KeyError(f"{parts[1]}({parts[2]}) does not exist")
            return record
        if head == "stock" and method == "POST":
            return sim.set_item_stock(str(values["item_code"]), str(values["warehouse"]),
                                      float(values["in_stock"]))
        if head == "clock":
            if method == "POST":
                sim.advance_clock(float(values.get("advance_s", 0)))
            now = sim.clock.now()
            return {"now": now.isoformat(), "date": now.date().isoformat(), "time": now.strftime("%H:%M:%S"),
                    "timezone": sim.timezone}
        if head == "expire_sessions" and method == "POST":
            return {"expired": sim.expire_sessions()}
        if head == "faults":
            return sim.set_faults(**values) if method == "POST" else asdict(sim.faults)
        if head == "requests":
            if method in ("DELETE", "POST"):
                sim.reset_requests()
                return {"reset": True}
            return {"total": len(sim.requests), "logins": sim.logins, "logouts": sim.logouts,
                    "counts": sim.request_counts()}
        if head == "generate_invoices" and method == "POST":
            return sim.generate_invoices(int(values.get("count", 0)), str(values.get("entity", "Invoices")))
        if head == "udt" and len(parts) == 2 and method == "GET":
            return {"table": parts[1], "rows": sim.udt_rows(parts[1])}
        if head == "info" and method == "GET":
            return {"base_url": sim.base_url, "version": sim.version, "company_db": sim.company_db,
                    "username": sim.username, "timezone": sim.timezone, "expiry_mode": sim.expiry_mode,
                    "session_timeout_s": sim.session_timeout_s,
                    "records": {name: len(rows) for name, rows in sim.data.items()}}
        return None


ADMIN_ENDPOINTS = [
    "GET /_admin/info",
    "POST /_admin/documents/{Entity}[?apply_payment=false] {fields}",
    "GET|PATCH|DELETE /_admin/documents/{Entity}/{key}",
    "POST /_admin/corrupt/{Entity}/{key} {raw fields, unchecked}",
    "POST /_admin/stock {item_code, warehouse, in_stock}",
    "GET|POST /_admin/clock {advance_s}",
    "POST /_admin/expire_sessions",
    "GET|POST /_admin/faults {latency_s, fail_next, fail_status, fail_all, drop_next}",
    "GET|DELETE /_admin/requests",
    "POST /_admin/generate_invoices {count, entity}",
    "GET /_admin/udt/{TABLE}",
]


# ------------------------------------------------------------------------------------------- CLI


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", choices=["v1", "v2"], default="v1", help="Service Layer version")
    parser.add_argument("--session-timeout-min", type=float, default=30.0, help="idle session timeout")
    parser.add_argument("--expiry-mode", choices=["301", "5002"], default="301",
                        help="how an expired session answers: 401/301 (real SL) or the -5002 form")
    parser.add_argument("--timezone", default="UTC", help="the simulated B1 server's time zone")
    parser.add_argument("--no-seed", action="store_true", help="start without demo data")


def _build(args: argparse.Namespace) -> SapB1Simulator:
    company_db = os.environ.get("B1_COMPANY_DB") or DEMO_COMPANY_DB
    username = os.environ.get("B1_USERNAME") or DEMO_USERNAME
    password = os.environ.get("B1_PASSWORD") or DEMO_PASSWORD
    shown = "(from B1_PASSWORD)" if os.environ.get("B1_PASSWORD") else f"{DEMO_PASSWORD} (demo)"
    print(f"B1 credentials: CompanyDB={company_db} UserName={username} Password={shown}", file=sys.stderr,
          flush=True)
    return SapB1Simulator(args.host, args.port, args.version, company_db=company_db, username=username,
                          password=password, session_timeout_s=args.session_timeout_min * 60,
                          expiry_mode=args.expiry_mode, timezone=args.timezone, seed=not args.no_seed)


def main(argv: list[str] | None = None) -> None:
    run_cli("SAP Business One Service Layer simulator", _build, _add_arguments, argv)


if __name__ == "__main__":
    main()
