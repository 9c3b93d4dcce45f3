"""Overdue receivables by customer and age: the credit controller's view of what the overdue rule
watches, computed with pandas from the invoice snapshots and shown as the asset's metadata."""

from collections.abc import Iterable
from datetime import date, datetime

import dagster as dg
import pandas as pd

from b1twilio_pipeline.alerts.assets import ALERTS_GROUP
from b1twilio_pipeline.alerts.evaluation import open_amount, parse_day
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.b1.snapshot_store import Snapshot, SnapshotStore
from b1twilio_pipeline.b1.state import OPEN_INVOICES_KEY
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.markdown import markdown_table

AGING_BUCKETS = (0, 30, 60, 90)
BUCKET_LABELS = ("1-30 days", "31-60 days", "61-90 days", "over 90 days")


def aging_frame(invoices: Iterable[Snapshot], today: date) -> pd.DataFrame:
    """One row per open, overdue invoice with something left to pay."""
    rows = []
    for snap in invoices:
        doc = snap.payload
        due = parse_day(doc.get("DocDueDate"))
        if doc.get("DocumentStatus") != "bost_Open" or doc.get("Cancelled") == "tYES" or due is None:
            continue
        days = (today - due).days
        amount = open_amount(doc)
        if days > 0 and amount > 0.005:
            rows.append({"customer": doc.get("CardName") or doc.get("CardCode"), "currency": doc.get("DocCurrency"),
                         "days_overdue": days, "open_amount": amount})
    return pd.DataFrame(rows, columns=["customer", "currency", "days_overdue", "open_amount"])


def aging_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Open amount per customer and currency in 30-day buckets, largest total first."""
    if frame.empty:
        return pd.DataFrame(columns=["customer", "currency", *BUCKET_LABELS, "total"])
    bucket = pd.cut(frame["days_overdue"], bins=[*AGING_BUCKETS, float("inf")], labels=BUCKET_LABELS)
    table = frame.assign(bucket=bucket).pivot_table(
        index=["customer", "currency"], columns="bucket", values="open_amount", aggfunc="sum",
        fill_value=0.0, observed=False)
    table = table.reindex(columns=list(BUCKET_LABELS), fill_value=0.0).astype(float)
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False).reset_index()


@dg.asset(
    key=asset_key("alerts", "overdue_receivables"),
    deps=[asset_key("b1", "sales_invoices"), OPEN_INVOICES_KEY],
    group_name=ALERTS_GROUP,
    kinds={"pandas"},
    description="Overdue open amounts per customer and currency in 30-day buckets (what the overdue "
                "rule watches), as of today in the company's time zone.",
)
def overdue_receivables(rules: RulesResource, database: DatabaseResource) -> dg.MaterializeResult:
    today = datetime.now(rules.load().tz).date()
    frame = aging_frame(SnapshotStore(database.engine).iter_entity("Invoices", open_only=True), today)
    summary = aging_summary(frame)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(summary),
        "overdue_invoices": len(frame),
        "as_of": today.isoformat(),
        "aging": dg.MetadataValue.md(markdown_table(summary.to_dict("records"), empty="No overdue invoices.")),
    })
