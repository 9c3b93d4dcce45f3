"""Cadence and windows: 15-minute windows in B1TWILIO_TIMEZONE (the still-open window is a partition
too, `end_offset=1`, so a change is read the moment it is seen), B1 asked what changed every 30 seconds,
open invoices and stock refreshed every hour; all configurable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg

from b1twilio_pipeline.core import settings

FORMAT = "%Y-%m-%d-%H:%M"


@dataclass(frozen=True)
class PollingSettings:
    window_minutes: int
    partitions_start: str | None  # None: the window of the deployment's first start
    refresh_minutes: int
    change_check_seconds: int
    timezone: str

    @classmethod
    def from_settings(cls) -> PollingSettings:
        now = settings.current()
        return cls(window_minutes=now.b1twilio_window_minutes, partitions_start=now.b1twilio_partitions_start,
                   refresh_minutes=now.b1twilio_state_refresh_minutes,
                   change_check_seconds=now.b1twilio_change_check_seconds, timezone=now.company_timezone)

    def partitions_def(self, first_start: datetime | None = None) -> dg.TimeWindowPartitionsDefinition:
        """The windows, from B1TWILIO_PARTITIONS_START, else from the window holding `first_start` (the
        deployment's, see `first_start`; None for a one-off question about the present: now)."""
        minutes = self.window_minutes
        cron = f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"
        start = self.partitions_start or self.window_start(first_start or datetime.now(UTC))
        return dg.TimeWindowPartitionsDefinition(cron_schedule=cron, start=start, fmt=FORMAT,
                                                 timezone=self.timezone, end_offset=1)

    def window_start(self, moment: datetime) -> str:
        """The key of the window holding `moment`."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        minute = local.minute - local.minute % self.window_minutes if self.window_minutes < 60 else 0
        return local.replace(minute=minute, second=0, microsecond=0).strftime(FORMAT)

    @property
    def refresh_cron(self) -> str:
        """The state refresh as a cron schedule (every N minutes, or every N hours on the hour)."""
        minutes = self.refresh_minutes
        if minutes < 60:
            return f"*/{minutes} * * * *"
        if minutes < 1440:
            return f"0 */{minutes // 60} * * *"
        return "15 0 * * *"
