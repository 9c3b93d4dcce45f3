"""Idle cost: what a settled deployment spends while nothing changes in B1.

Measured over a window of `--idle-minutes` on a deployment that has settled (its first sync and the
alerts of the seeded data are over): Dagster runs created (from the run storage), CPU seconds of the whole
`dagster dev` process tree (cgroup), growth of its storage (the pages in use of its SQLite databases, WAL
journals excluded: see `_deploy.SQLITE_JOURNALS`; or the PostgreSQL databases' sizes, their dead row
versions reclaimed as autovacuum would: see `_autovacuum`) and
requests the B1 simulator received. A window shorter than an hour is scaled to per hour (storage: per
day); the table says how long it was. CPU above the floor subtracts the floor's CPU on the same storage,
measured in the same run.

Storage does not grow evenly: a table whose rows are rewritten grows until vacuum frees its dead row
versions as fast as they appear, then holds that size; tick rows grow until their purge begins a day
later. So the storage is also read every `STEP_MINUTES` (the notes give the growth step by step and, on
PostgreSQL, the tables that grew most) to show which growth is once and which goes on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from benchmarks._common import BenchResult
from benchmarks._deploy import STORAGE_LABEL, Deployment
from benchmarks._session import Settled, log
from benchmarks._targets import (
    IDLE_CPU_ABOVE_FLOOR,
    IDLE_RUNS_PER_HOUR,
    IDLE_STORAGE_PER_DAY,
    MB,
    b1_requests_target,
)

STEP_MINUTES = 10.0
TABLES_NAMED = 8  # the tables that grew most, named in the notes

HEADER = ("design", "storage", "runs/h", "CPU s/h", "CPU s/h above floor", "storage growth/day",
          "B1 requests/h")


@dataclass(frozen=True)
class IdleFigures:
    design: str
    storage: str
    minutes: float  # how long the window really was
    runs: int
    run_labels: tuple[str, ...]  # each run of the window: created at (UTC), job, kind
    failed_runs: int
    cpu_s: float
    storage_bytes: int  # growth over the window (can be negative: SQLite and PostgreSQL reuse pages)
    b1_requests: int
    settled: str
    stand_in_vacuums: int | None  # PostgreSQL with autovacuum off: tables vacuumed in its stead (`_autovacuum`)
    steps: tuple[tuple[float, int], ...]  # (minutes into the window, storage growth so far), every STEP_MINUTES
    tables: dict[str, int]  # PostgreSQL: growth of each table that grew, with its indexes and TOAST

    def per_hour(self, value: float) -> float:
        return value * 60 / self.minutes


def measure(deployment: Deployment, minutes: float, settled: Settled) -> IdleFigures:
    """Sleep through the window and take each figure before and after it from the deployment."""
    started, began = time.time(), time.monotonic()
    cpu, size, b1 = deployment.cpu_seconds(), deployment.storage_bytes(), deployment.b1_requests()
    stand_in = deployment.autovacuum if deployment.autovacuum is not None and deployment.autovacuum.active else None
    vacuums = 0 if stand_in is None else stand_in.vacuums
    tables = deployment.table_bytes()
    log(f"idle window of {minutes:g} min")
    steps: list[tuple[float, int]] = []  # at least one: the window is longer than 0 (checked by __main__)
    while (left := minutes * 60 - (time.monotonic() - began)) > 0:
        time.sleep(min(left, STEP_MINUTES * 60))
        steps.append(((time.monotonic() - began) / 60, deployment.storage_bytes() - size))
    if deployment.dagster is not None and not deployment.dagster.alive():
        raise RuntimeError(f"dagster dev exited during the idle window:\n{deployment.tail()}")
    elapsed = (time.monotonic() - began) / 60
    ended = time.time()
    grown = {name: end - tables.get(name, 0) for name, end in deployment.table_bytes().items()}
    run_labels = tuple(deployment.run_labels(started, ended))
    return IdleFigures(
        design=deployment.setup.design, storage=deployment.setup.storage, minutes=elapsed,
        runs=len(run_labels), run_labels=run_labels, failed_runs=deployment.runs(started, ended, failed=True),
        cpu_s=deployment.cpu_seconds() - cpu, storage_bytes=steps[-1][1],
        b1_requests=deployment.b1_requests() - b1, settled=settled.how,
        stand_in_vacuums=None if stand_in is None else stand_in.vacuums - vacuums, steps=tuple(steps),
        tables={name: growth for name, growth in grown.items() if growth > 0})


def _row(figures: IdleFigures, floor: IdleFigures | None, baseline: IdleFigures | None) -> tuple[str, ...]:
    runs_h, cpu_h = figures.per_hour(figures.runs), figures.per_hour(figures.cpu_s)
    per_day = figures.per_hour(figures.storage_bytes) * 24
    above = "-" if floor is None or figures.design == "floor" else IDLE_CPU_ABOVE_FLOOR.cell(
        cpu_h - floor.per_hour(floor.cpu_s), f"{cpu_h - floor.per_hour(floor.cpu_s):,.0f}")
    b1 = "-"
    if figures.design != "floor":
        b1_h = figures.per_hour(figures.b1_requests)
        target = b1_requests_target(None if baseline is None else baseline.per_hour(baseline.b1_requests))
        b1 = f"{b1_h:,.0f}" if target is None or figures.design == "baseline" else target.cell(b1_h, f"{b1_h:,.0f}")
    return (figures.design, STORAGE_LABEL[figures.storage],
            IDLE_RUNS_PER_HOUR.cell(runs_h, f"{runs_h:,.1f}"), f"{cpu_h:,.0f}", above,
            IDLE_STORAGE_PER_DAY[figures.storage].cell(per_day, f"{per_day / MB:,.2f} MB"), b1)


def _growth_note(figures: IdleFigures) -> str:
    """The storage growth step by step, and the tables that grew most."""
    steps = ", ".join(f"{minute:.0f} min {growth / 1024:+,.0f} KB" for minute, growth in figures.steps)
    note = f"{figures.design}/{figures.storage} storage growth since the window began: {steps}."
    if figures.tables:
        top = sorted(figures.tables.items(), key=lambda item: -item[1])[:TABLES_NAMED]
        note += " Tables that grew most: " + ", ".join(f"`{name}` {grown / 1024:+,.0f} KB" for name, grown in top)
        note += "."
    return note


def result(measured: list[IdleFigures]) -> BenchResult:
    """One row per design and storage, with the targets' verdicts beside the figures."""
    def find(design: str, storage: str) -> IdleFigures | None:
        return next((f for f in measured if f.design == design and f.storage == storage), None)

    cells = [_row(f, find("floor", f.storage), find("baseline", f.storage)) for f in measured]
    windows = ", ".join(f"{f.design}/{f.storage} {f.minutes:.1f} min" for f in measured)
    notes = [
        f"Measured over idle windows of {windows}, scaled to per hour (storage growth: per day).",
        f"Targets: runs {IDLE_RUNS_PER_HOUR.text}; CPU {IDLE_CPU_ABOVE_FLOOR.text} (the floor is the same "
        "`dagster dev` serving an empty code location); storage SQLite "
        f"{IDLE_STORAGE_PER_DAY['sqlite'].text}, PostgreSQL {IDLE_STORAGE_PER_DAY['postgres'].text}; "
        "B1 requests no more than the baseline's on the same storage.",
        "Each window began once the deployment had settled: "
        + "; ".join(f"{f.design}/{f.storage}: {f.settled}" for f in measured) + ".",
    ]
    vacuumed = [f"{f.design}/{f.storage}: {f.stand_in_vacuums}" for f in measured if f.stand_in_vacuums is not None]
    if vacuumed:
        notes.append("PostgreSQL ran with autovacuum off (this machine's CI configuration); the benchmark "
                     "vacuumed its scratch databases by autovacuum's rule instead, as a production server "
                     "does (`benchmarks/_autovacuum.py`), with the autovacuum settings an operator gives the "
                     "instance's hottest tables (`b1twilio_pipeline/housekeeping/instance_autovacuum.sql`). "
                     "Tables vacuumed in the window (TOAST tables counted on their own): "
                     + ", ".join(vacuumed) + ".")
    notes += [_growth_note(f) for f in measured if f.design != "floor"]
    notes += [f"{f.design}/{f.storage} runs in the window: " + ", ".join(f.run_labels) + "."
              for f in measured if f.run_labels]
    failed = [f"{f.design}/{f.storage}: {f.failed_runs}" for f in measured if f.failed_runs]
    if failed:
        notes.append("Runs that failed in the window: " + ", ".join(failed) + ".")
    return BenchResult("Idle cost under the Dagster daemon", [], notes,
                       facts={"idle": [asdict(f) for f in measured]}, header=HEADER, cells=cells)
