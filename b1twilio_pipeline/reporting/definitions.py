"""The reporting stage's definitions: overdue receivables, refreshed with the invoices and after midnight."""

import dagster as dg

from b1twilio_pipeline.core.automation import follow_condition, with_condition
from b1twilio_pipeline.reporting.receivables import overdue_receivables


def reporting_definitions(timezone: str) -> dg.Definitions:
    return dg.Definitions(assets=[with_condition(overdue_receivables, follow_condition(timezone))])
