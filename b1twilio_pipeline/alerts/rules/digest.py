"""Digests: a rule's alerts for one person gathered into one SMS per period (`every_minutes`, counted from
the first alert) or per day at a time (`at`), listing up to `max_items` documents and "and N more"."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from b1twilio_pipeline.alerts.rules.fields import Clock, fail

MAX_DIGEST_MINUTES = 24 * 60


class Digest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every_minutes: Annotated[int, Field(ge=1, le=MAX_DIGEST_MINUTES)] | None = None
    at: Clock | None = Field(None, description="quoted \"HH:MM\": one digest a day at this time")
    max_items: Annotated[int, Field(ge=1, le=50)] = 5

    @model_validator(mode="after")
    def _one_schedule(self) -> Digest:
        if (self.every_minutes is None) == (self.at is None):
            raise fail("needs exactly one of `every_minutes` (e.g. 30) and `at` (e.g. \"08:30\")")
        return self

    def until(self, first: datetime, tz: ZoneInfo) -> datetime:
        """When the digest opened by an alert at `first` goes out."""
        if self.every_minutes is not None:
            return first + timedelta(minutes=self.every_minutes)
        assert self.at is not None
        local = first.astimezone(tz)
        due = datetime.combine(local.date(), self.at, tzinfo=tz)
        return due if due > local else datetime.combine(local.date() + timedelta(days=1), self.at, tzinfo=tz)

    def text(self) -> str:
        when = f"every {self.every_minutes} min" if self.every_minutes else f"daily at {self.at:%H:%M}"
        return f"one digest SMS {when} (up to {self.max_items} documents listed)"
