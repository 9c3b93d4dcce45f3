"""`b1twilio check-config`: is the configuration sound before it is deployed? A rules file (each rule said
in a sentence, numbers masked), or the companies file and every rules file it names. Mistakes are one
`error:` line (exit status 2); what only matters later, such as a phone or password reference not set on
this machine, is a warning."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.core.companies import companies_path, load_companies
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.settings import named_value


def check_config_command(args: argparse.Namespace) -> int:
    """`b1twilio check-config [FILE] [--companies FILE]`."""
    companies_file = Path(args.companies) if args.companies else None if args.file else companies_path()
    if companies_file is None:
        _check_rules(args.file)
        return 0
    companies = load_companies(companies_file)  # invalid: a ConfigurationError (exit 2)
    print(f"{companies_file}: OK, {len(companies)} companies")
    for company in companies:
        print(f"company {company.id} ({company.name}): {company.company_db} at {company.service_layer_url}, "
              f"user {company.username}, time zone {company.timezone}")
        if not named_value(company.password_ref):
            print(f"warning: company '{company.id}': {company.password_ref} (its password_ref) is not set: set the "
                  f"environment variable or `b1twilio secrets set {company.password_ref} --force`", file=sys.stderr)
        rules = company.rules_path(companies_file)
        if not rules.is_file():
            raise ConfigurationError(f"company '{company.id}': rules file {rules} not found: check its 'rules' in "
                                     f"{companies_file} (a relative path is taken from that file's folder)")
        try:
            _check_rules(rules, indent="  ")
        except ConfigurationError as error:
            raise ConfigurationError(f"company '{company.id}': {error}") from None
    return 0


def _check_rules(path: str | Path | None, indent: str = "") -> None:
    config = load_rules(path)  # an invalid file: RulesConfigError, a ConfigurationError (exit 2)
    enabled = len(config.enabled_rules())
    print(f"{indent}{config.source}: OK, {len(config.rules)} rules ({enabled} enabled), time zone "
          f"{config.timezone}, locale {config.locale}")
    for rule in config.rules:
        print(f"{indent}  {config.describe_rule(rule)}")
    warned: set[str] = set()
    for group in config.recipients.values():
        for person in group:
            if person.phone_ref and person.key not in warned:
                warned.add(person.key)
                try:
                    person.resolve_phone()
                except ConfigurationError as exc:
                    print(f"warning: {' '.join(str(exc).split())}", file=sys.stderr)
