"""What happens in B1 during the demo, so every shipped rule kind sends something within its first minutes.

The seed covers the kinds that fire on the first sync (a new supplier invoice, overdue invoices, stock below
its reorder point). The others need changes while the pipeline watches: a purchase order is created and,
once its SMS went out, its due date moves; a customer invoice is created and paid. The scene starts when
the first alerts have gone out (the first sync is over, so these are changes, not history), makes one
change at a time a few seconds apart, and says so in the demo's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from b1twilio_sim.deployment import Simulators

PAUSE_S = 5.0  # between two changes: each shows as its own run and its own message


@dataclass
class _Step:
    ready: Callable[[], bool]
    act: Callable[[], str]


class DemoScene:
    """Call `step(elapsed)` about once a second; it makes the next change when its time has come."""

    def __init__(self, sims: Simulators) -> None:
        self.sims = sims
        self.order: dict | None = None
        self.invoice: dict | None = None
        self.steps = [
            _Step(lambda: bool(self.sims.twilio.messages()), self._create_purchase_order),
            _Step(lambda: True, self._create_sales_invoice),
            _Step(lambda: True, self._receive_payment),
            _Step(self._order_announced, self._move_order_due_date),
        ]
        self.next_at = 0.0

    def step(self, elapsed: float) -> str | None:
        """The line to print when a change was made now, else None."""
        if not self.steps or elapsed < self.next_at or not self.steps[0].ready():
            return None
        self.next_at = elapsed + PAUSE_S
        return self.steps.pop(0).act()

    def _create_purchase_order(self) -> str:
        self.order = self.sims.sap.add_document("PurchaseOrders", {
            "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A00005", "Quantity": 25, "Price": 60}]})
        return f"purchase order {self.order['DocNum']} created (rule kind purchase_order_changed)"

    def _order_announced(self) -> bool:
        wanted = f"Purchase order {self.order['DocNum']} " if self.order else None
        return wanted is not None and any(wanted in m["body"] for m in self.sims.twilio.messages())

    def _move_order_due_date(self) -> str:
        assert self.order is not None
        due = date.fromisoformat(self.order["DocDueDate"][:10]) + timedelta(days=7)
        self.sims.sap.update_document("PurchaseOrders", self.order["DocEntry"], {"DocDueDate": due.isoformat()})
        return f"purchase order {self.order['DocNum']}: due date moved a week later (purchase_order_changed)"

    def _create_sales_invoice(self) -> str:
        self.invoice = self.sims.sap.add_document("Invoices", {
            "CardCode": "C20000", "DocumentLines": [{"ItemCode": "A00001", "Quantity": 12, "Price": 45}]})
        return f"customer invoice {self.invoice['DocNum']} created (rule kind sales_invoice_created)"

    def _receive_payment(self) -> str:
        invoice = self.invoice
        assert invoice is not None  # created by the step before
        payment = self.sims.sap.add_document("IncomingPayments", {
            "CardCode": invoice["CardCode"], "TransferSum": invoice["DocTotal"],
            "PaymentInvoices": [{"DocEntry": invoice["DocEntry"], "SumApplied": invoice["DocTotal"]}]})
        return (f"payment {payment['DocNum']} received for invoice {invoice['DocNum']} "
                "(rule kind payment_received)")
