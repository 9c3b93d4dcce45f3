"""Cadence and windows: 15-minute windows in the company's time zone (the still-open window is a partition
too, `end_offset=1`, so a change is read the moment it is seen), B1 asked what changed every 30 seconds,
open invoices and stock refreshed every 30 minutes; all configurable."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from b1twilio_pipeline.core.settings import ConfigurationError, int_setting, setting

WINDOW_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)
REFRESH_MINUTES = (5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)
# When an overdue invoice becomes one more day overdue: reminders are evaluated once after midnight.
CALENDAR_CRON = "5 0 * * *"


@dataclass(frozen=True)
class PollingSettings:
    window_minutes: int
    partitions_start: str
    refresh_minutes: int
    change_check_seconds: int
    timezone: str

    @classmethod
    def from_settings(cls, timezone: str) -> PollingSettings:
        return cls(
            window_minutes=int_setting("B1TWILIO_WINDOW_MINUTES", 15, allowed=WINDOW_MINUTES),
            partitions_start=setting("B1TWILIO_PARTITIONS_START", "2026-11-01-00:00") or "2026-11-01-00:00",
            refresh_minutes=int_setting("B1TWILIO_STATE_REFRESH_MINUTES", 30, allowed=REFRESH_MINUTES),
            change_check_seconds=int_setting("B1TWILIO_CHANGE_CHECK_SECONDS", 30),
            timezone=timezone,
        )

    def partitions_def(self) -> dg.TimeWindowPartitionsDefinition:
        minutes = self.window_minutes
        cron = f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"
        try:
            return dg.TimeWindowPartitionsDefinition(
                cron_schedule=cron, start=self.partitions_start, fmt="%Y-%m-%d-%H:%M",
                timezone=self.timezone, end_offset=1,
            )
        except ValueError:
            raise ConfigurationError(f"B1TWILIO_PARTITIONS_START={self.partitions_start!r} is not a window "
                                     "start: use YYYY-MM-DD-HH:MM, e.g. 2026-11-01-00:00") from None

    @property
    def refresh_cron(self) -> str:
        """The state refresh as a cron schedule (every N minutes, or every N hours on the hour)."""
        minutes = self.refresh_minutes
        if minutes < 60:
            return f"*/{minutes} * * * *"
        if minutes < 1440:
            return f"0 */{minutes // 60} * * *"
        return "15 0 * * *"
