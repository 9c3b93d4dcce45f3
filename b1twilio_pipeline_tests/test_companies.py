"""Many companies in one deployment, end to end: `dagster dev` on PostgreSQL serving the workspace that
`b1twilio workspace` writes from a companies file (a code location per company), two B1 simulators (two
company databases, both starting at DocNum 1), one Twilio account, and `b1twilio receiver` serving both
companies' callbacks under their own paths.

Each company's alert arrives once and names the company, its receipts are written to its own B1 audit
table, a reply to the number both share acknowledges the company it names, its runs carry its tag and its
assets its prefix; a B1 outage of one company does not hold the other company's alerts back.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.core.company_scope import COMPANY
from b1twilio_pipeline_tests.fixtures_pipeline import POSTGRES, create_database, drop_database
from b1twilio_sim.deployment import (
    LOCATIONS_QUERY,
    DagsterProcess,
    free_port,
    postgres_instance,
    supplier_invoice_rules,
)
from b1twilio_sim.sap_b1 import SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator

pytestmark = [pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DANA = "+15005550101"
ACCOUNT_SID, AUTH_TOKEN = "AC" + "1" * 32, "f" * 32
RULES = supplier_invoice_rules(DANA, "Europe/Berlin")
COMPANIES = {"de01": ("Muster GmbH", "SBODEMODE"), "us01": ("Acme Inc", "SBODEMOUS")}


@dataclass
class Deployment:
    sap: dict[str, SapB1Simulator]
    twilio: TwilioSimulator
    instance: dg.DagsterInstance
    dagster: DagsterProcess

    def invoice(self, company: str) -> int:
        doc = self.sap[company].add_document("PurchaseInvoices", {
            "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 10}]})
        return int(doc["DocNum"])

    def texts(self) -> list[str]:
        return [message["body"] for message in self.twilio.messages()]

    def sent(self, start: str) -> list[str]:
        """The SMS that begin with `start` (the acknowledgement code follows the text)."""
        return [text for text in self.texts() if text.startswith(start)]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.dagster.alive(), f"dagster dev exited:\n{self.tail()}"
            if condition():
                return
            time.sleep(1)
        raise AssertionError(f"{what} within {timeout_s:.0f} s; SMS so far: {self.texts()}\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.dagster.log_path.read_text(errors="replace").splitlines()[-30:])


def _wait_loaded(dagster: DagsterProcess, timeout_s: float = 180) -> list[str]:
    """The code locations' names once all of them loaded; a load error fails at once with its message."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
                entries = client.post(f"{dagster.url}/graphql", json={"query": LOCATIONS_QUERY}).json()[
                    "data"]["workspaceOrError"]["locationEntries"]
                errors = [entry["locationOrLoadError"] for entry in entries
                          if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
                assert not errors, errors[0]["message"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    return sorted(entry["name"] for entry in entries)
            time.sleep(1)
    raise AssertionError(f"the code locations did not load within {timeout_s:.0f} s")


def _receiver(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "b1twilio_pipeline.cli", "receiver", "--host", HOST,
                                "--port", str(port)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while "listening on" not in log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)
    return process


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("companies")
    admin = sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT")
    databases = [create_database(admin, "companies_dagster"), create_database(admin, "companies_store")]
    (_, dagster_url), (_, store_url) = databases
    sap = {company: SapB1Simulator(HOST, 0, company_db=db, username="manager", password=f"pw-{company}",
                                   timezone="Europe/Berlin", seed=False).start_background()
           for company, (_name, db) in COMPANIES.items()}
    twilio = TwilioSimulator(HOST, 0, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                             status_delay_s=0.2).start_background()
    (root / "rules.yaml").write_text(RULES)
    (root / "companies.yaml").write_text("companies:\n" + "".join(
        f"  - {{id: {company}, name: {name}, service_layer_url: '{sap[company].base_url}', company_db: {db}, "
        f"username: manager, password_ref: B1_PASSWORD_{company.upper()}, timezone: Europe/Berlin, "
        "rules: rules.yaml}\n" for company, (name, db) in COMPANIES.items()))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(postgres_instance(dagster_url))
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("B1_", "B1TWILIO_", "TWILIO_", "PHONE_"))}
    env.update({
        "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
        "B1TWILIO_COMPANIES": str(root / "companies.yaml"), "B1TWILIO_DATABASE_URL": store_url,
        "B1_PASSWORD_DE01": "pw-de01", "B1_PASSWORD_US01": "pw-us01",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": twilio.url, "B1TWILIO_PUBLIC_URL": f"http://{HOST}:{port}",
        "B1TWILIO_SECRETS_FILE": str(root / "no-secrets.enc"),
        "B1TWILIO_CHANGE_CHECK_SECONDS": "5", "B1TWILIO_NOTIFICATION_CHECK_SECONDS": "5",
        "B1TWILIO_PARTITIONS_START": f"{datetime.now(UTC):%Y-%m-%d}-00:00",
    })
    workspace = subprocess.run([sys.executable, "-m", "b1twilio_pipeline.cli", "workspace"], env=env,
                               capture_output=True, text=True, check=True).stdout
    receiver = _receiver(env, port, root / "receiver.log")
    twilio.set_sms_url(f"http://{HOST}:{port}/twilio/sms")  # one number for both companies
    dagster = DagsterProcess(root, env, root / "dagster.log", ui_port=free_port(), workspace=workspace)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert _wait_loaded(dagster) == sorted(COMPANIES)
        yield Deployment(sap, twilio, instance, dagster)
    finally:
        dagster.kill()  # nothing to keep: a graceful stop of two code locations takes half a minute
        dagster.close()
        receiver.terminate()
        receiver.wait(30)
        instance.dispose()
        for simulator in (*sap.values(), twilio):
            simulator.stop()
        for name, _url in databases:
            drop_database(admin, name)
        admin.dispose()


