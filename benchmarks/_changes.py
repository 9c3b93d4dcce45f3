"""A change in B1 and the SMS it causes, as the benchmarks see them from outside the pipeline.

A change is a new supplier invoice posted to the B1 simulator's admin HTTP API (as the demo's and the
fault suite's harness do), stamped "now" by the simulator clock; every design's shipped rules alert on it
(`purchase_invoice_received`, min amount 0). Its SMS are found among the Twilio simulator's records by
the invoice's DocNum, so the other alerts a seeded B1 raises are never mistaken for it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from b1twilio_sim.sap_b1_data import document_line
from benchmarks._deploy import Deployment

POLL_S = 0.5  # how often the Twilio simulator's records are looked at while waiting


@dataclass(frozen=True)
class Change:
    doc_num: int
    posted: float  # time.monotonic() just before the POST


@dataclass(frozen=True)
class Delivery:
    """The SMS about one change that the Twilio simulator accepted by `seconds` after the POST."""

    seconds: float | None  # until `expected` distinct recipients had one; None: not within the timeout
    recipients: int  # distinct recipients with an SMS about the change
    messages: int  # SMS about the change (more than `recipients`: duplicates)

    @property
    def duplicates(self) -> int:
        return self.messages - self.recipients


def post_supplier_invoice(deployment: Deployment, reference: str) -> Change:
    """A new open supplier invoice in B1, through the simulator's HTTP admin API."""
    assert deployment.sims is not None, "the floor has no B1"
    fields = {"CardCode": "V20000", "NumAtCard": reference,
              "DocumentLines": [document_line(0, "C00002", 5)]}
    posted = time.monotonic()
    answer = httpx.post(f"{deployment.sims.sap.url}/_admin/documents/PurchaseInvoices", json=fields, timeout=30)
    answer.raise_for_status()
    return Change(int(answer.json()["DocNum"]), posted)


def sms_about(deployment: Deployment, doc_num: int) -> list[str]:
    """The recipients of every SMS whose text names the invoice (one entry per SMS)."""
    assert deployment.sims is not None
    number = re.compile(rf"\b{doc_num}\b")
    return [message["to"] for message in deployment.sims.twilio.messages() if number.search(message["body"])]


def wait_delivered(deployment: Deployment, change: Change, expected: int, timeout_s: float) -> Delivery:
    """Watch the Twilio simulator until `expected` distinct recipients have an SMS about `change`; the
    time is taken when the harness sees the last one (at most `POLL_S` late)."""
    deadline = change.posted + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = sms_about(deployment, change.doc_num)
        if len(set(seen)) >= expected:
            return Delivery(time.monotonic() - change.posted, len(set(seen)), len(seen))
        check_alive(deployment)
        time.sleep(POLL_S)
    return Delivery(None, len(set(seen)), len(seen))


def check_alive(deployment: Deployment) -> None:
    if deployment.dagster is not None and not deployment.dagster.alive():
        raise RuntimeError(f"dagster dev exited while waiting for SMS:\n{deployment.tail()}")


def recount(deployment: Deployment, change: Change, delivery: Delivery) -> Delivery:
    """`delivery` with the SMS about `change` counted again now: after a grace period, a duplicate sent
    late is counted too."""
    seen = sms_about(deployment, change.doc_num)
    return Delivery(delivery.seconds, len(set(seen)), len(seen))
