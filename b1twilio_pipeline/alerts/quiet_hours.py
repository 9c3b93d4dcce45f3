"""Quiet hours: a daily wall-clock window in a time zone during which nobody is rung; SMS are held until it
ends, and calls too unless the rule is urgent.

Wall-clock semantics on purpose: "no calls 20:00-07:00" means local time, so across a DST change the
window is one hour longer or shorter in absolute time, exactly as the person living there experiences it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from b1twilio_pipeline.alerts.rules.fields import Clock


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class QuietHours:
    """Window [start, end) in local time; `end < start` means it runs overnight (20:00 -> 07:00). In the
    rules file: `quiet_hours: {start: "20:00", end: "07:00"}`."""

    start: Clock
    end: Clock

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours start and end are equal: the window would be empty or all day")

    @property
    def overnight(self) -> bool:
        return self.end < self.start

    def contains(self, dt: datetime, tz: ZoneInfo) -> bool:
        """Whether the aware instant `dt` falls inside the window as seen on a wall clock in `tz`."""
        local = _local(dt, tz).time().replace(tzinfo=None)
        if self.overnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end

    def next_end(self, dt: datetime, tz: ZoneInfo) -> datetime:
        """When sending is allowed again (aware, in `tz`); `dt` itself when it is outside the window."""
        if not self.contains(dt, tz):
            return dt
        local = _local(dt, tz)
        end_day: date = local.date()
        if self.overnight and local.time().replace(tzinfo=None) >= self.start:
            end_day += timedelta(days=1)
        candidate = datetime.combine(end_day, self.end, tzinfo=tz)
        # An ambiguous end time (DST fall-back) has two instants: take the first one after `dt`. Compare in
        # UTC: two datetimes sharing one tzinfo are compared by wall time, ignoring `fold`.
        for fold in (0, 1):
            chosen = candidate.replace(fold=fold)
            if chosen.astimezone(UTC) > dt.astimezone(UTC):
                return chosen
        return dt

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _local(dt: datetime, tz: ZoneInfo) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("quiet hours need an aware datetime (with a time zone), got a naive one")
    return dt.astimezone(tz)
