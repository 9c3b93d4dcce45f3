"""The OData query options the Service Layer simulator understands, and server-driven paging.

`$filter` is the subset a Service Layer accepts and the pipeline's client sends: one field compared with a
literal (`eq ne gt ge lt le`), `and`, `or`, `not`, parentheses, quoted strings (with '' for a quote),
numbers and `null`. There is no arithmetic, no function and no comparison of two fields. Times compare to
the minute only, as the real Service Layer does ("only the HOUR/MINUTE parts are effective"). Anything
else is a B1-style 400 error, never a crash. Next links are relative, page with `$skip` and repeat
`$filter`, `$select` and `$orderby` as sent; `$top` carries across pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from b1twilio_sim.sap_b1_data import FieldTypes
from b1twilio_sim.sap_b1_errors import bad_request

Predicate = Callable[[dict], bool]
OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$inlinecount", "$count"})
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)(?![A-Za-z_])"
                    r"|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))")
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?Z?)?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2})?$")
_NULL = object()


def norm_date(text: str) -> str:
    """`YYYY-MM-DD` from a v1 date or a v2 date-time literal."""
    match = _DATE.match(text)
    if not match:
        raise bad_request(f"Invalid date literal '{text}': use 'YYYY-MM-DD'")
    return match.group(1)


def norm_time(text: str) -> str:
    """`HH:MM`: times compare to the minute only."""
    match = _TIME.match(text)
    if not match:
        raise bad_request(f"Invalid time literal '{text}': use 'HH:MM' or 'HH:MM:SS'")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _sort_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return norm_time(value)
    if kind == "date":
        return value[:10]
    return value


class FilterParser:
    """Recursive-descent parser of `$filter` into a predicate over stored records."""

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
            return norm_date(value)
        if field_type == "time":
            return norm_time(value)
        return value


def parse_select(text: str, fields: FieldTypes, entity: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in fields:
            raise bad_request(f"Property '{name}' of '{entity}' is invalid")
    return names


def _parse_orderby(text: str, fields: FieldTypes, entity: str) -> tuple[tuple[str, bool], ...]:
    """`$orderby=F1 desc,F2` -> ((field, descending), ...)."""
    order: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise bad_request(f"Invalid $orderby clause '{part.strip()}'")
        if fields.get(words[0]) in (None, "coll"):
            raise bad_request(f"Property '{words[0]}' of '{entity}' is invalid for $orderby")
        order.append((words[0], len(words) == 2 and words[1] == "desc"))
    return tuple(order)


def _int_option(options: Mapping[str, str], name: str) -> int | None:
    if name not in options:
        return None
    try:
        value = int(options[name])
    except ValueError:
        raise bad_request(f"Invalid value '{options[name]}' for {name}") from None
    if value < 0:
        raise bad_request(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class Window:
    """The rows `[start, stop)` of the matching records that one page shows, and its next link."""

    start: int
    stop: int
    next_link: str | None


@dataclass(frozen=True)
class CollectionQuery:
    """The query options of one collection read, checked against the entity's fields."""

    entity: str
    fields: FieldTypes
    filter: str | None
    order: tuple[tuple[str, bool], ...]
    select: list[str] | None
    top: int | None
    skip: int
    count: bool
    sent: dict[str, str]  # $select, $filter, $orderby as sent: next links repeat them

    @classmethod
    def parse(cls, entity: str, options: Mapping[str, str], fields: FieldTypes, key: str) -> CollectionQuery:
        for option in options:
            if option.startswith("$") and option not in OPTIONS:
                raise bad_request(f"Query option '{option}' is not supported")
        top, skip = _int_option(options, "$top"), _int_option(options, "$skip") or 0
        select = parse_select(options["$select"], fields, entity) if options.get("$select") else None
        order = _parse_orderby(options["$orderby"], fields, entity) if options.get("$orderby") else ((key, False),)
        count = options.get("$inlinecount") == "allpages" or options.get("$count") == "true"
        sent = {name: options[name] for name in ("$select", "$filter", "$orderby") if options.get(name)}
        return cls(entity, fields, options.get("$filter") or None, order, select, top, skip, count, sent)

    def matching(self, rows: list[dict]) -> list[dict]:
        """The rows that pass `$filter`, in `$orderby` order (by the key when none is given)."""
        if self.filter:
            predicate = FilterParser(self.filter, self.fields, self.entity).parse()
            rows = [row for row in rows if predicate(row)]
        result = list(rows)
        for name, descending in reversed(self.order):
            kind = self.fields[name]

            def sort_key(record: dict, name: str = name, kind: str = kind) -> tuple[bool, Any]:
                value = _sort_value(kind, record.get(name))
                return (value is not None, value if value is not None else 0)

            result.sort(key=sort_key, reverse=descending)
        return result

    def window(self, matched: int, page_size: int, *, link_full_pages: bool = False) -> Window:
        """Server-driven paging over `matched` rows; `page_size` 0 turns paging off. `link_full_pages`
        gives every full page a next link, even when nothing follows (the end is then an empty page)."""
        top, skip = self.top, self.skip
        limit = matched - skip if top is None else min(top, max(0, matched - skip))
        take = limit if page_size == 0 else min(page_size, max(0, limit))
        shown = max(0, take)
        more = take < limit or (link_full_pages and page_size > 0 and shown == page_size
                                and (top is None or take < top))
        if not (page_size and more):
            return Window(skip, skip + shown, None)
        params = dict(self.sent)
        if top is not None:
            params["$top"] = str(top - take)
        params["$skip"] = str(skip + take)
        return Window(skip, skip + shown, f"{self.entity}?" + urlencode(params, quote_via=quote, safe="$',()"))
