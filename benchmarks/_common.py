"""Shared plumbing of the benchmarks: result tables, ratios, machine info and memory probes.

Every benchmark returns a `BenchResult`: rows of (metric, baseline, optimized, ratio) for the markdown
table, free-text notes saying how the numbers were obtained, and `facts` (raw numbers) that the smoke
test asserts on. Ratios are always baseline / optimized, so "12.0x" means the optimized path needs twelve
times less of that metric (requests, seconds, megabytes). The daemon-level benchmarks compare more than
two designs against targets, so they give their own `header` and `cells` instead of rows.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One line of a benchmark table; values are already formatted for reading."""

    metric: str
    baseline: str
    optimized: str
    ratio: str


@dataclass
class BenchResult:
    """What one benchmark measured, ready to print, plus raw facts for assertions."""

    title: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    header: tuple[str, ...] = ("metric", "baseline", "optimized", "ratio")
    cells: list[tuple[str, ...]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|---" + "|---:" * (len(self.header) - 1) + "|"]
        lines += [f"| {r.metric} | {r.baseline} | {r.optimized} | {r.ratio} |" for r in self.rows]
        lines += ["| " + " | ".join(line) + " |" for line in self.cells]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def ratio(baseline: float, optimized: float) -> str:
    """baseline / optimized as `12.3x`; `-` when the optimized value is zero (nothing to divide by)."""
    if optimized <= 0:
        return "-"
    value = baseline / optimized
    return f"{value:,.0f}x" if value >= 100 else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def seconds(value: float) -> str:
    if value >= 60:
        return f"{value:,.0f} s ({value / 60:.1f} min)"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def megabytes(kib: float) -> str:
    return f"{kib / 1024:,.1f} MB"


def count(value: int | float) -> str:
    return f"{value:,}"


def row(metric: str, baseline: float, optimized: float, fmt: Any = count) -> Row:
    """A numeric row with its ratio."""
    return Row(metric, fmt(baseline), fmt(optimized), ratio(baseline, optimized))


def current_rss_kib() -> int:
    """Resident set size now (Linux /proc), falling back to the high-water mark elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return peak_rss_kib()


def peak_rss_kib() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """Enough about the machine to compare runs: cores, CPU, memory, Python, Dagster, OS."""
    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages * page_size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "cpu": cpu_model(),
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "dagster": _version("dagster"),
        "os": platform.platform(),
    }


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- **{name}**: {value}" for name, value in info.items() if value) + "\n"
