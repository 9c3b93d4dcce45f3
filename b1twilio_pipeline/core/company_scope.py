"""What makes a company's Dagster objects its own when several companies share one Dagster instance (one
UI, one run queue): its id prefixes every asset key (`de01/b1/purchase_invoices`), so no asset's history,
partitions or automation state is shared, and tags every run (`b1twilio/company`), so the run list filters
by company and the run queue limits each company on its own.

The company is the one this process serves (B1TWILIO_COMPANY, set per code location by
`b1twilio_pipeline.company_location`); with one company nothing is prefixed or tagged, and keys and tags are
what they always were. Keys are made when the stages' modules are imported, which is why a process serves
one company for its whole life.
"""

from __future__ import annotations

import dagster as dg

from b1twilio_pipeline.core.settings import current

COMPANY = "b1twilio/company"


def served_company() -> str | None:
    """The id of the company this process serves, None in a one-company deployment."""
    return current().b1twilio_company


def asset_key(*path: str, company: str | None = None) -> dg.AssetKey:
    """The key of a stage's asset for `company` (default: the served one)."""
    owner = company or served_company()
    return dg.AssetKey([owner, *path] if owner else list(path))


def company_tags() -> dict[str, str]:
    """The tags that scope a run (and a query for runs) to the served company; empty with one company."""
    company = served_company()
    return {COMPANY: company} if company else {}


def pipeline_name() -> str:
    """How the pipeline signs what it tells the admins itself: with the company's name when it serves one of
    several ("b1twilio (Muster GmbH): B1 is not answering ..."), so an admin of many knows which."""
    name = current().b1twilio_company_name
    return f"b1twilio ({name})" if name else "b1twilio"
