"""B1 change -> SMS accepted by Twilio, under the real daemon.

On a settled deployment with the design's shipped rules, `--changes` supplier invoices are posted at
random intervals (20-60 s, seeded), whether or not the previous one's SMS has arrived: the changes land
at spread moments of the designs' cycles (a poll every minute, a sensor every 30 s) instead of always
just after one, and ten of them take minutes, not ten times the latency. Each latency is from its POST
until the Twilio simulator holds the SMS to the rule's recipient, as the harness sees it (polled every
0.5 s). A change without its SMS within `TIMEOUT_S` is reported as missed.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass

from benchmarks._changes import POLL_S, Change, check_alive, post_supplier_invoice, sms_about
from benchmarks._common import BenchResult
from benchmarks._deploy import STORAGE_LABEL, Deployment
from benchmarks._session import log
from benchmarks._targets import LATENCY_MEDIAN, LATENCY_P95, Target

TIMEOUT_S = 300.0
MIN_SPACING_S, MAX_SPACING_S = 20.0, 60.0
HEADER = ("design", "storage", "changes", "median", "p95", "min / max", "missed", "duplicates")


@dataclass(frozen=True)
class LatencyFigures:
    design: str
    storage: str
    seconds: list[float]  # one per change that was delivered, in posting order
    missed: int
    duplicates: int

    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def p95(self) -> float | None:
        """Nearest rank: the smallest latency that 95 % of the changes did not exceed (a missed change
        counts as longer than any), so a sample of 10 reports its slowest."""
        if not self.seconds:
            return None
        rank = math.ceil(0.95 * (len(self.seconds) + self.missed))
        ordered = sorted(self.seconds)
        return ordered[rank - 1] if rank <= len(ordered) else None


def measure(deployment: Deployment, changes: int, rng: random.Random) -> LatencyFigures:
    """Post the changes on their schedule while watching for the SMS of those still outstanding;
    duplicates are counted at the end, so a late one is seen too."""
    posted: list[Change] = []
    latencies: dict[int, float] = {}
    next_post = time.monotonic() + rng.uniform(0, MAX_SPACING_S)
    while len(posted) < changes or any(c.doc_num not in latencies and time.monotonic() - c.posted < TIMEOUT_S
                                       for c in posted):
        if len(posted) < changes and time.monotonic() >= next_post:
            posted.append(post_supplier_invoice(deployment, f"BENCH-LAT-{len(posted) + 1}"))
            next_post = time.monotonic() + rng.uniform(MIN_SPACING_S, MAX_SPACING_S)
        for change in posted:
            waited = time.monotonic() - change.posted
            if change.doc_num not in latencies and waited < TIMEOUT_S and sms_about(deployment, change.doc_num):
                latencies[change.doc_num] = waited
                log(f"change {len(latencies)}/{changes} (invoice {change.doc_num}): "
                    f"{latencies[change.doc_num]:.1f} s")
        check_alive(deployment)
        time.sleep(POLL_S)
    delivered = [latencies[c.doc_num] for c in posted if c.doc_num in latencies]
    duplicates = sum(len(sent) - len(set(sent)) for sent in (sms_about(deployment, c.doc_num) for c in posted))
    return LatencyFigures(deployment.setup.design, deployment.setup.storage, delivered,
                          missed=changes - len(delivered), duplicates=duplicates)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _median_target(design: str) -> Target:
    return LATENCY_MEDIAN["webhooks" if design == "webhooks" else "polling"]


def _row(figures: LatencyFigures) -> tuple[str, ...]:
    median, p95 = figures.median(), figures.p95()
    extremes = f"{min(figures.seconds):.1f} / {max(figures.seconds):.1f} s" if figures.seconds else "-"
    return (figures.design, STORAGE_LABEL[figures.storage], str(len(figures.seconds) + figures.missed),
            _median_target(figures.design).cell(median, _seconds(median)), LATENCY_P95.cell(p95, _seconds(p95)),
            extremes,
            str(figures.missed), str(figures.duplicates))


def result(measured: list[LatencyFigures]) -> BenchResult:
    notes = [
        "A change is a new supplier invoice posted to the B1 simulator's HTTP API; its latency runs until "
        "the Twilio simulator accepted the SMS the shipped rules send about it.",
        f"Changes are posted {MIN_SPACING_S:.0f}-{MAX_SPACING_S:.0f} s apart (random, seeded); a change without its "
        f"SMS within {TIMEOUT_S:.0f} s is missed (and the p95 is then '-' if more than 5 % were missed).",
        f"Targets: {LATENCY_MEDIAN['polling'].text} by polling, {LATENCY_MEDIAN['webhooks'].text}; "
        f"{LATENCY_P95.text}. Duplicates: SMS about a change beyond one per "
        "recipient, counted once the last change's SMS arrived.",
    ]
    return BenchResult("B1 change to SMS accepted by Twilio", [], notes,
                       facts={"latency": [asdict(f) for f in measured]}, header=HEADER,
                       cells=[_row(f) for f in measured])
