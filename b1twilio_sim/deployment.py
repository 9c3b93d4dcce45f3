"""The pipeline deployed on loopback against the simulators: what the demo, the fault suite and the
benchmarks all start.

This process serves the SAP B1 simulator, the Twilio simulator and the receiver (status callbacks, and
on request SMS replies, keypresses and B1's webhooks) from threads (so they outlive anything the fault
suite kills), and runs Dagster as a child in its own process group: `dagster dev` (webserver, daemon,
code server) or `dagster-daemon run` alone. Its instance lives
under the deployment's folder, on SQLite or on a PostgreSQL database; the PostgreSQL instance takes the
production `dagster.yaml` of the repository (run queue, limits, monitoring) with only the storage replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from b1twilio_sim.sap_b1 import DEMO_COMPANY_DB, DEMO_USERNAME, SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator

HOST = "127.0.0.1"
FROM_NUMBER = "+15005550006"  # Twilio's magic "valid sender" test number
PRODUCTION_INSTANCE = Path(__file__).resolve().parents[1] / "dagster.yaml"
# Settings a real deployment might have exported that would pull a deployment away from its simulators.
FOREIGN_SETTINGS = (
    "B1_CA_BUNDLE", "TWILIO_API_KEY", "TWILIO_API_SECRET", "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_VOICE_FROM_NUMBER", "TWILIO_REGION", "TWILIO_EDGE", "B1TWILIO_SECRET_KEY",
    "B1TWILIO_WINDOW_MINUTES", "B1TWILIO_STATE_REFRESH_MINUTES", "B1TWILIO_CHANGE_CHECK_SECONDS",
    "B1TWILIO_PARTITIONS_START", "B1TWILIO_TIMEZONE", "B1TWILIO_PUBLIC_URL", "TWILIO_STATUS_CALLBACK_URL",
    "B1_WEBHOOK_USERNAME", "B1_WEBHOOK_PASSWORD",
)

SQLITE_INSTANCE = """\
# Instance of a loopback deployment (written by b1twilio_sim): SQLite storage under this folder.
# Production uses the PostgreSQL dagster.yaml at the repository root instead.
telemetry:
  enabled: false
# Runs start the moment a sensor asks (no queue): the quick start should be quick. Production queues
# them (see the repository's dagster.yaml).
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
sensors:
  use_threads: true
  num_workers: 4
# Tick history is bounded: sensors tick every 30 s (2,880 ticks a day each), almost all of them skipped.
retention:
  schedule:
    purge_after_days: 30
  sensor:
    purge_after_days:
      skipped: 1
      failure: 30
      success: 30
"""

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: b1twilio_pipeline.definitions
      location_name: b1twilio_pipeline
"""


# The code locations of a `dagster dev` and how each loaded (GraphQL), for waiting until all of them did.
LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def supplier_invoice_rules(phone: str, timezone: str) -> str:
    """A rules file with one rule: an SMS to `phone` (Dana) about every new supplier invoice."""
    return (f"timezone: {timezone}\nrecipients:\n  ap_team:\n    - {{name: Dana, phone: \"{phone}\"}}\nrules:\n"
            "  - id: ap-new-supplier-invoice\n    kind: purchase_invoice_received\n    channel: sms\n"
            "    recipients: [ap_team]\n    template: \"Supplier invoice {DocNum} from {CardName}\"\n")


def workspace_yaml(module: str, location: str) -> str:
    """A workspace serving `module`'s `defs` as one code location (another design, an empty location)."""
    return (f"load_from:\n  - python_module:\n      module_name: {module}\n"
            f"      location_name: {location}\n")


