"""Cadence and windows: 15-minute windows in B1TWILIO_TIMEZONE (the still-open window is a partition
too, `end_offset=1`, so a change is read the moment it is seen), B1 asked what changed every 30 seconds,
open invoices and stock refreshed every 30 minutes; all configurable."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from b1twilio_pipeline.core import settings


@dataclass(frozen=True)
class PollingSettings:
    window_minutes: int
    partitions_start: str
    refresh_minutes: int
    change_check_seconds: int
    timezone: str

    @classmethod
    def from_settings(cls) -> PollingSettings:
        now = settings.current()
        return cls(window_minutes=now.b1twilio_window_minutes, partitions_start=now.b1twilio_partitions_start,
                   refresh_minutes=now.b1twilio_state_refresh_minutes,
                   change_check_seconds=now.b1twilio_change_check_seconds, timezone=now.company_timezone)

    def partitions_def(self) -> dg.TimeWindowPartitionsDefinition:
        minutes = self.window_minutes
        cron = f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"
        return dg.TimeWindowPartitionsDefinition(cron_schedule=cron, start=self.partitions_start,
                                                 fmt="%Y-%m-%d-%H:%M", timezone=self.timezone, end_offset=1)

    @property
    def refresh_cron(self) -> str:
        """The state refresh as a cron schedule (every N minutes, or every N hours on the hour)."""
        minutes = self.refresh_minutes
        if minutes < 60:
            return f"*/{minutes} * * * *"
        if minutes < 1440:
            return f"0 */{minutes // 60} * * *"
        return "15 0 * * *"
