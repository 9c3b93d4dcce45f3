"""The fault lab: the real pipeline under the Dagster daemon, on PostgreSQL with the production instance
configuration, against the simulators, with faults caused for real (the simulators' fault switches,
SIGKILL of run workers and of the whole instance, a PostgreSQL restart, forged callbacks).

Each scenario creates its own supplier invoices (so its alerts are told apart by DocNum), causes its
fault, clears it, and waits until every expected SMS reached Twilio. At the end, after a quiet period,
every scenario's SMS are counted once more: a late duplicate from a re-drive would show there.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from b1twilio_pipeline.core.database import dispose_engine, engine_for
from b1twilio_pipeline.core.secrets_store import SecretsStore, generate_key
from b1twilio_pipeline.notifications.ledger import Ledger
from b1twilio_pipeline_tests.fixtures_pipeline import POSTGRES, create_database, drop_database
from b1twilio_sim.deployment import (
    Credentials,
    DagsterProcess,
    Simulators,
    child_environment,
    pipeline_environment,
    postgres_instance,
    run_worker_pids,
    start_simulators,
)

ROOT = Path(__file__).resolve().parents[1]
TIMEZONE = "Europe/Berlin"
DANA, RAY, KIM = "+15005550101", "+15005550102", "+15005550105"
LEASE_S = 45
RULES = f"""\
timezone: {TIMEZONE}
recipients:
  ap_team:
    - {{name: Dana, phone: "{DANA}"}}
    - {{name: Ray, phone: "{RAY}"}}
  buyers:
    - {{name: Kim, phone_ref: kim}}
rules:
  - id: ap-new-supplier-invoice
    kind: purchase_invoice_received
    channel: sms
    recipients: [ap_team]
    template: "Supplier invoice {{DocNum}} from {{CardName}}: {{DocTotal:,.2f}} {{DocCurrency}}"
  - id: po-changed
    kind: purchase_order_changed
    channel: sms
    recipients: [buyers]
    template: "Purchase order {{DocNum}}: {{change}}"
"""


@dataclass
class Result:
    fault: str
    expected: int
    delivered: int = 0
    duplicated: int = 0
    seconds: float | None = None
    note: str = ""

    @property
    def lost(self) -> int:
        return self.expected - self.delivered


@dataclass
class Phase:
    """One scenario's expectations: (phone, DocNum) pairs that must reach Twilio exactly once."""

    name: str
    started: float = field(default_factory=time.monotonic)
    expected: set[tuple[str, int]] = field(default_factory=set)