def postgres_instance(url: str) -> str:
    """The production instance configuration with its storage pointed at `url`."""
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    config["storage"] = {"postgres": {"postgres_url": url}}
    return yaml.safe_dump(config, sort_keys=False)


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def create_scratch_database(purpose: str, admin_url: str = POSTGRES_ADMIN_URL) -> tuple[str, str]:
    """A new empty PostgreSQL database `b1tw_<purpose>_<random>` on the server of `admin_url`: (name, URL).
    Each deployment gets its own, so nothing left by an earlier run is measured or read."""
    import sqlalchemy as sa

    name = f"b1tw_{purpose}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return name, sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_scratch_database(name: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    """Drop a database made by `create_scratch_database`, whoever is still connected to it."""
    import sqlalchemy as sa

    if not name.startswith("b1tw_"):
        raise ValueError(f"refusing to drop {name!r}: not a scratch database")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    company_db: str
    username: str
    password: str
    account_sid: str
    auth_token: str
    webhook_username: str
    webhook_password: str

    @classmethod
    def from_environment(cls) -> Credentials:
        """The simulators take the pipeline's credential variables when they are set, else random ones."""
        env = os.environ
        return cls(
            company_db=env.get("B1_COMPANY_DB") or DEMO_COMPANY_DB,
            username=env.get("B1_USERNAME") or DEMO_USERNAME,
            password=env.get("B1_PASSWORD") or "demo-" + secrets.token_hex(8),
            account_sid=env.get("TWILIO_ACCOUNT_SID") or "AC" + secrets.token_hex(16),
            auth_token=env.get("TWILIO_AUTH_TOKEN") or secrets.token_hex(16),
            webhook_username=env.get("B1_WEBHOOK_USERNAME") or "b1-webhooks",
            webhook_password=env.get("B1_WEBHOOK_PASSWORD") or secrets.token_hex(16),
        )


@dataclass
class Simulators:
    """The B1 and Twilio simulators and the receiver, served from this process. `public_url` is the
    receiver's base URL ("" without one); `callback_url` its status callback URL; `webhook_url` where the B1
    simulator posts its webhooks ("" when it posts none)."""

    sap: SapB1Simulator
    twilio: TwilioSimulator
    callback_url: str
    stops: list[Callable[[], None]] = field(default_factory=list)
    public_url: str = ""
    webhook_url: str = ""

    def stop(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()


def start_simulators(creds: Credentials, database_url: str, *, timezone: str, seed: bool = True,
                     status_delay_s: float = 1.0, receiver: bool = True, rules: Path | None = None,
                     webhooks: bool = False) -> Simulators:
    """B1 and Twilio simulators, and (with `receiver`) the receiver writing to the store at `database_url`:
    status callbacks, and with the `rules` file also SMS replies and keypresses (the Twilio simulator's
    number then sends its replies there) and, with `webhooks`, B1's webhooks: the B1 simulator is subscribed
    as `b1twilio setup-b1-webhooks` would do it. Without a receiver `callback_url` is "" and nothing touches
    that store: statuses then come by polling, and another release's store (another schema) can be aimed at
    these simulators."""
    sap = SapB1Simulator(HOST, 0, company_db=creds.company_db, username=creds.username,
                         password=creds.password, timezone=timezone, seed=seed).start_background()
    twilio = TwilioSimulator(HOST, 0, account_sid=creds.account_sid, auth_token=creds.auth_token,
                             status_delay_s=status_delay_s).start_background()
    sims = Simulators(sap, twilio, "", [sap.stop, twilio.stop])
    if not receiver:
        return sims
    if webhooks and rules is None:
        raise ValueError("B1 webhooks need the rules file: it says which entity sets to subscribe to")
    try:
        from b1twilio_pipeline.alerts.rules import load_rules
        from b1twilio_pipeline.b1.client import SapB1Session
        from b1twilio_pipeline.b1.webhook_inbox import WebhookInbox
        from b1twilio_pipeline.core.database import engine_for
        from b1twilio_pipeline.notifications.b1_events import B1Events
        from b1twilio_pipeline.notifications.b1_webhook_setup import setup_b1_webhooks
        from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
        from b1twilio_pipeline.notifications.inbound import Inbound
        from b1twilio_pipeline.notifications.public_urls import B1_EVENTS_PATH, SMS_PATH, STATUS_PATH, join
        from b1twilio_pipeline.notifications.receiver import create_app
        from b1twilio_pipeline.notifications.receiver_server import start_background

        # The receiver checks signatures against its public URL, so the port is chosen before it starts.
        port = free_port()
        public_url = f"http://{HOST}:{port}"
        engine = engine_for(database_url)
        inbound = None if rules is None else Inbound(engine, lambda: load_rules(rules))
        b1_events = B1Events(WebhookInbox(engine), creds.webhook_username, creds.webhook_password) \
            if webhooks else None
        app = create_app(auth_token=creds.auth_token, status_url=join(public_url, STATUS_PATH),
                         sink=DeliveryLog(engine), inbound=inbound, public_url=public_url if inbound else None,
                         b1_events=b1_events)
        _url, stop_callbacks = start_background(app, HOST, port)
        sims.stops.append(stop_callbacks)
        if inbound is not None:
            twilio.set_sms_url(join(public_url, SMS_PATH))
        if webhooks:
            with SapB1Session(sap.base_url, creds.company_db, creds.username, creds.password,
                              timezone=timezone) as session:
                setup_b1_webhooks(session, load_rules(rules), public_url, creds.webhook_username,
                                  creds.webhook_password)
            sims.webhook_url = join(public_url, B1_EVENTS_PATH)
    except BaseException:
        sims.stop()
        raise
    sims.callback_url, sims.public_url = join(public_url, STATUS_PATH), public_url if inbound else ""
    return sims


def pipeline_environment(creds: Credentials, sims: Simulators, *, dagster_home: Path, rules: Path,
                         database_url: str, timezone: str, secrets_file: Path) -> dict[str, str]:
    """The pipeline's settings, aimed at the simulators."""
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "B1_SERVICE_LAYER_URL": sims.sap.base_url,
        "B1_COMPANY_DB": creds.company_db,
        "B1_USERNAME": creds.username,
        "B1_PASSWORD": creds.password,
        "B1_TIMEZONE": timezone,
        "TWILIO_ACCOUNT_SID": creds.account_sid,
        "TWILIO_AUTH_TOKEN": creds.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE_URL": sims.twilio.url,
        "TWILIO_STATUS_CALLBACK_URL": sims.callback_url,
        "B1TWILIO_CONFIG": str(rules),
        "B1TWILIO_DATABASE_URL": database_url,
        # No encrypted store: every setting above comes from the environment.
        "B1TWILIO_SECRETS_FILE": str(secrets_file),
    }
    if not sims.callback_url:  # no receiver: no callbacks asked for, statuses are polled
        del env["TWILIO_STATUS_CALLBACK_URL"]
    if sims.public_url:  # the receiver takes SMS replies and keypresses too: alerts can be acknowledged
        env["B1TWILIO_PUBLIC_URL"] = sims.public_url
    if sims.webhook_url:  # B1 posts its changes to the receiver: b1_webhook_sensor runs
        env["B1_WEBHOOK_USERNAME"], env["B1_WEBHOOK_PASSWORD"] = creds.webhook_username, creds.webhook_password
    return env


