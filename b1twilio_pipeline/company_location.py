"""One code location per company of the companies file (B1TWILIO_COMPANIES): `b1twilio workspace` writes the
`workspace.yaml` naming this module once per company, with the company's id as the attribute.

Dagster loads each code location in its own process (its code server, and each run's worker), so such a
process serves exactly one company: loading attribute `de01` makes it company de01's (`settings.serve`)
before the stages are imported, then builds the ordinary definitions. From there every stage runs the
one-company code unchanged, with the company's Service Layer and login, time zone and rules file, its own
store (`company_database_url`), and its own path under the receiver (`/companies/de01/...`) for Twilio's
callbacks and B1's webhooks. The company's id prefixes every asset key and tags every run
(`core.company_scope`): the companies share one Dagster instance, UI and run queue, but no asset history.

Why locations rather than a company dimension in the partitions: a company's broken rules file or B1 outage
stays in its own location (the others load and tick on), a company is added or reloaded alone, and its
runs carry only its own resources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dagster as dg
import yaml

from b1twilio_pipeline.core import settings
from b1twilio_pipeline.core.companies import Company, companies_path, load_companies
from b1twilio_pipeline.core.database import company_database_url, database_url
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.notifications.public_urls import STATUS_PATH, company_public_url, join

STAGES = "b1twilio_pipeline.definitions"


def company_settings(company: Company, companies_file: Path) -> dict[str, str]:
    """The settings that make a process this company's, over the deployment's environment."""
    now = settings.current()
    values = {
        "b1_service_layer_url": company.service_layer_url, "b1_company_db": company.company_db,
        "b1_username": company.username, "b1_password_ref": company.password_ref, "b1_timezone": company.timezone,
        "b1twilio_timezone": company.timezone, "b1twilio_config": str(company.rules_path(companies_file)),
        "b1twilio_database_url": company_database_url(database_url(), company.id),
        "b1twilio_company": company.id, "b1twilio_company_name": company.name,
    }
    if company.ca_bundle:
        values["b1_ca_bundle"] = company.ca_bundle
    if now.b1twilio_public_url:
        public = company_public_url(now.b1twilio_public_url, company.id)
        values |= {"b1twilio_public_url": public, "twilio_status_callback_url": join(public, STATUS_PATH)}
    return values


def company_definitions(company_id: str) -> dg.Definitions:
    """The definitions of company `company_id`, this process made that company's first (Dagster asks for
    the attribute twice: the second time the process is that company's already)."""
    if settings.current().b1twilio_company != company_id:
        serve_company(company_id)
    from b1twilio_pipeline.definitions import defs  # after `serve`: the stages' asset keys carry the company

    return defs


def serve_company(company_id: str) -> None:
    """Make this process company `company_id`'s (a code location, or `b1twilio --company ID ...`)."""
    path = companies_path()
    if path is None:
        raise ConfigurationError(f"company {company_id}: B1TWILIO_COMPANIES is not set: set it to the companies "
                                 "file that describes the company")
    company = next((c for c in load_companies(path) if c.id == company_id), None)
    if company is None:
        raise ConfigurationError(f"company {company_id}: no such id in {path}: check the id (a workspace.yaml "
                                 "older than the file: regenerate it with `b1twilio workspace`)")
    if STAGES in sys.modules:
        raise ConfigurationError(f"company {company_id}: this process loaded the pipeline for another company "
                                 "already; each company needs its own code location")
    settings.serve(company_settings(company, path))


def workspace_yaml(companies: list[Company]) -> str:
    """The workspace: one code location per company, named by its id."""
    entries = [{"python_module": {"module_name": __name__, "attribute": company.id, "location_name": company.id}}
               for company in companies]
    return "# One code location per company of the companies file: `b1twilio workspace` wrote this.\n" + \
        yaml.safe_dump({"load_from": entries}, sort_keys=False)


def workspace_command(args: argparse.Namespace) -> int:
    """`b1twilio workspace [--companies FILE] [--output FILE]`."""
    path = Path(args.companies) if args.companies else companies_path()
    if path is None:
        raise ConfigurationError("no companies file: set B1TWILIO_COMPANIES or pass --companies FILE (with one "
                                 "company the shipped workspace.yaml is the workspace)")
    text = workspace_yaml(load_companies(path))
    if args.output in (None, "-"):
        print(text, end="")
    else:
        Path(args.output).write_text(text)
        print(f"{args.output}: {text.count('location_name')} code locations")
    return 0


def __getattr__(name: str) -> dg.Definitions:
    if name.startswith("__"):
        raise AttributeError(name)
    return company_definitions(name)
