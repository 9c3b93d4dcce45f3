"""`b1twilio demo`: the quick start (SPEC section 7), everything on loopback in one process tree.

This process serves the SAP B1 simulator (seeded), the Twilio simulator and the status-callback receiver
from threads, and runs `dagster dev` as a child in its own process group, on a SQLite instance under
`<data-dir>/dagster_home` (never the production `dagster.yaml` at the repository root). Schedules and
sensors default to running, so within about a minute, with nobody clicking, snapshots are materialized,
notification runs text and call the demo recipients at the Twilio simulator, and delivery receipts land
in the B1 simulator's audit table.

Credentials: the simulators accept B1_COMPANY_DB / B1_USERNAME / B1_PASSWORD and TWILIO_ACCOUNT_SID /
TWILIO_AUTH_TOKEN from the environment when set (SPEC section 11), else the demo makes random ones per
start. They are handed to `dagster dev` through its environment and written, for the operator's own
`dagster` commands, to `<data-dir>/demo.env` (mode 0600); they are never printed.

Ctrl-C or SIGTERM stops `dagster dev` (which stops its webserver, daemon and code server), then anything
left in its process group, then the simulators.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

import httpx

from b1twilio_pipeline.settings import ConfigurationError
from b1twilio_sim.sap_b1 import DEMO_COMPANY_DB, DEMO_USERNAME, SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator

HOST = "127.0.0.1"
DEFAULT_PORT = 3000
DEFAULT_DATA_DIR = ".demo"
MARKER = ".b1twilio-demo"
RULES_FILE = Path(__file__).with_name("demo_rules.yaml")
COMPANY_TIMEZONE = "Europe/Berlin"  # the demo rules' time zone; the simulated B1 server runs in it too
FROM_NUMBER = "+15005550006"  # Twilio's magic "valid sender" test number
AUDIT_TABLE = "B1TW_AUDIT"
# Sam never answers in the demo: overdue calls go unanswered, the delivery check warns, Jo is called next.
UNANSWERED_NUMBER = "+447700900103"
UI_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

# Settings a real deployment might have exported that would pull the demo away from its simulators.
_FOREIGN_SETTINGS = (
    "B1_CA_BUNDLE", "TWILIO_API_KEY", "TWILIO_API_SECRET", "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_VOICE_FROM_NUMBER", "TWILIO_REGION", "TWILIO_EDGE", "B1TWILIO_SECRET_KEY",
    "B1TWILIO_WINDOW_MINUTES", "B1TWILIO_POLL_CRON", "B1TWILIO_STATE_REFRESH_MINUTES",
)

DAGSTER_YAML = """\
# Instance of the quick-start demo (written by `b1twilio demo`): SQLite storage under this folder.
# Production uses the PostgreSQL dagster.yaml at the repository root instead.
telemetry:
  enabled: false
# Runs start the moment a sensor or the schedule asks (no queue): the demo's runs are short and the
# quick start should be quick. Production queues them (see the repository's dagster.yaml).
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
sensors:
  use_threads: true
  num_workers: 4
schedules:
  use_threads: true
  num_workers: 2
"""

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: b1twilio_pipeline.definitions
      location_name: b1twilio_pipeline
"""


class DemoError(ConfigurationError):
    """The demo cannot start; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    port: int
    data_dir: Path
    fresh: bool


def options_from(args: argparse.Namespace) -> DemoOptions:
    if not 0 < args.port < 65536:
        raise DemoError(f"--port {args.port} is not a TCP port: choose one between 1 and 65535")
    return DemoOptions(port=args.port, data_dir=Path(args.data_dir).expanduser().resolve(), fresh=args.fresh)


@dataclass(frozen=True)
class Credentials:
    company_db: str
    username: str
    password: str
    account_sid: str
    auth_token: str

    @classmethod
    def from_environment(cls) -> Credentials:
        """SPEC section 11: the simulators take the pipeline's credential variables when they are set."""
        env = os.environ
        return cls(
            company_db=env.get("B1_COMPANY_DB") or DEMO_COMPANY_DB,
            username=env.get("B1_USERNAME") or DEMO_USERNAME,
            password=env.get("B1_PASSWORD") or "demo-" + secrets.token_hex(8),
            account_sid=env.get("TWILIO_ACCOUNT_SID") or "AC" + secrets.token_hex(16),
            auth_token=env.get("TWILIO_AUTH_TOKEN") or secrets.token_hex(16),
        )


@dataclass
class DemoPaths:
    root: Path

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "dagster.log"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def env_file(self) -> Path:
        return self.root / "demo.env"

    def prepare(self, fresh: bool) -> None:
        """Create the folder (wiping it first with --fresh, but only if it is a demo folder)."""
        if fresh and self.root.exists():
            if any(self.root.iterdir()) and not (self.root / MARKER).exists():
                raise DemoError(f"refusing to wipe {self.root}: it is not a b1twilio demo folder "
                                f"(no {MARKER}); choose another --data-dir")
            shutil.rmtree(self.root)
        for folder in (self.root, self.dagster_home, self.log.parent):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)  # the store, logs and demo.env carry customer names, amounts and credentials
        (self.root / MARKER).touch()
        (self.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
        self.workspace.write_text(WORKSPACE_YAML)


def cancel_unfinished_runs(dagster_home: Path) -> int:
    """Runs a previous demo left queued or in progress (it was stopped under them) can never finish: mark
    them canceled, so the UI tells the truth and sensors that wait for a run in flight are not blocked."""
    if not (dagster_home / "history").exists():
        return 0
    import dagster as dg

    unfinished = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=unfinished))
        for run in runs:
            instance.report_run_canceled(run, message="the demo was stopped while this run was unfinished")
    return len(runs)


LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def code_location_error(ui_url: str, timeout_s: float = 60.0) -> str | None:
    """None once the code location has loaded; else the first line of its load error (or a timeout)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
                answer = client.post(f"{ui_url}/graphql", json={"query": LOCATION_QUERY}).json()
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    errors = [entry["locationOrLoadError"].get("message", "") for entry in entries
                              if entry["locationOrLoadError"]["__typename"] == "PythonError"]
                    return errors[0].strip().splitlines()[0] if errors else None
            time.sleep(0.5)
    return f"the code location did not load within {timeout_s:.0f} s"


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise DemoError(f"port {port} on {HOST} is not available ({exc.strerror}): stop what uses it "
                            f"or choose another with `b1twilio demo --port {port + 1}`") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Simulators:
    """The B1 and Twilio simulators and the status-callback receiver, served from this process."""

    sap: SapB1Simulator
    twilio: TwilioSimulator
    callback_url: str
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()


def start_simulators(creds: Credentials, database_url: str) -> Simulators:
    from b1twilio_pipeline.callbacks import STATUS_PATH, create_app, start_background
    from b1twilio_pipeline.database import engine_for
    from b1twilio_pipeline.ledger import Ledger

    sap = SapB1Simulator(HOST, 0, company_db=creds.company_db, username=creds.username,
                         password=creds.password, timezone=COMPANY_TIMEZONE).start_background()
    twilio = TwilioSimulator(HOST, 0, account_sid=creds.account_sid, auth_token=creds.auth_token,
                             status_delay_s=1.0).start_background()
    twilio.set_rules({UNANSWERED_NUMBER: {"call": "no-answer"}})
    sims = Simulators(sap, twilio, "", [sap.stop, twilio.stop])
    try:
        # The receiver checks signatures against its public URL, so the port is chosen before it starts.
        port = free_port()
        callback_url = f"http://{HOST}:{port}{STATUS_PATH}"
        app = create_app(auth_token=creds.auth_token, public_url=callback_url,
                         sink=Ledger(engine_for(database_url)))
        _url, stop_callbacks = start_background(app, HOST, port)
    except BaseException:
        sims.stop()
        raise
    sims.callback_url = callback_url
    sims.stops.append(stop_callbacks)
    return sims


def pipeline_environment(paths: DemoPaths, creds: Credentials, sims: Simulators) -> dict[str, str]:
    """The settings of SPEC section 9 for `dagster dev`, aimed at the simulators."""
    yesterday = datetime.now(ZoneInfo(COMPANY_TIMEZONE)).date() - timedelta(days=1)
    return {
        "DAGSTER_HOME": str(paths.dagster_home),
        "B1_SERVICE_LAYER_URL": sims.sap.base_url,
        "B1_COMPANY_DB": creds.company_db,
        "B1_USERNAME": creds.username,
        "B1_PASSWORD": creds.password,
        "B1_TIMEZONE": COMPANY_TIMEZONE,
        "TWILIO_ACCOUNT_SID": creds.account_sid,
        "TWILIO_AUTH_TOKEN": creds.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE_URL": sims.twilio.url,
        "TWILIO_STATUS_CALLBACK_URL": sims.callback_url,
        "B1TWILIO_CONFIG": str(RULES_FILE),
        "B1TWILIO_DATABASE_URL": f"sqlite:///{paths.store}",
        # No encrypted store in the demo: every setting above comes from the environment.
        "B1TWILIO_SECRETS_FILE": str(paths.root / "no-secrets.enc"),
        "B1TWILIO_PARTITIONS_START": f"{yesterday:%Y-%m-%d}-00:00",
    }


def write_env_file(paths: DemoPaths, env: dict[str, str]) -> None:
    """For the operator's own `dagster ...` commands against the demo instance; readable by the owner only."""
    paths.env_file.unlink(missing_ok=True)
    descriptor = os.open(paths.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# written by `b1twilio demo`: the demo's settings (simulator credentials included)\n")
        handle.writelines(f"{name}={value}\n" for name, value in sorted(env.items()))


def child_environment(pipeline_env: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _FOREIGN_SETTINGS}
    env.update(pipeline_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DagsterDev:
    """`dagster dev` in its own process group, its output in a log file."""

    def __init__(self, paths: DemoPaths, port: int, env: dict[str, str]) -> None:
        self.paths = paths
        self.port = port
        self._log = paths.log.open("ab")
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(paths.workspace), "-h", HOST,
                   "-p", str(port)]
        self.process = subprocess.Popen(command, cwd=paths.root, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, stopping: threading.Event, timeout_s: float = UI_TIMEOUT_S) -> bool:
        """True once the UI answers; False if stopped. Raises DemoError if dagster dev dies or hangs."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if stopping.is_set():
                    return False
                if not self.alive():
                    raise DemoError(f"dagster dev exited with status {self.process.returncode} before the UI "
                                    f"came up: see {self.paths.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/server_info").status_code == 200:
                        return True
                stopping.wait(0.5)
        raise DemoError(f"the Dagster UI did not answer on {self.url} within {timeout_s:.0f} s: "
                        f"see {self.paths.log}")

    def stop(self) -> None:
        """SIGINT (dagster dev shuts its services down), then whatever is left in the group."""
        group = self.process.pid
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            if not _group_alive(group):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            _wait_group(group, grace)
        if self.alive():
            self.process.kill()
        self.process.wait()
        self._log.close()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(group: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP, with the previous handlers restored afterwards."""
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in watched}
    try:
        yield stopping
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Progress:
    """One line whenever the Twilio simulator or the B1 audit table has something new (counts only)."""

    def __init__(self, sims: Simulators, started: float) -> None:
        self.sims = sims
        self.started = started
        self.last: tuple[int, int, int] | None = None
        self.firsts: dict[str, float] = {}

    def counts(self) -> tuple[int, int, int]:
        return (len(self.sims.twilio.messages()), len(self.sims.twilio.calls()),
                len(self.sims.sap.udt_rows(AUDIT_TABLE)))

    def report(self) -> None:
        counts = self.counts()
        if counts == self.last:
            return
        self.last = counts
        elapsed = time.monotonic() - self.started
        for name, count in zip(("SMS", "call", "audit row"), counts, strict=True):
            if count and name not in self.firsts:
                self.firsts[name] = elapsed
        sms, calls, audit_rows = counts
        print(f"[{elapsed:5.0f} s] Twilio simulator: {sms} SMS, {calls} calls; "
              f"B1 audit table: {audit_rows} receipts", flush=True)


