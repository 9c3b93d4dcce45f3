"""Pipeline fixtures: PostgreSQL databases for Dagster's storage and the snapshot store, and a harness
that drives the real definitions (assets, jobs, sensors) against both simulators in a real instance.

The harness executes what the daemon would launch, in-process: sensor ticks are real evaluations with
persisted cursors, runs are real runs in the PostgreSQL-backed instance. Run-key dedupe by the daemon
itself is covered by the live `dagster dev` test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.core.database import dispose_engine
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.schema import notifications
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.definitions import build_definitions
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.ledger import PLANNED, Ledger
from b1twilio_pipeline.notifications.send import NOTIFICATIONS_KEY
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_pipeline_tests.fixtures_twilio import SIM_FROM_NUMBER
from b1twilio_sim.sap_b1 import DEMO_PASSWORD, SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator

POSTGRES = os.environ.get("B1TWILIO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[sa.Engine]:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES}: start it "
                    f"(pg_ctlcluster ... main start) — {error.orig}")
    yield engine
    engine.dispose()


def create_database(admin: sa.Engine, purpose: str) -> tuple[str, str]:
    name = f"b1tw_{purpose}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return name, f"{POSTGRES}/{name}"


def drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_store_url(postgres: sa.Engine) -> Iterator[str]:
    """A fresh PostgreSQL database for the snapshot store and ledger of one test."""
    name, url = create_database(postgres, "store")
    yield url
    dispose_engine(url)
    drop_database(postgres, name)


@contextmanager
def _pg_instance(postgres: sa.Engine) -> Iterator[dg.DagsterInstance]:
    name, url = create_database(postgres, "dagster")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as instance:
        yield instance
    drop_database(postgres, name)


@pytest.fixture(scope="session")
def pg_instance(postgres: sa.Engine) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose run, event-log and schedule storage is PostgreSQL (dagster-postgres)."""
    with _pg_instance(postgres) as instance:
        yield instance


@pytest.fixture
def fresh_pg_instance(postgres: sa.Engine) -> Iterator[dg.DagsterInstance]:
    """A PostgreSQL-backed instance of this test alone (for what depends on the instance's history)."""
    with _pg_instance(postgres) as instance:
        yield instance


TEST_RULES = """
timezone: UTC
recipients:
  ap_team:
    - {name: Dana, phone: "+15005550101"}
    - {name: Ray, phone: "+15005550102"}
  credit_control:
    - {name: Sam, phone: "+15005550103"}
  warehouse:
    - {name: Lee, phone: "+15005550104"}
  buyers:
    - {name: Kim, phone: "+15005550105"}
  night_shift:
    - {name: Max, phone: "+15005550106"}
  on_call:
    - {name: Ada, phone: "+15005550107"}
    - {name: Bo, phone: "+15005550108"}
rules:
  - id: ap-new-supplier-invoice
    kind: purchase_invoice_received
    channel: sms
    recipients: [ap_team]
    template: "New supplier invoice {DocNum} from {CardName}: {DocTotal:,.2f} {DocCurrency}, due {DocDueDate}"
  - id: overdue-30
    kind: payment_overdue
    days_overdue: 30
    renotify_every_days: 7
    channel: voice
    recipients: [credit_control]
    template: >-
      {CardName} is {days_overdue} days overdue on invoice {DocNum}:
      {open_amount:,.2f} {DocCurrency}, due {DocDueDate}.
  - id: reorder-01
    kind: stock_below_reorder
    channel: sms
    warehouses: ["01"]
    recipients: [warehouse]
    template: "Stock of {ItemCode} {ItemName} in {WarehouseCode} is {InStock:g}, below reorder point {MinimalStock:g}."
  - id: po-watch
    kind: purchase_order_changed
    channel: sms_then_voice
    recipients: [buyers]
    template: "PO {DocNum} for {CardName}: {change}"
  - id: new-customer-invoice-quiet
    kind: sales_invoice_created
    channel: sms
    recipients: [night_shift]
    quiet_hours: {start: "00:00", end: "23:59"}
    template: "Invoice {DocNum} to {CardName}: {DocTotal:,.2f}"
  - id: big-payment
    kind: payment_received
    channel: voice
    min_amount: 1000
    escalation: {next_recipient: true}
    recipients: [on_call]
    template: "{CardName} paid {amount:,.2f} {DocCurrency} for invoices {invoices}"
"""


