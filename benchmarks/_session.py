"""What the daemon-level benchmarks share: their options, one scratch folder and baseline tree per
benchmark process, deployments that are always cleaned up, and "settled" (the first sync and its alerts
are over, and so is the closing read of the window they happened in, so an idle window measures idleness
and a change is not queued behind start-up work).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _baseline
from benchmarks._deploy import Deployment, Setup

# The order they are measured in. `webhooks` is `current` with B1's webhooks on (the receiver, the B1
# simulator subscribed to it, b1_webhook_sensor running), measured on the first storage only.
DESIGNS = ("floor", "baseline", "current", "webhooks")
STORAGES = ("sqlite", "postgres")
QUIET_S = 60.0  # settled: this long without a queued or running run and without a new SMS or call
# (two ticks of the slowest sensor)
CLOCK_QUIET_S = 180.0  # a design that launches runs on a clock: this long without a new SMS or call
# (three polls of a poll-every-minute design)
SETTLE_TIMEOUT_S = 1200.0
# The designs that read a window once more after it closes if it saw changes (B1TWILIO_WINDOW_MINUTES's
# default): settled once the window of the start-up work has closed and that read is over. An idle
# pipeline makes no such run; one in a short idle window would be scaled to several per hour.
CLOSING_READ_WINDOW_MINUTES = {"current": 15, "webhooks": 15}
CLOSING_READ_GRACE_S = 90.0  # after the window ends: the change sensor's next tick, and the run's start


@dataclass(frozen=True)
class DaemonOptions:
    idle_minutes: float = 20.0
    floor_minutes: float | None = None  # the floor's window (None: `idle_minutes`); it launches nothing on a clock
    changes: int = 10
    bursts: tuple[int, ...] = (100, 1000)
    burst_timeout_s: float = 900.0
    burst_grace_s: float = 30.0  # after a burst's last SMS, before its SMS are counted again (duplicates)
    designs: tuple[str, ...] = DESIGNS
    storages: tuple[str, ...] = STORAGES
    seed: int = 1  # of the pauses that spread the changes
    demo_data: bool = True  # B1 starts with the demo company's data (idle and latency deployments)
    quiet_s: float = QUIET_S  # see `wait_settled`; the smoke test shortens both
    clock_quiet_s: float = CLOCK_QUIET_S
    closing_read: bool = True  # settle after the start-up window's closing read (False: the smoke test)


@dataclass(frozen=True)
class Settled:
    seconds: float
    how: str


@dataclass
class Session:
    """A scratch folder (deleted at the end) holding every deployment and the extracted baseline."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="b1tw-bench-")))
    _tree: Path | None = None

    def baseline_tree(self) -> Path:
        if self._tree is None:
            tree = _baseline.extract(self.workdir / "baseline")
            _baseline.resolved_package(tree)
            self._tree = tree
        return self._tree

    @contextmanager
    def deployment(self, setup: Setup) -> Iterator[Deployment]:
        """A started, ready deployment; stopped, its databases dropped and its files removed afterwards."""
        tree = self.baseline_tree() if setup.design == "baseline" else None
        deployment = Deployment(setup, self.workdir, tree)
        try:
            deployment.start()
            ready = deployment.wait_ready()
            log(f"{setup.design} on {setup.storage}: ready after {ready:.0f} s")
            yield deployment
        finally:
            deployment.close()
            deployment.remove_files()

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_settled(deployment: Deployment, *, quiet_s: float = QUIET_S, clock_quiet_s: float = CLOCK_QUIET_S,
                 closing_read: bool = True, timeout_s: float = SETTLE_TIMEOUT_S) -> Settled:
    """Until no run was queued or running and Twilio got nothing new for `quiet_s`. A design that launches
    runs on a clock (a poll every minute) never has such a gap: for it, `clock_quiet_s` without a new SMS
    or call. With `closing_read`, a design that reads a window again after it closes (see
    `CLOSING_READ_WINDOW_MINUTES`; it launches nothing on a clock) is then waited for until that read of
    the start-up window is over too.
    Gives up after `timeout_s` and says so (the figures are then marked as measured unsettled)."""
    started = time.monotonic()
    clocked = deployment.setup.design not in CLOSING_READ_WINDOW_MINUTES
    window_minutes = CLOSING_READ_WINDOW_MINUTES.get(deployment.setup.design) if closing_read else None
    waited = False
    last_run = last_twilio = started
    last_busy_wall = time.time()
    twilio = deployment.twilio_records()
    while (now := time.monotonic()) - started < timeout_s:
        if deployment.unfinished_runs():
            last_run, last_busy_wall = now, time.time()
        if (seen := deployment.twilio_records()) != twilio:
            twilio, last_twilio, last_busy_wall = seen, now, time.time()
        if now - max(last_run, last_twilio) >= quiet_s:
            if window_minutes is None:
                return Settled(now - started, f"no run queued or running and no new SMS/call for {quiet_s:.0f} s"
                               + (", after the start-up window's closing read" if waited else ""))
            window_s = window_minutes * 60
            closing_at = (last_busy_wall // window_s + 1) * window_s + CLOSING_READ_GRACE_S
            log(f"quiet; waiting {max(0.0, closing_at - time.time()):.0f} s for the start-up window's closing read")
            time.sleep(max(0.0, closing_at - time.time()))
            window_minutes, waited = None, True  # then quiet again, once, for a whole `quiet_s`
            last_run = time.monotonic()
            continue
        if clocked and now - last_twilio >= clock_quiet_s:
            return Settled(now - started, f"no new SMS/call for {clock_quiet_s:.0f} s (runs still launched "
                                          "on a clock)")
        if deployment.dagster is not None and not deployment.dagster.alive():
            raise RuntimeError(f"dagster dev exited while settling:\n{deployment.tail()}")
        time.sleep(2.0)
    return Settled(time.monotonic() - started, f"NOT settled within {timeout_s:.0f} s")
