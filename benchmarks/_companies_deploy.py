"""A many-company deployment for the `companies` benchmark: `dagster dev` on the production instance
configuration (PostgreSQL scratch databases) serving the workspace `b1twilio workspace` writes from a
companies file, one B1 simulator per company (threads of this process, empty company databases), one
Twilio simulator. Everything runs with its shipped defaults; status callbacks are off (statuses polled),
as in the other daemon-level benchmarks.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from b1twilio_pipeline.company_location import workspace_yaml
from b1twilio_pipeline.core.companies import load_companies
from b1twilio_sim.deployment import (
    FROM_NUMBER,
    HOST,
    LOCATIONS_QUERY,
    child_environment,
    supplier_invoice_rules,
)
from b1twilio_sim.sap_b1 import SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator
from benchmarks._deploy import DagsterDeployment

TIMEZONE = "Europe/Berlin"
RECIPIENT = "+15005550101"
ACCOUNT_SID, AUTH_TOKEN = "AC" + "b" * 32, "c" * 32


def company_id(index: int) -> str:
    return f"co{index + 1:02d}"


def company_name(index: int) -> str:
    return f"Company {index + 1:02d}"


class CompaniesDeployment(DagsterDeployment):
    """`count` companies in one deployment under `workdir`; `close()` stops and drops everything."""

    def __init__(self, count: int, workdir: Path) -> None:
        super().__init__(workdir / f"companies-{count}-{int(time.time())}", f"companies_{count}")
        self.count = count
        self.sap: dict[str, SapB1Simulator] = {}
        self.twilio: TwilioSimulator | None = None

    def start(self) -> None:
        instance_yaml = self.instance_database("bench_companies_dagster")
        store_url = self.scratch_database("bench_companies_store")
        (self.home / "dagster.yaml").write_text(instance_yaml)
        for index in range(self.count):
            self.sap[company_id(index)] = SapB1Simulator(
                HOST, 0, company_db=f"SBO{index + 1:02d}", username="manager", password=f"pw-{index}",
                timezone=TIMEZONE, seed=False).start_background()
        self.twilio = TwilioSimulator(HOST, 0, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start_background()
        (self.folder / "rules.yaml").write_text(supplier_invoice_rules(RECIPIENT, TIMEZONE))
        companies = self.folder / "companies.yaml"
        companies.write_text("companies:\n" + "".join(
            f"  - {{id: {company_id(i)}, name: {company_name(i)}, "
            f"service_layer_url: '{self.sap[company_id(i)].base_url}',"
            f" company_db: SBO{i + 1:02d}, username: manager, password_ref: B1_PASSWORD_{company_id(i).upper()},"
            f" timezone: {TIMEZONE}, rules: rules.yaml}}\n" for i in range(self.count)))
        env = child_environment({
            "DAGSTER_HOME": str(self.home), "B1TWILIO_COMPANIES": str(companies),
            "B1TWILIO_DATABASE_URL": store_url, "B1TWILIO_SECRETS_FILE": str(self.folder / "no-secrets.enc"),
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": self.twilio.url,
            **{f"B1_PASSWORD_{company_id(i).upper()}": f"pw-{i}" for i in range(self.count)},
        })
        self.launch(self.folder, env, workspace_yaml(load_companies(companies)))

    def wait_ready(self, timeout_s: float = 900.0) -> float:
        """Seconds until every company's code location loaded and the daemon's sensor loop beats."""
        assert self.dagster is not None and self.instance is not None
        started = time.monotonic()
        with httpx.Client(timeout=30.0) as client:
            while time.monotonic() - started < timeout_s:
                if not self.dagster.alive():
                    raise RuntimeError(f"dagster dev exited:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
                    entries = client.post(f"{self.dagster.url}/graphql", json={"query": LOCATIONS_QUERY}).json()[
                        "data"]["workspaceOrError"]["locationEntries"]
                    failed = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
                    if failed:
                        raise RuntimeError(f"{failed[0]['name']}: {failed[0]['locationOrLoadError']['message'][:600]}")
                    loaded = len(entries) == self.count and all(e["loadStatus"] == "LOADED" for e in entries)
                    if loaded and "SENSOR" in self.instance.get_daemon_heartbeats():
                        return time.monotonic() - started
                time.sleep(2.0)
        raise RuntimeError(f"{self.count} companies not ready within {timeout_s:.0f} s:\n{self.tail()}")

    def b1_requests(self) -> dict[str, int]:
        return {company: sap.count_requests() for company, sap in self.sap.items()}

    def texts(self) -> list[str]:
        assert self.twilio is not None
        return [message["body"] for message in self.twilio.messages()]

    def stop_simulators(self) -> None:
        for simulator in (*self.sap.values(), *([self.twilio] if self.twilio else [])):
            with contextlib.suppress(Exception):
                simulator.stop()
