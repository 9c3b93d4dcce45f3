"""The daemon-level benchmarks (idle, latency, bursts): every design deployed as an operator runs it,
measured in one run, one deployment at a time (they would otherwise share the CPU they are measured on).

Per design and storage one deployment with the design's shipped rules and the demo company's data in B1
settles, then serves the idle window and, on the first storage only, the latency changes (the latency
does not depend on the storage much, and every change costs a minute). Each burst size gets a deployment
of its own (see `bursts`). The floor is measured for idle only: it has no pipeline to change or burst.
A deployment that fails is reported in the notes and the others are still measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from benchmarks import _baseline, bursts, idle, latency
from benchmarks._common import REPO_ROOT, BenchResult
from benchmarks._deploy import Deployment, DeploymentError, Setup
from benchmarks._session import DaemonOptions, Session, log, wait_settled

NAMES = ("idle", "latency", "bursts")
SHIPPED_RULES = {"current": Path("b1twilio_pipeline/alerts/default_rules.yaml"),
                 "webhooks": Path("b1twilio_pipeline/alerts/default_rules.yaml"),
                 "baseline": Path("b1twilio_pipeline/default_rules.yaml")}


@dataclass
class _Run:
    """One benchmark run's session, its figures so far and what went wrong."""

    options: DaemonOptions
    session: Session = field(default_factory=Session)
    idle_figures: list[idle.IdleFigures] = field(default_factory=list)
    latency_figures: list[latency.LatencyFigures] = field(default_factory=list)
    burst_figures: list[bursts.BurstFigures] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    meters: set[str] = field(default_factory=set)

    def shipped_rules(self, design: str) -> str:
        """The rules file the design ships (the floor has none)."""
        if design == "floor":
            return ""
        root = self.session.baseline_tree() if design == "baseline" else REPO_ROOT
        return (root / SHIPPED_RULES[design]).read_text()

    def within(self, setup: Setup, action: Callable[[Deployment], None]) -> None:
        """`action` on the started deployment; if either fails, a note, and the run goes on."""
        try:
            with self.session.deployment(setup) as deployment:
                self.meters.add(deployment.meter.method)
                action(deployment)
        except (DeploymentError, RuntimeError, OSError) as exc:
            message = f"{setup.design} on {setup.storage}: {type(exc).__name__}: {str(exc).strip()[:600]}"
            log(f"FAILED {message}")
            self.problems.append(message)


def _measure(run: _Run, only: Collection[str]) -> None:
    options = run.options

    def idle_and_changes(deployment: Deployment, changes: bool) -> None:
        settled = wait_settled(deployment, quiet_s=options.quiet_s, clock_quiet_s=options.clock_quiet_s,
                               closing_read=options.closing_read)
        log(f"{deployment.setup.design} on {deployment.setup.storage}: settled after {settled.seconds:.0f} s "
            f"({settled.how})")
        if "idle" in only:
            minutes = options.idle_minutes
            if deployment.setup.design == "floor" and options.floor_minutes is not None:
                minutes = options.floor_minutes
            run.idle_figures.append(idle.measure(deployment, minutes, settled))
        if changes:
            run.latency_figures.append(latency.measure(deployment, options.changes, random.Random(options.seed)))

    def burst(deployment: Deployment, size: int) -> None:
        run.burst_figures.append(bursts.measure(deployment, size, options.burst_timeout_s, options.burst_grace_s))

    for design in options.designs:
        for storage in options.storages[:1] if design == "webhooks" else options.storages:
            changes = "latency" in only and design != "floor" and storage == options.storages[0]
            if "idle" in only or changes:
                setup = Setup(design, storage, run.shipped_rules(design), seed=options.demo_data)
                run.within(setup, partial(idle_and_changes, changes=changes))
        if "bursts" in only and design not in ("floor", "webhooks"):  # a burst is one change: no webhook gain
            for size in options.bursts:
                run.within(Setup(design, "queued", bursts.rules(size), seed=False), partial(burst, size=size))


def run(options: DaemonOptions, only: Collection[str] = NAMES) -> list[BenchResult]:
    """Measure what `only` names for every design and storage of `options`; one result per benchmark."""
    daemon_run = _Run(options)
    try:
        _measure(daemon_run, only)
    finally:
        daemon_run.session.close()
    results = {"idle": lambda: idle.result(daemon_run.idle_figures),
               "latency": lambda: latency.result(daemon_run.latency_figures),
               "bursts": lambda: bursts.result(daemon_run.burst_figures, options.burst_timeout_s,
                                              options.burst_grace_s)}
    commit = " ".join(_baseline.describe_commit().split()[:2])
    common = [
        f"Designs: floor = `dagster dev` serving an empty code location; baseline = commit {commit} (a poll "
        "every minute, one run per notification); current = this working tree, status callbacks off "
        "(statuses polled); webhooks = this working tree with B1's webhooks on (the receiver, the B1 "
        "simulator subscribed to it as `b1twilio setup-b1-webhooks` does, b1_webhook_sensor every 3 s, "
        "status callbacks on).",
        "CPU: " + (", ".join(sorted(daemon_run.meters)) or "no deployment came up") + ".",
        *(f"Not measured: {problem}" for problem in daemon_run.problems),
    ]
    chosen = [results[name]() for name in NAMES if name in only]
    for result in chosen:
        result.notes += common
        result.facts["problems"] = list(daemon_run.problems)
    return chosen