@dataclass
class Pipeline:
    """The real definitions wired to simulators and a PostgreSQL store, driven step by step."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    sap: SapB1Simulator
    twilio: TwilioSimulator
    database: DatabaseResource
    rules_file: Path
    cursors: dict[str, str | None] = field(default_factory=dict)

    def snapshots(self) -> SnapshotStore:
        return SnapshotStore(self.database.engine)

    def alerts(self) -> AlertStore:
        return AlertStore(self.database.engine)

    def ledger(self) -> Ledger:
        return Ledger(self.database.engine)

    def delivery_log(self) -> DeliveryLog:
        return DeliveryLog(self.database.engine)

    def run_job(self, name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(name).execute_in_process(instance=self.instance, **kwargs)
        assert result.success, name
        return result

    def poll(self, when: datetime | None = None) -> dg.ExecuteInProcessResult:
        """What the poll schedule does for the open window at `when` (default: the B1 clock's now)."""
        partitions = self.defs.resolve_job_def("snapshot_job").partitions_def
        moment = when or self.sap.clock.now()
        key = partitions.get_partition_key_for_timestamp(moment.timestamp())
        return self.run_job("snapshot_job", partition_key=key)

    def plan_unsent(self) -> None:
        """Read and evaluate the open window while Twilio refuses every request, then end the outage and let
        the backoff pass: the ledger holds planned rows that are due and not sent (the plan step's attempt
        at once failed), as a later sending run finds them."""
        self.twilio.set_faults(fail_all=True, fail_status=503)
        self.poll()
        self.evaluate()
        self.twilio.set_faults()
        self.make_due()

    def make_due(self) -> None:
        """Time passes: every planned row's backoff or hold is over."""
        with self.database.engine.begin() as conn:
            conn.execute(sa.update(notifications).where(notifications.c.status == PLANNED)
                         .values(next_attempt_at=utcnow()))

    def refresh_state(self) -> dg.ExecuteInProcessResult:
        return self.run_job("state_refresh_job")

    def evaluate(self) -> dg.ExecuteInProcessResult:
        return self.run_job("alerts_job")

    def tick(self, sensor_name: str) -> dg.SensorResult | Any:
        """One real evaluation of a sensor, with its cursor carried from the previous tick."""
        sensor = self.defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor_name),
                                     definitions=self.defs,
                                     resources={"database": self.database, "sap": self.defs.resources["sap"],
                                                "rules": self.defs.resources["rules"]}) as context:
            result = sensor(context)
            cursor = getattr(result, "cursor", None) or context.cursor
        self.cursors[sensor_name] = cursor
        return result

    def detect(self) -> list[dg.ExecuteInProcessResult]:
        """Tick the change sensor and execute the runs it requests, as the daemon would."""
        result = self.tick("b1_change_sensor")
        job = self.defs.resolve_job_def("b1_change_job")
        return [job.execute_in_process(instance=self.instance, partition_key=request.partition_key,
                                       asset_selection=request.asset_selection,
                                       tags={**request.tags, "dagster/run_key": request.run_key})
                for request in result.run_requests or []]

    def notify(self) -> list[dg.ExecuteInProcessResult]:
        """Tick the notification sensor and execute the notification run it requests, as the daemon would
        (a delivery run it requests too is left to `deliveries`, which tests call when they mean it)."""
        result = self.tick("notification_sensor")
        runs = []
        for request in getattr(result, "run_requests", None) or []:
            if request.job_name != "notify_job":
                continue
            job = self.defs.resolve_job_def("notify_job")
            runs.append(job.execute_in_process(
                run_config=request.run_config, instance=self.instance,
                tags={**request.tags, "dagster/run_key": request.run_key}, raise_on_error=False))
        return runs

    @staticmethod
    def notifications(runs: list[dg.ExecuteInProcessResult]) -> list[dict[str, Any]]:
        """The metadata of every notification the runs handled (their `sent_notifications` events)."""
        return [{key: value.value for key, value in event.materialization.metadata.items()}
                for run in runs for event in run.get_asset_materialization_events()
                if event.asset_key == NOTIFICATIONS_KEY]

    def deliveries(self) -> dg.ExecuteInProcessResult:
        return self.run_job("delivery_job")

    def flow(self) -> list[dg.ExecuteInProcessResult]:
        """detect (read the changed windows, evaluate, plan and send what is due) -> notify (what the
        sensor finds due after that): one turn of the whole pipeline, every run of it."""
        return self.detect() + self.notify()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(TEST_RULES)
    return path


PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def pipeline_factory(pg_instance: dg.DagsterInstance, pg_store_url: str,
                     rules_file: Path) -> Iterator[PipelineFactory]:
    """Build the pipeline once per test; `status_callback_url` turns Twilio status callbacks on,
    `public_url` (the receiver's base URL) lets people acknowledge, `rules_text` replaces the test rules."""
    started: list[Pipeline] = []

    def build(status_callback_url: str = "", rules_text: str | None = None,
              instance: dg.DagsterInstance | None = None, public_url: str = "") -> Pipeline:
        if rules_text is not None:
            rules_file.write_text(rules_text)
        sap = SapB1Simulator(port=0, seed=False).start_background()
        twilio = TwilioSimulator(port=0, status_delay_s=0.05).start_background()
        twilio.set_auto_advance(False)
        database = DatabaseResource(database_url=pg_store_url)
        resources: dict[str, dg.ConfigurableResource] = {
            "sap": SapB1Resource(service_layer_url=sap.base_url, company_db=sap.company_db,
                                 username=sap.username, password=DEMO_PASSWORD, timezone=sap.timezone,
                                 backoff_base_s=0.01, retry_refused_login_after_s=0.0),
            "twilio": TwilioResource(account_sid=twilio.account_sid, auth_token=twilio.auth_token,
                                     from_number=SIM_FROM_NUMBER, api_base_url=twilio.url,
                                     status_callback_url=status_callback_url, public_url=public_url,
                                     backoff_base_s=0.001,
                                     backoff_max_s=0.01),
            "database": database,
            "rules": RulesResource(path=str(rules_file)),
        }
        defs = build_definitions(rules_path=str(rules_file), resources=resources)
        started.append(Pipeline(defs, instance or pg_instance, sap, twilio, database, rules_file))
        return started[-1]

    yield build
    for built in started:
        built.sap.stop()
        built.twilio.stop()


@pytest.fixture
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    return pipeline_factory()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