class FaultLab:
    """One deployment for the whole suite; `run(name, scenario)` records a row of the fault table."""

    def __init__(self, root: Path, *, burst: int) -> None:
        self.root, self.burst = root, burst
        self.note = ""  # what a scenario wants said about its run, in the table
        self.results: list[Result] = []
        self.phases: list[Phase] = []
        admin = sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self._admin = admin
        self._databases = [create_database(admin, "faults_dagster"), create_database(admin, "faults_store")]
        (_, dagster_url), (_, self.store_url) = self._databases
        self.dagster_home = root / "dagster_home"
        self.dagster_home.mkdir(parents=True)
        (self.dagster_home / "dagster.yaml").write_text(postgres_instance(dagster_url))
        rules = root / "rules.yaml"
        rules.write_text(RULES)
        self.secrets_file, self.secret_key = root / "secrets.enc", generate_key()
        creds = Credentials.from_environment()
        self.creds = creds
        self.sims: Simulators = start_simulators(creds, self.store_url, timezone=TIMEZONE, seed=False,
                                                 status_delay_s=0.2)
        env = pipeline_environment(creds, self.sims, dagster_home=self.dagster_home, rules=rules,
                                   database_url=self.store_url, timezone=TIMEZONE, secrets_file=self.secrets_file)
        env.update({
            "B1TWILIO_SECRET_KEY": self.secret_key,
            "B1TWILIO_CHANGE_CHECK_SECONDS": "5",
            "B1TWILIO_SEND_RETRY_SECONDS": "3",
            "B1TWILIO_NOTIFICATION_CHECK_SECONDS": "5",
            "B1TWILIO_SEND_LEASE_SECONDS": str(LEASE_S),
            "B1TWILIO_SEND_MAX_ATTEMPTS": "30",
            "B1TWILIO_PARTITIONS_START": f"{datetime.now(UTC):%Y-%m-%d}-00:00",
        })
        self.env = child_environment(env)
        self.dagster = DagsterProcess(root, self.env, root / "logs" / "daemon.log", ui_port=None)
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        self.ledger = Ledger(engine_for(self.store_url))

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dagster.stop()
            self.dagster.close()
        self.sims.stop()
        self.instance.dispose()
        dispose_engine(self.store_url)
        for name, _ in self._databases:
            drop_database(self._admin, name)
        self._admin.dispose()

    def wait_daemon(self, timeout_s: float = 120.0) -> None:
        """Until the daemon's sensor loop has beaten (it then evaluates sensors every few seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.dagster.alive(), f"dagster-daemon exited:\n{self.log_tail()}"
            if "SENSOR" in self.instance.get_daemon_heartbeats():
                return
            time.sleep(1)
        raise AssertionError(f"the daemon did not start within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.dagster.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- causing work -----------------------------------------------------------------------------
    def invoices(self, phase: Phase, count: int) -> list[dict]:
        docs = [self.sims.sap.add_document("PurchaseInvoices", {
            "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]})
            for _ in range(count)]
        phase.expected |= {(phone, doc["DocNum"]) for doc in docs for phone in (DANA, RAY)}
        return docs

    @staticmethod
    def _about(message: dict) -> tuple[str, int] | None:
        match = re.search(r"(?:invoice|order) (\d+)", message["body"])
        return (message["to"], int(match.group(1))) if match else None

    def matches(self, message: dict, phase: Phase) -> bool:
        return self._about(message) in phase.expected

    def delivered(self, phase: Phase) -> Counter[tuple[str, int]]:
        """How often each expected (phone, DocNum) reached Twilio."""
        return Counter(about for m in self.sims.twilio.messages() if (about := self._about(m)) in phase.expected)

    def wait_delivered(self, phase: Phase, timeout_s: float) -> float | None:
        """Seconds from the phase's start until every expected SMS reached Twilio, or None."""
        deadline = phase.started + timeout_s
        while time.monotonic() < deadline:
            if set(self.delivered(phase)) >= phase.expected:
                return time.monotonic() - phase.started
            assert self.dagster.alive(), f"dagster-daemon exited:\n{self.log_tail()}"
            time.sleep(0.5)
        return None

    def run(self, name: str, scenario: Callable[[FaultLab, Phase], None], timeout_s: float = 240.0) -> None:
        phase = Phase(name)
        self.phases.append(phase)
        self.note = ""
        scenario(self, phase)
        seconds = self.wait_delivered(phase, timeout_s)
        counts = self.delivered(phase)
        self.results.append(Result(name, len(phase.expected), len(counts),
                                   sum(n - 1 for n in counts.values() if n > 1), seconds, self.note))
        print(f"fault suite: {self.results[-1]}", flush=True)

    def settle(self, timeout_s: float = 300.0) -> None:
        """Until nothing in the ledger is planned or being sent any more (re-drives and take-overs done)."""
        far = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
        self.wait_for(lambda: not self.ledger.due(far), timeout_s, "every notification to be final")

    def recount(self) -> None:
        """After the quiet period: duplicates that arrived late count too."""
        for phase, result in zip(self.phases, self.results, strict=True):
            counts = self.delivered(phase)
            result.delivered = len(counts)
            result.duplicated = sum(n - 1 for n in counts.values() if n > 1)

    # -- fault helpers ----------------------------------------------------------------------------
    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log_tail()}"
            time.sleep(0.2)

    def posts_to_twilio(self) -> int:
        return sum(1 for r in self.sims.twilio.api_requests() if r.method == "POST")

    def notify_runs(self, *statuses: dg.DagsterRunStatus) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(job_name="notify_job", statuses=list(statuses))))

    def launch_again(self, run: dg.DagsterRun) -> None:
        """Submit another run of the same job and config, as an operator re-executing it would."""
        import json

        subprocess.run([sys.executable, "-m", "dagster", "job", "launch", "-w", str(self.root / "workspace.yaml"),
                        "-j", run.job_name, "--config-json", json.dumps(run.run_config)],
                       cwd=self.root, env=self.env, check=True, capture_output=True, timeout=180)

    def kill_run_workers(self) -> int:
        pids = run_worker_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        return len(pids)

    def restart_postgres(self) -> None:
        version = sorted(os.listdir("/etc/postgresql"))[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                       capture_output=True, timeout=120)

    def forge_callbacks(self, phase: Phase) -> list[int]:
        """Post a 'failed' status for each of the phase's messages, signed with the wrong token."""
        answers = []
        wrong = RequestValidator("not-the-auth-token")
        for message in self.sims.twilio.messages():
            if not self.matches(message, phase):
                continue
            params = {"MessageSid": message["sid"], "MessageStatus": "failed", "AccountSid": self.creds.account_sid,
                      "To": message["to"], "ErrorCode": "30008"}
            signature = wrong.compute_signature(self.sims.callback_url, params)
            answers.append(httpx.post(self.sims.callback_url, data=params, timeout=5,
                                      headers={"X-Twilio-Signature": signature}).status_code)
        return answers

    def set_secret(self, name: str, value: str) -> None:
        SecretsStore(self.secrets_file, self.secret_key).set(name, value)


@contextlib.contextmanager
def fault_lab(root: Path, burst: int) -> Iterator[FaultLab]:
    lab = FaultLab(root, burst=burst)
    try:
        lab.wait_daemon()
        yield lab
    finally:
        lab.close()


def markdown(results: list[Result], *, burst: int, started: datetime, total_s: float) -> str:
    rows = "\n".join(
        f"| {r.fault} | {r.expected} | {r.delivered} | {r.lost} | {r.duplicated} | "
        f"{'' if r.seconds is None else f'{r.seconds:.0f}'} | {r.note} |" for r in results)
    return f"""# Fault suite

Written by `make faults` ({started:%Y-%m-%d %H:%M} UTC, {total_s / 60:.1f} minutes): the real pipeline under
`dagster-daemon`, on PostgreSQL with the production instance configuration (run queue, limits, run
retries, monitoring), against the B1 and Twilio simulators. Each fault is caused for real (the simulators'
fault switches, SIGKILL, a PostgreSQL restart) while its own supplier invoices flow through; each invoice
notifies two people by SMS, so a burst of {burst} invoices is {2 * burst} notifications. "Delivered" counts
distinct notifications Twilio accepted; "duplicated" counts extra acceptances of the same notification,
recounted at the end once every notification in the ledger was final (so a late re-drive or take-over
would show). Time is from causing the change in B1 until the last of the scenario's SMS was accepted.

Settings of the run: B1 asked every 5 s, the ledger every 5 s; re-drive after 3 s, doubling; a worker's lease
{LEASE_S} s.

| fault | alerts expected | delivered | lost | duplicated | seconds until all delivered | notes |
|---|---:|---:|---:|---:|---:|---|
{rows}
"""