def child_environment(pipeline_env: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in FOREIGN_SETTINGS}
    env.update(pipeline_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DagsterProcess:
    """`dagster dev` (with `ui_port`) or `dagster-daemon run` in its own process group, output to `log`.

    `root` is the working directory (where workspace.yaml is written); `workspace` another workspace file's
    text; `prefix` an argv run first that ends by exec-ing the command (e.g. a shell that enters a cgroup,
    so every process of the tree is counted from its first instruction)."""

    def __init__(self, root: Path, env: dict[str, str], log: Path, *, ui_port: int | None,
                 workspace: str = WORKSPACE_YAML, prefix: Sequence[str] = ()) -> None:
        self.root, self.env, self.log_path, self.ui_port = root, env, log, ui_port
        workspace_file = root / "workspace.yaml"
        workspace_file.write_text(workspace)
        if ui_port is None:
            self.command = [sys.executable, "-m", "dagster._daemon", "run", "-w", str(workspace_file)]
        else:
            self.command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace_file), "-h", HOST,
                            "-p", str(ui_port)]
        self.command = [*prefix, *self.command]
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, cwd=self.root, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT (Dagster shuts its services down), then whatever is left in the group."""
        group = self.process.pid
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            if not group_alive(group):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            wait_group(group, grace)
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group at once: the daemon, the code server and every run worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        wait_group(self.process.pid, 5.0)

    def restart(self) -> None:
        """Start the same command again (after `kill` or `stop`)."""
        self.process = self._spawn()

    def close(self) -> None:
        self._log.close()


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_group(group: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)


def _cmdline(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


def run_worker_pids() -> list[int]:
    """Processes executing Dagster runs: the code server (`dagster api grpc`) starts each run's worker as
    a multiprocessing child."""
    pids = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [int(pid) for pid in pids
            if "multiprocessing.spawn" in _cmdline(pid) and "api grpc" in _cmdline(_parent(pid))]
