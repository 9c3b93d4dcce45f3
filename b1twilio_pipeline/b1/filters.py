"""OData `$filter` builders for polling the B1 Service Layer.

B1 stores UpdateDate/UpdateTime in the B1 server's local time, as a date plus a time string, and the
Service Layer compares times to the minute only. So an incremental window cannot be one timestamp
comparison: it is a date/time pair comparison built here, in the server's time zone, read with an
overlap and deduplicated by key downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def quote(value: object) -> str:
    """An OData string literal: wrapped in single quotes, a quote inside doubled (`O'Neil` -> `'O''Neil'`)."""
    return "'" + str(value).replace("'", "''") + "'"


def and_(*clauses: str | None) -> str | None:
    """Join non-empty filter clauses with `and`, each parenthesised; None when there are none."""
    parts = [clause for clause in clauses if clause]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else " and ".join(f"({part})" for part in parts)


def _zone(b1_timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(b1_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown B1 time zone {b1_timezone!r}: set B1_TIMEZONE to an IANA name such as 'Europe/Berlin'"
        ) from None


def _local_minute(moment: datetime, zone: ZoneInfo, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(zone).replace(second=0, microsecond=0)


def update_window_filter(start: datetime, end: datetime, *, b1_timezone: str,
                         overlap: timedelta = timedelta(minutes=1), date_field: str = "UpdateDate",
                         time_field: str = "UpdateTime") -> str:
    """Filter for records changed in the window [start, end), as the Service Layer can express it.

    Both bounds are converted to the B1 server's local time (`b1_timezone`), and the start is moved back
    by `overlap` so a change stamped on a window edge, or late by clock skew, is read again by the next
    window too. Because SL compares times to the minute only, both edges are **inclusive at minute
    resolution**: `UpdateTime ge 'HH:MM'` of the lowered start matches every second of that minute, and
    `UpdateTime le 'HH:MM'` of the end matches every second of the end's minute. The result is a superset
    of [start, end): callers deduplicate by key (DocEntry/ItemCode), which makes the overlap harmless.

    Produces `(D gt 'D1' or (D eq 'D1' and T ge 'HH:MM')) and (D lt 'D2' or (D eq 'D2' and T le 'HH:MM'))`.
    """
    zone = _zone(b1_timezone)
    low = _local_minute(start, zone, "start") - overlap
    low = low.replace(second=0, microsecond=0)
    high = _local_minute(end, zone, "end")
    if high < low:
        raise ValueError(f"window end {end.isoformat()} is before its start {start.isoformat()}")
    d1, t1 = quote(low.date().isoformat()), quote(low.strftime("%H:%M"))
    d2, t2 = quote(high.date().isoformat()), quote(high.strftime("%H:%M"))
    lower = f"({date_field} gt {d1} or ({date_field} eq {d1} and {time_field} ge {t1}))"
    upper = f"({date_field} lt {d2} or ({date_field} eq {d2} and {time_field} le {t2}))"
    return f"{lower} and {upper}"


def changed_since_filter(since: datetime, *, b1_timezone: str, date_field: str = "UpdateDate",
                         time_field: str = "UpdateTime") -> str:
    """Records stamped at or after `since` (to the minute, in the B1 server's local time): the lower half of
    `update_window_filter`, for asking B1 what changed since a moment."""
    low = _local_minute(since, _zone(b1_timezone), "since")
    day, minute = quote(low.date().isoformat()), quote(low.strftime("%H:%M"))
    return f"{date_field} gt {day} or ({date_field} eq {day} and {time_field} ge {minute})"


def date_window_filter(field: str, start_date: date, end_date: date) -> str:
    """`field` between two dates, both inclusive, for entities without change stamps (IncomingPayments by
    DocDate): poll with an overlap of at least a day and deduplicate by DocEntry."""
    if isinstance(start_date, datetime) or isinstance(end_date, datetime):
        raise ValueError("date_window_filter takes dates: convert datetimes to the B1 server's local date")
    if end_date < start_date:
        raise ValueError(f"end date {end_date} is before start date {start_date}")
    return f"{field} ge {quote(start_date.isoformat())} and {field} le {quote(end_date.isoformat())}"


def keys_filter(field: str, keys: Sequence[int | str]) -> str:
    """The records whose key `field` is one of `keys` (`DocEntry eq 12 or DocEntry eq 15`): integer keys as
    numbers, anything else as quoted strings. The Service Layer's `$filter` has no confirmed `in`, so the
    keys are joined with `or`; callers keep the list short (a URL has a length limit)."""
    if not keys:
        raise ValueError(f"keys_filter needs at least one {field}")
    literals = [str(key) if isinstance(key, int) else quote(key) for key in keys]
    return " or ".join(f"{field} eq {literal}" for literal in literals)