def test_each_company_is_alerted_once_by_name_and_audited_in_its_own_b1(deployment: Deployment) -> None:
    first = {company: deployment.invoice(company) for company in COMPANIES}
    assert first["de01"] == first["us01"]  # the same DocNum in two companies is two events
    deployment.wait_for(lambda: len(deployment.texts()) >= 2, 240, "an SMS for each company")
    for company, (name, _db) in COMPANIES.items():
        deployment.wait_for(lambda sap=deployment.sap[company]: [row["U_Status"] for row in sap.udt_rows(
            "B1TW_AUDIT")] == ["delivered"], 180, f"{company}'s receipt in its own B1 audit table")
        assert len(deployment.sent(f"{name}: Supplier invoice {first[company]} from Acme Office Supplies")) == 1
    time.sleep(10)  # a second send would have happened by now (the notification sensor ticks every 5 s)
    assert len(deployment.texts()) == 2, deployment.texts()

    code = re.search(r"Reply (\w+) to acknowledge", deployment.sent("Muster GmbH")[0])
    assert code is not None and code[1] not in deployment.sent("Acme Inc")[0]  # codes differ by company
    assert deployment.twilio.reply(DANA, code[1].lower())["http_status"] == 200
    deployment.wait_for(lambda: "acknowledged" in [row["U_Status"] for row in deployment.sap["de01"].udt_rows(
        "B1TW_AUDIT")], 120, "Dana's reply to the shared number acknowledged in de01's B1")
    assert [row["U_Status"] for row in deployment.sap["us01"].udt_rows("B1TW_AUDIT")] == ["delivered"]

    runs = deployment.instance.get_runs()
    assert runs and all(run.tags.get(COMPANY) in COMPANIES for run in runs), [run.tags for run in runs]
    assert {run.tags[COMPANY] for run in runs} == set(COMPANIES)
    for company in COMPANIES:
        key = dg.AssetKey([company, "b1", "purchase_invoices"])
        assert deployment.instance.get_latest_materialization_event(key) is not None, key


def test_a_b1_outage_of_one_company_does_not_delay_the_other(deployment: Deployment) -> None:
    before = len(deployment.texts())
    deployment.sap["de01"].set_faults(fail_all=True, fail_status=503)
    try:
        down, up = deployment.invoice("de01"), deployment.invoice("us01")
        deployment.wait_for(lambda: deployment.sent(f"Acme Inc: Supplier invoice {up} from"), 120,
                            "us01's alert while de01's B1 is down")
        assert not [text for text in deployment.texts()[before:] if text.startswith("Muster GmbH")]
    finally:
        deployment.sap["de01"].set_faults(fail_all=False)
    deployment.wait_for(lambda: deployment.sent(f"Muster GmbH: Supplier invoice {down} from"), 240,
                        "de01's alert once its B1 answers again")
    about = [text.split(":")[0] for text in deployment.texts() if re.search(rf"invoice {down} from", text)]
    assert sorted(about) == ["Acme Inc", "Muster GmbH"]  # each once (both companies' invoice got this DocNum)