def banner(dagster: DagsterDev, sims: Simulators, paths: DemoPaths, elapsed: float) -> str:
    twilio, sap = sims.twilio.url, sims.sap.url
    return "\n".join([
        f"Dagster UI ready after {elapsed:.0f} s:  {dagster.url}",
        f"  asset graph   {dagster.url}/asset-groups",
        f"  runs          {dagster.url}/runs",
        f"Twilio simulator log:  {twilio}/_admin/messages   {twilio}/_admin/calls",
        f"B1 simulator:          {sims.sap.base_url}   audit table: {sap}/_admin/udt/{AUDIT_TABLE}",
        f"Status callbacks:      {sims.callback_url}",
        f"Data folder: {paths.root} (Dagster instance in dagster_home/, log in logs/dagster.log;",
        f"  `set -a; . {paths.env_file}; set +a` gives your shell the demo's settings for `dagster ...`)",
        "Within about a minute the snapshots, notification runs and receipts appear. Ctrl-C stops everything.",
    ])


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def run_demo(options: DemoOptions) -> int:
    started = time.monotonic()
    check_port_free(options.port)
    paths = DemoPaths(options.data_dir)
    paths.prepare(options.fresh)
    creds = Credentials.from_environment()
    print(f"starting the b1twilio demo in {paths.root} ...", flush=True)
    canceled = cancel_unfinished_runs(paths.dagster_home)
    if canceled:
        print(f"marked {canceled} run(s) left unfinished by the previous demo as canceled", flush=True)
    with stop_signals() as stopping:
        sims = start_simulators(creds, f"sqlite:///{paths.store}")
        dagster: DagsterDev | None = None
        try:
            env = pipeline_environment(paths, creds, sims)
            write_env_file(paths, env)
            dagster = DagsterDev(paths, options.port, child_environment(env))
            print(f"simulators up; dagster dev is starting (log: {paths.log}) ...", flush=True)
            if not dagster.wait_ready(stopping):
                return 130
            print(banner(dagster, sims, paths, time.monotonic() - started), flush=True)
            problem = code_location_error(dagster.url)
            if problem:
                print(f"error: the b1twilio_pipeline code location failed to load: {problem} "
                      f"(details in the UI and in {paths.log})", file=sys.stderr, flush=True)
            progress = Progress(sims, started)
            while not stopping.wait(1.0):
                progress.report()
                if not dagster.alive():
                    print(f"error: dagster dev stopped unexpectedly (status {dagster.process.returncode}); "
                          f"last lines of {paths.log}:\n{_tail(paths.log)}", file=sys.stderr)
                    return 1
            print("stopping ...", flush=True)
            return 0
        except DemoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            tail = _tail(paths.log)
            if tail:
                print(tail, file=sys.stderr)
            return 1
        finally:
            if dagster is not None:
                dagster.stop()
            sims.stop()
            print("demo stopped", flush=True)


def main(args: argparse.Namespace) -> int:
    """Entry point of `b1twilio demo` (cli.py declares its options, so other commands never import this)."""
    return run_demo(options_from(args))
