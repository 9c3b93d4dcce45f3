"""The fault suite (`make faults`; `make test` runs it with smaller bursts): every fault production brings,
caused for real against the pipeline under the Dagster daemon, and nothing lost or sent twice.

`make faults` (B1TWILIO_FAULTS=full) writes the table to docs/faults.md; B1TWILIO_FAULTS_ONLY=a,b runs only
the scenarios whose function names contain one of the parts.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from b1twilio_pipeline_tests.fault_lab import KIM, ROOT, FaultLab, Phase, fault_lab, markdown

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

FULL = os.environ.get("B1TWILIO_FAULTS") == "full"
STARTED = dg.DagsterRunStatus.STARTED


def no_fault(lab: FaultLab, phase: Phase) -> None:
    lab.invoices(phase, lab.burst)


def twilio_outage(lab: FaultLab, phase: Phase) -> None:
    lab.sims.twilio.set_faults(fail_all=True, fail_status=503)
    lab.invoices(phase, lab.burst)
    time.sleep(45)  # longer than every retry of the Twilio client within one attempt (about 35 s)
    lab.sims.twilio.set_faults()


def accepted_then_504(lab: FaultLab, phase: Phase) -> None:
    lab.sims.twilio.set_faults(accept_then_fail_next=2 * lab.burst, fail_status=504)
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: lab.sims.twilio.faults.accept_then_fail_next == 0, 180, "every create answered 504")


def storm_429(lab: FaultLab, phase: Phase) -> None:
    lab.sims.twilio.set_rate_limit(next_429=8 * lab.burst)
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: lab.sims.twilio.next_429 == 0, 180, "the 429 storm to blow over")
    lab.sims.twilio.set_rate_limit(None, 0)


def b1_outage(lab: FaultLab, phase: Phase) -> None:
    lab.sims.sap.set_faults(fail_all=True, fail_status=503)
    lab.invoices(phase, lab.burst)
    time.sleep(30)
    lab.sims.sap.set_faults(fail_all=False)


def b1_sessions_dropped(lab: FaultLab, phase: Phase) -> None:
    stop = threading.Event()

    def expire() -> None:
        while not stop.wait(1.0):
            lab.sims.sap.expire_sessions()

    thread = threading.Thread(target=expire, daemon=True)
    thread.start()
    lab.invoices(phase, lab.burst)
    lab.wait_delivered(phase, 180)
    stop.set()
    thread.join()


def run_worker_killed(lab: FaultLab, phase: Phase) -> None:
    before = lab.posts_to_twilio()
    lab.sims.twilio.set_latency(8)  # Twilio accepts each message, the answer takes 8 s: the worker dies first
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: lab.posts_to_twilio() > before, 180, "the first create reaching Twilio")
    killed = lab.kill_run_workers()
    lab.sims.twilio.set_latency(0)
    lab.note = f"{killed} run worker(s) SIGKILLed between sending and the SID"


def instance_killed(lab: FaultLab, phase: Phase) -> None:
    before = lab.posts_to_twilio()
    lab.sims.twilio.set_latency(3.0)  # the burst takes a while
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: lab.posts_to_twilio() > before, 180, "the burst reaching Twilio")
    lab.dagster.kill()
    lab.sims.twilio.set_latency(0)
    lab.dagster.restart()
    lab.wait_daemon()
    lab.note = f"killed after {lab.posts_to_twilio() - before} of {len(phase.expected)} sends began"


def launched_twice(lab: FaultLab, phase: Phase) -> None:
    # The run that plans sends at once; a refused first attempt (401, retried by the ledger) leaves the
    # notifications to the sensor's notification run, which is then launched a second time.
    lab.sims.twilio.set_faults(fail_next=2 * lab.burst, fail_status=401)
    lab.sims.twilio.set_latency(8)
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: bool(lab.notify_runs(STARTED)), 180, "a notification run in flight")
    first = lab.notify_runs(STARTED)[0]
    lab.launch_again(first)
    lab.wait_for(lambda: len(lab.notify_runs(STARTED)) >= 2 or not lab.notify_runs(STARTED), 120,
                 "the second run to start")
    both = len(lab.notify_runs(STARTED)) >= 2
    lab.note = "the second run started while the first was sending" if both else "the first run ended first"
    lab.sims.twilio.set_latency(0)


def postgres_restarted(lab: FaultLab, phase: Phase) -> None:
    before = lab.posts_to_twilio()
    lab.sims.twilio.set_latency(3.0)
    lab.invoices(phase, lab.burst)
    lab.wait_for(lambda: lab.posts_to_twilio() > before, 180, "the burst reaching Twilio")
    lab.restart_postgres()
    lab.sims.twilio.set_latency(0)


def callbacks_chaos(lab: FaultLab, phase: Phase) -> None:
    lab.sims.twilio.set_callback_mode("duplicate", "out_of_order")
    lab.invoices(phase, lab.burst)
    lab.wait_delivered(phase, 180)

    def statuses() -> set[str]:
        sids = [m["sid"] for m in lab.sims.twilio.messages() if lab.matches(m, phase)]
        return {getattr(lab.ledger.by_sid(sid), "status", "unrecorded") for sid in sids}

    lab.wait_for(lambda: statuses() == {"delivered"}, 120, "every status to reach delivered")
    answers = lab.forge_callbacks(phase)
    lab.sims.twilio.set_callback_mode("normal")
    assert set(answers) == {403} and statuses() == {"delivered"}, (answers, statuses())
    lab.note = f"{len(answers)} forged callbacks refused (403); every status ends delivered"


def malformed_record(lab: FaultLab, phase: Phase) -> None:
    lab.invoices(phase, lab.burst)
    bad = lab.sims.sap.add_document("PurchaseInvoices", {"CardCode": "V10000"})
    lab.sims.sap.corrupt_record("PurchaseInvoices", bad["DocEntry"], {"DocTotal": "n/a"})
    lab.wait_delivered(phase, 180)
    assert not any(f"invoice {bad['DocNum']} " in m["body"] for m in lab.sims.twilio.messages())
    lab.note = "the malformed invoice quarantined, the rest of its window alerted"


def phone_secret_missing_then_set(lab: FaultLab, phase: Phase) -> None:
    order = lab.sims.sap.add_document("PurchaseOrders", {
        "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 5}]})
    phase.expected.add((KIM, order["DocNum"]))

    def names_the_fix() -> bool:
        return any("b1twilio secrets set PHONE_KIM" in (n.error_message or "")
                   for n in lab.ledger.due(datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)))

    lab.wait_for(names_the_fix, 180, "the notification to wait, naming PHONE_KIM")
    lab.set_secret("PHONE_KIM", KIM)
    lab.note = "waited, naming `b1twilio secrets set PHONE_KIM`; sent once it was set"


SCENARIOS = [
    ("no fault (reference)", no_fault),
    ("Twilio outage (503) longer than every retry", twilio_outage),
    ("Twilio accepts, then answers 504", accepted_then_504),
    ("Twilio 429 storm", storm_429),
    ("B1 outage (503)", b1_outage),
    ("every B1 session dropped, again and again", b1_sessions_dropped),
    ("run worker SIGKILLed between sending and the SID", run_worker_killed),
    ("whole instance SIGKILLed mid-burst, restarted", instance_killed),
    ("the same notifications launched twice at once", launched_twice),
    ("PostgreSQL restarted mid-burst", postgres_restarted),
    ("callbacks duplicated, out of order and forged", callbacks_chaos),
    ("a malformed B1 record in the window", malformed_record),
    ("a phone_ref secret missing, then set", phone_secret_missing_then_set),
]


def test_every_fault_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    started, began = datetime.now(UTC), time.monotonic()
    burst = 10 if FULL else 3
    only = [part for part in os.environ.get("B1TWILIO_FAULTS_ONLY", "").split(",") if part]
    with fault_lab(tmp_path, burst) as lab:
        for name, scenario in SCENARIOS:
            if not only or any(part in scenario.__name__ for part in only):
                lab.run(name, scenario)
        lab.settle()  # every notification final: a late re-drive or adoption would have sent by now
        lab.recount()
        table = markdown(lab.results, burst=burst, started=started, total_s=time.monotonic() - began)
    print(table)
    if FULL and not only:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "faults.md").write_text(table)
    broken = [(r.fault, r.lost, r.duplicated) for r in lab.results if r.lost or r.duplicated]
    assert not broken, table
