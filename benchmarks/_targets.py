"""Targets printed beside the daemon-level figures, and how a figure is marked against one.

They are benchmark targets, not tests: a figure that misses one is reported "not met", nothing fails.
Every target is an upper bound ("at most"), so one comparison serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1_000_000


@dataclass(frozen=True)
class Target:
    text: str
    limit: float

    def verdict(self, value: float | None) -> str:
        return "met" if value is not None and value <= self.limit else "not met"

    def cell(self, value: float | None, shown: str) -> str:
        """The figure as shown, then its verdict."""
        return f"{shown} ({self.verdict(value)})"


IDLE_RUNS_PER_HOUR = Target("≤ 6 runs/h", 6)
IDLE_CPU_ABOVE_FLOOR = Target("≤ 60 CPU s/h above the floor", 60)
IDLE_STORAGE_PER_DAY = {"sqlite": Target("≤ 50 MB/idle day", 50 * MB),
                        "postgres": Target("≤ 10 MB/idle day", 10 * MB)}
LATENCY_MEDIAN = {"polling": Target("median ≤ 30 s", 30), "webhooks": Target("median ≤ 10 s with webhooks", 10)}
LATENCY_P95 = Target("p95 ≤ 60 s", 60)
BURST_SECONDS = {100: Target("all 100 within 60 s", 60), 1000: Target("all 1,000 within 5 min", 300)}
DUPLICATES = Target("0 duplicates", 0)


def b1_requests_target(baseline_per_hour: float | None) -> Target | None:
    """Idle B1 requests may not exceed the baseline's, measured in the same run."""
    if baseline_per_hour is None:
        return None
    return Target(f"≤ baseline's ({baseline_per_hour:,.0f}/h)", baseline_per_hour)


def burst_target(size: int) -> Target:
    """The named sizes have their targets; another size is held to the 100-notification pace (60 s)."""
    return BURST_SECONDS.get(size, Target(f"all {size:,} within 60 s (the 100 target)", 60))
