"""The companies file (B1TWILIO_COMPANIES): the SAP Business One company databases one deployment watches,
for partners who host many customers (and customers with one company database per country).

One entry per company: its Service Layer, login, time zone and rules file. The password is not in the
file but named (`password_ref`): an environment variable or a name in the encrypted secrets store, so the
file can be versioned and reviewed. The `id` is short and stable because it becomes part of partition
keys, dedup keys, run tags and the Codes of B1 audit records (at most 50 characters in B1).

Loaded like the rules file: YAML without duplicate keys, then pydantic, then what needs the whole file
(unique ids); every mistake is one line naming the file, the company and the field. When the setting is
unset, the single-company settings (B1_SERVICE_LAYER_URL, ...) describe the one company as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from b1twilio_pipeline.core.errors import FileConfigError
from b1twilio_pipeline.core.settings import COMPANY_ID, STORABLE_NAME, ServiceLayerUrl, TimeZone, current
from b1twilio_pipeline.core.yaml_file import read_yaml

Text = Annotated[str, Field(min_length=1, max_length=100)]


class CompaniesConfigError(FileConfigError):
    """The companies file is invalid; one line naming the file, the company and the field."""


class Company(BaseModel):
    """One B1 company database the deployment watches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=COMPANY_ID, description="2-8 lower-case letters and digits, e.g. de01")]
    name: Text
    service_layer_url: ServiceLayerUrl
    company_db: Text
    username: Text
    password_ref: Annotated[str, Field(pattern=STORABLE_NAME.pattern,
                                       description="the environment variable or stored secret with the password")]
    timezone: TimeZone
    rules: Text
    ca_bundle: Text | None = None

    def rules_path(self, companies_file: Path) -> Path:
        """The rules file, relative paths taken from the companies file's folder."""
        path = Path(self.rules).expanduser()
        return path if path.is_absolute() else companies_file.parent / path


class CompaniesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    companies: Annotated[list[Company], Field(min_length=1)]


def companies_path() -> Path | None:
    """B1TWILIO_COMPANIES, or None: one company, described by the single-company settings."""
    configured = current().b1twilio_companies
    return Path(configured).expanduser() if configured else None


def load_companies(path: str | Path) -> list[Company]:
    """Read and validate a companies file; CompaniesConfigError (one line) on any problem."""
    source = Path(path).expanduser()
    return parse_companies(read_yaml(source, "companies file", "check B1TWILIO_COMPANIES", CompaniesConfigError),
                           source)


def parse_companies(data: Any, source: Path) -> list[Company]:
    if not isinstance(data, dict):
        raise CompaniesConfigError(f"{source}: the top level must be a mapping with a list 'companies'")
    try:
        companies = CompaniesFile.model_validate(data).companies
    except ValidationError as exc:
        # A key that is not known explains a key that is missing (a typo): report it first.
        first = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")[0]
        raise CompaniesConfigError(f"{source}: {_explain(first, data)}") from None
    seen: set[str] = set()
    for company in companies:
        if company.id in seen:
            raise CompaniesConfigError(f"{source}: company '{company.id}': the id is given twice: each company "
                                       "needs its own (it is part of partition keys and audit records)")
        seen.add(company.id)
    return companies


def _explain(error: Any, data: dict[str, Any]) -> str:
    """`company 'de01' (entry 2): field 'timezone': ...` from a pydantic error."""
    location = list(error["loc"])
    if len(location) < 2 or location[0] != "companies" or not isinstance(location[1], int):
        field = ".".join(map(str, location)) or "companies"
        return f"field '{field}': {_message(error)}"
    index, field = location[1], ".".join(map(str, location[2:]))
    entries = data.get("companies")
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
    name = entry.get("id") if isinstance(entry, dict) else None
    who = f"company '{name}' (entry {index + 1})" if isinstance(name, str) else f"company entry {index + 1}"
    return f"{who}: field '{field}': {_message(error)}" if field else f"{who}: {_message(error)}"


def _message(error: Any) -> str:
    if error["type"] == "string_pattern_mismatch" and error["loc"][-1] == "id":
        return "must be 2-8 lower-case letters and digits starting with a letter, e.g. de01"
    if error["type"] == "string_pattern_mismatch" and error["loc"][-1] == "password_ref":
        return "must name a variable (A-Z, 0-9 and _, like B1_PASSWORD_DE01), not hold the password"
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known field (id, name, service_layer_url, company_db, username, password_ref, timezone, " \
               "rules, ca_bundle)"
    return str(error["msg"]).removeprefix("Value error, ")
