"""Polling cadence and windows (SPEC section 3): 15-minute windows in the company's time zone, polled
every minute with the still-open window as a partition (`end_offset=1`), all configurable."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from b1twilio_pipeline.settings import int_setting, setting


@dataclass(frozen=True)
class PollingSettings:
    window_minutes: int
    poll_cron: str
    partitions_start: str
    refresh_minutes: int
    timezone: str

    @classmethod
    def from_settings(cls, timezone: str) -> PollingSettings:
        return cls(
            window_minutes=int_setting("B1TWILIO_WINDOW_MINUTES", 15, allowed=(1, 2, 3, 4, 5, 6, 10, 12, 15,
                                                                                   20, 30, 60)),
            poll_cron=setting("B1TWILIO_POLL_CRON", "* * * * *") or "* * * * *",
            partitions_start=setting("B1TWILIO_PARTITIONS_START", "2026-11-01-00:00") or "2026-11-01-00:00",
            refresh_minutes=int_setting("B1TWILIO_STATE_REFRESH_MINUTES", 30),
            timezone=timezone,
        )

    def partitions_def(self) -> dg.TimeWindowPartitionsDefinition:
        minutes = self.window_minutes
        cron = f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=cron, start=self.partitions_start, fmt="%Y-%m-%d-%H:%M",
            timezone=self.timezone, end_offset=1,
        )

