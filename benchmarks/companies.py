"""Many companies, one deployment: what N companies cost standing still, and how fast each company's
change reaches Twilio, beside one company alone, both measured in the same run (`--only companies`,
`--companies 20`).

Per deployment (`_companies_deploy`): ready (every code location loaded), settled (no run queued or
running for 60 s: the first state refresh of each company is over), then an idle window of
`--idle-minutes` (runs, CPU seconds of the whole `dagster dev` tree, B1 requests per company, scaled to
per hour), then one new supplier invoice per company (one company alone: `--changes` invoices), posted
one after another 5-20 s after the previous SMS (random, seeded), each timed until the Twilio simulator
holds the SMS naming its company.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks._common import BenchResult
from benchmarks._companies_deploy import CompaniesDeployment, company_id, company_name
from benchmarks._session import log
from benchmarks._targets import LATENCY_MEDIAN, LATENCY_P95

QUIET_S = 60.0
SETTLE_TIMEOUT_S = 1800.0
SMS_TIMEOUT_S = 300.0
HEADER = ("companies", "runs/h", "CPU s/h", "CPU s/h per company", "B1 requests/h per company (min-max)",
          "change -> SMS median", "p95", "slowest company", "missed")


@dataclass
class CompaniesFigures:
    companies: int
    minutes: float
    runs: int
    cpu_s: float
    b1_requests: dict[str, int]
    latency_s: dict[str, list[float]] = field(default_factory=dict)  # company -> seconds per change
    missed: int = 0
    settled: str = ""

    def per_hour(self, value: float) -> float:
        return value * 60 / self.minutes

    def all_latencies(self) -> list[float]:
        return sorted(seconds for values in self.latency_s.values() for seconds in values)


def _settle(deployment: CompaniesDeployment) -> str:
    started = last_busy = time.monotonic()
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        if deployment.unfinished_runs():
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy >= QUIET_S:
            return f"no run queued or running for {QUIET_S:.0f} s, after {time.monotonic() - started:.0f} s"
        time.sleep(2.0)
    return f"NOT settled within {SETTLE_TIMEOUT_S:.0f} s"


def _changes(deployment: CompaniesDeployment, per_company: int, rng: random.Random,
             figures: CompaniesFigures) -> None:
    order = [index for index in range(deployment.count) for _ in range(per_company)]
    for index in order:
        company, name = company_id(index), company_name(index)
        doc = deployment.sap[company].add_document("PurchaseInvoices", {
            "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 10}]})
        posted, wanted = time.monotonic(), f"{name}: Supplier invoice {doc['DocNum']} from"
        while time.monotonic() - posted < SMS_TIMEOUT_S:
            if any(text.startswith(wanted) for text in deployment.texts()):
                figures.latency_s.setdefault(company, []).append(time.monotonic() - posted)
                break
            time.sleep(0.5)
        else:
            figures.missed += 1
        time.sleep(rng.uniform(5.0, 20.0))


def measure(count: int, idle_minutes: float, changes_alone: int, seed: int = 7) -> CompaniesFigures:
    deployment = CompaniesDeployment(count, Path(tempfile.mkdtemp(prefix="bench-companies-")))
    try:
        deployment.start()
        log(f"{count} companies: ready after {deployment.wait_ready():.0f} s")
        settled = _settle(deployment)
        log(f"{count} companies: settled ({settled}); idle window of {idle_minutes:g} min")
        started, began = time.time(), time.monotonic()
        cpu, b1 = deployment.cpu_seconds(), deployment.b1_requests()
        time.sleep(idle_minutes * 60)
        after = deployment.b1_requests()
        figures = CompaniesFigures(
            companies=count, minutes=(time.monotonic() - began) / 60, runs=deployment.runs(started, time.time()),
            cpu_s=deployment.cpu_seconds() - cpu, b1_requests={c: after[c] - b1[c] for c in after}, settled=settled)
        log(f"{count} companies: {figures.runs} runs, {figures.cpu_s:.0f} CPU s in {figures.minutes:.1f} min")
        _changes(deployment, changes_alone if count == 1 else 1, random.Random(seed), figures)
        log(f"{count} companies: {len(figures.all_latencies())} changes timed, {figures.missed} missed")
        return figures
    finally:
        deployment.close()
        deployment.remove_files()


def _row(figures: CompaniesFigures) -> tuple[str, ...]:
    b1 = [figures.per_hour(value) for value in figures.b1_requests.values()]
    latencies = figures.all_latencies()
    median = statistics.median(latencies) if latencies else None
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)] if latencies else None
    slowest = max(figures.latency_s.items(), key=lambda item: max(item[1]), default=None)
    return (str(figures.companies), f"{figures.per_hour(figures.runs):,.1f}", f"{figures.per_hour(figures.cpu_s):,.0f}",
            f"{figures.per_hour(figures.cpu_s) / figures.companies:,.0f}",
            f"{min(b1):,.0f}-{max(b1):,.0f}" if b1 else "-",
            "-" if median is None else LATENCY_MEDIAN["polling"].cell(median, f"{median:.1f} s"),
            "-" if p95 is None else LATENCY_P95.cell(p95, f"{p95:.1f} s"),
            "-" if slowest is None else f"{slowest[0]}: {max(slowest[1]):.1f} s", str(figures.missed))


def result(measured: list[CompaniesFigures]) -> BenchResult:
    notes = [
        "Each row one deployment: `dagster dev` on the production instance configuration (PostgreSQL) serving "
        "one code location per company (`b1twilio workspace`), one B1 simulator per company (empty company "
        "databases), one Twilio simulator, shipped defaults; measured one after the other in the same run.",
        "Idle: after every company's first state refresh was over and no run was queued or running for "
        f"{QUIET_S:.0f} s; window length: " + ", ".join(
            f"{f.companies} compan{'y' if f.companies == 1 else 'ies'} {f.minutes:.1f} min" for f in measured) + ".",
        "Latency: one new supplier invoice per company (one company alone: several), posted one after another "
        "5-20 s after the previous SMS, timed until the Twilio simulator held the SMS naming the company.",
    ]
    for figures in measured:
        if figures.companies > 1:
            notes.append(f"{figures.companies} companies, change -> SMS per company: " + ", ".join(
                f"{company} {values[0]:.1f} s" for company, values in sorted(figures.latency_s.items())) + ".")
    return BenchResult("Many companies in one deployment", [], notes,
                       facts={"companies": [asdict(f) for f in measured]}, header=HEADER,
                       cells=[_row(f) for f in measured])


def run(counts: tuple[int, ...], idle_minutes: float, changes_alone: int) -> BenchResult:
    return result([measure(count, idle_minutes, changes_alone) for count in counts])
