"""A burst: one change in B1 that alerts many distinct recipients at once.

Each burst size gets a fresh deployment on the production instance configuration (its run queue and
limits, on SQLite: without a queue the baseline would start one process per notification at once), an
empty B1 and a generated rules file whose only rule sends an SMS about every new supplier invoice to a
group of N recipients with distinct fictional numbers. Once the deployment has looked at B1 once (so the
invoice is new to it), one invoice is posted; measured are the seconds until the Twilio simulator holds
an SMS about it for every recipient, the CPU seconds of the process tree over that time, the runs it
launched, and the SMS beyond one per recipient (duplicates), counted again after a grace period.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from benchmarks._changes import post_supplier_invoice, recount, wait_delivered
from benchmarks._common import BenchResult
from benchmarks._deploy import STORAGE_LABEL, Deployment
from benchmarks._session import log
from benchmarks._targets import DUPLICATES, burst_target

# Fictional numbers that never ring anyone: Ofcom's drama ranges (mobile 07700 900xxx, London 020 7946 0xxx).
NUMBER_RANGES = ("+447700900{:03d}", "+442079460{:03d}")
MAX_SIZE = 1000 * len(NUMBER_RANGES)
FIRST_LOOK_TIMEOUT_S = 300.0
HEADER = ("design", "storage", "recipients", "all accepted after", "accepted", "CPU s", "runs", "duplicates")


def phones(size: int) -> list[str]:
    if not 0 < size <= MAX_SIZE:
        raise ValueError(f"a burst has 1 to {MAX_SIZE} recipients (distinct fictional numbers), not {size}")
    return [NUMBER_RANGES[i // 1000].format(i % 1000) for i in range(size)]


def rules(size: int) -> str:
    """A rules file both designs accept: one group of `size` recipients, one rule alerting it by SMS."""
    people = "\n".join(f'    - {{name: "Bench {i + 1:04d}", phone: "{phone}"}}'
                       for i, phone in enumerate(phones(size)))
    return (f"timezone: Europe/Berlin\nrecipients:\n  burst:\n{people}\nrules:\n"
            "  - id: bench-burst\n    kind: purchase_invoice_received\n    channel: sms\n"
            "    recipients: [burst]\n    min_amount: 0\n"
            '    template: "Supplier invoice {DocNum} from {CardName}: {DocTotal:,.2f} {DocCurrency}"\n')


@dataclass(frozen=True)
class BurstFigures:
    design: str
    storage: str
    size: int
    seconds: float | None  # until every recipient had its SMS; None: not within the timeout
    accepted: int  # distinct recipients with an SMS
    cpu_s: float
    runs: int
    duplicates: int


def wait_first_look(deployment: Deployment, timeout_s: float = FIRST_LOOK_TIMEOUT_S) -> None:
    """Until the design has asked B1 for supplier invoices and no run is queued or running."""
    assert deployment.sims is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if deployment.sims.sap.count_requests("GET", "PurchaseInvoices") and not deployment.unfinished_runs():
            return
        time.sleep(1.0)
    raise RuntimeError(f"{deployment.setup.design} did not look at B1 within {timeout_s:.0f} s:\n{deployment.tail()}")


def measure(deployment: Deployment, size: int, timeout_s: float, grace_s: float) -> BurstFigures:
    wait_first_look(deployment)
    since, cpu = time.time(), deployment.cpu_seconds()
    change = post_supplier_invoice(deployment, f"BENCH-BURST-{size}")
    delivery = wait_delivered(deployment, change, expected=size, timeout_s=timeout_s)
    cpu_s = deployment.cpu_seconds() - cpu
    log(f"burst of {size}: {delivery.recipients} accepted "
        + ("(timed out)" if delivery.seconds is None else f"after {delivery.seconds:.1f} s"))
    time.sleep(grace_s)
    final = recount(deployment, change, delivery)
    return BurstFigures(deployment.setup.design, deployment.setup.storage, size, delivery.seconds,
                        final.recipients, cpu_s, deployment.runs(since), final.duplicates)


def _row(figures: BurstFigures) -> tuple[str, ...]:
    target = burst_target(figures.size)
    shown = "-" if figures.seconds is None else f"{figures.seconds:,.1f} s"
    return (figures.design, STORAGE_LABEL[figures.storage], f"{figures.size:,}",
            target.cell(figures.seconds, shown), f"{figures.accepted:,}", f"{figures.cpu_s:,.0f}",
            f"{figures.runs:,}", DUPLICATES.cell(figures.duplicates, str(figures.duplicates)))


def result(measured: list[BurstFigures], timeout_s: float, grace_s: float) -> BenchResult:
    targets = ", ".join(dict.fromkeys(burst_target(f.size).text for f in measured))
    notes = [
        "One new supplier invoice alerting N recipients (distinct fictional numbers) by SMS, on a fresh "
        "deployment with an empty B1 and the production run queue; timed from the POST to the B1 simulator "
        f"until the Twilio simulator accepted an SMS for every recipient (given up after {timeout_s:.0f} s).",
        "CPU s: the whole process tree over that time. Runs: runs created from the POST on, counted "
        f"{grace_s:.0f} s after the last SMS, when duplicates (SMS beyond one per recipient) are counted too.",
        f"Targets: {targets}; {DUPLICATES.text}.",
    ]
    return BenchResult("Bursts of notifications to distinct recipients", [], notes,
                       facts={"bursts": [asdict(f) for f in measured]}, header=HEADER,
                       cells=[_row(f) for f in measured])
