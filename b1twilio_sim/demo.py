"""`b1twilio demo`: the quick start, everything on loopback in one process tree.

This process serves the SAP B1 simulator (seeded), the Twilio simulator and the receiver (status
callbacks, replies, keypresses, and B1's webhooks: the B1 simulator is subscribed to the receiver as
`b1twilio setup-b1-webhooks` would do it, so a change reaches the pipeline in seconds) from threads, and
runs `dagster dev` as a child in its own process group, on a SQLite instance under
`<data-dir>/dagster_home` (never the production `dagster.yaml` at the repository root). Schedules and
sensors default to running, so within about a minute, with nobody clicking, snapshots are materialized,
notification runs text and call the demo recipients at the Twilio simulator, and delivery receipts land
in the B1 simulator's audit table.

Credentials: the simulators accept B1_COMPANY_DB / B1_USERNAME / B1_PASSWORD and TWILIO_ACCOUNT_SID /
TWILIO_AUTH_TOKEN from the environment when set (the variables the pipeline reads), else the demo makes random ones per
start. They are handed to `dagster dev` through its environment and written, for the operator's own
`dagster` commands, to `<data-dir>/demo.env` (mode 0600); they are never printed.

Ctrl-C or SIGTERM stops `dagster dev` (which stops its webserver, daemon and code server), then anything
left in its process group, then the simulators.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_sim.demo_scene import DemoScene
from b1twilio_sim.deployment import (
    HOST,
    SQLITE_INSTANCE,
    Credentials,
    DagsterProcess,
    Simulators,
    child_environment,
    pipeline_environment,
    start_simulators,
)

MARKER = ".b1twilio-demo"
RULES_FILE = Path(__file__).with_name("demo_rules.yaml")
COMPANY_TIMEZONE = "Europe/Berlin"  # the demo rules' time zone; the simulated B1 server runs in it too
AUDIT_TABLE = "B1TW_AUDIT"
# Sam never answers in the demo: overdue calls go unanswered, the delivery check warns, Jo is called next.
UNANSWERED_NUMBER = "+447700900103"
# The handsets the simulator plays: Jo (next on call after Sam) and Lee answer and press 1, Dana replies OK.
HANDSETS = {UNANSWERED_NUMBER: {"call": "no-answer"}, "+447700900104": {"press": "1"},
            "+447700900106": {"press": "1"}, "+447700900101": {"reply": "OK"}}
UI_TIMEOUT_S = 180.0

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
        (self.dagster_home / "dagster.yaml").write_text(SQLITE_INSTANCE)


def write_env_file(paths: DemoPaths, env: dict[str, str]) -> None:
    """For the operator's own `dagster ...` commands against the demo instance; readable by the owner only."""
    paths.env_file.unlink(missing_ok=True)
    descriptor = os.open(paths.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# written by `b1twilio demo`: the demo's settings (simulator credentials included)\n")
        handle.writelines(f"{name}={value}\n" for name, value in sorted(env.items()))


def demo_environment(paths: DemoPaths, creds: Credentials, sims: Simulators) -> dict[str, str]:
    """The pipeline's settings for the demo: its rules and a SQLite store; the partitions begin at the
    demo's first start, as in a new deployment. The ledger is checked every 30 s (production: 120 s), so
    the tour's escalation steps and acknowledgements show within its minute."""
    env = pipeline_environment(creds, sims, dagster_home=paths.dagster_home, rules=RULES_FILE,
                               database_url=f"sqlite:///{paths.store}", timezone=COMPANY_TIMEZONE,
                               secrets_file=paths.root / "no-secrets.enc")
    return {**env, "B1TWILIO_NOTIFICATION_CHECK_SECONDS": "30"}


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


def dismiss_community_dialog(ui_url: str) -> None:
    """Dagster's UI opens a "Join the Dagster community" dialog over every page on a first visit from
    localhost until someone clicks it away; its Skip button records that on the server (`setNuxSeen`), so
    the demo does the same for its own instance. Best effort: the dialog is only in the way."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        httpx.post(f"{ui_url}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=10.0)


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise DemoError(f"port {port} on {HOST} is not available ({exc.strerror}): stop what uses it "
                            f"or choose another: `make demo PORT={port + 1}` "
                            f"(or `.venv/bin/b1twilio demo --port {port + 1}`)") from None


def wait_ready(dagster: DagsterProcess, stopping: threading.Event, timeout_s: float = UI_TIMEOUT_S) -> bool:
    """True once the UI answers; False if stopped. Raises DemoError if dagster dev dies or hangs."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if stopping.is_set():
                return False
            if not dagster.alive():
                raise DemoError(f"dagster dev exited with status {dagster.process.returncode} before the UI "
                                f"came up: see {dagster.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{dagster.url}/server_info").status_code == 200:
                    return True
            stopping.wait(0.5)
    raise DemoError(f"the Dagster UI did not answer on {dagster.url} within {timeout_s:.0f} s: "
                    f"see {dagster.log_path}")


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


def banner(dagster: DagsterProcess, sims: Simulators, paths: DemoPaths, elapsed: float) -> str:
    twilio, sap = sims.twilio.url, sims.sap.url
    return "\n".join([
        f"Dagster UI ready after {elapsed:.0f} s:  {dagster.url}",
        f"  asset graph   {dagster.url}/asset-groups",
        f"  runs          {dagster.url}/runs",
        f"Twilio simulator log:  {twilio}/_admin/messages   {twilio}/_admin/calls",
        f"B1 simulator:          {sims.sap.base_url}   audit table: {sap}/_admin/udt/{AUDIT_TABLE}",
        f"Receiver:              {sims.public_url} (status callbacks, SMS replies, keypresses, B1 webhooks)",
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
        sims = start_simulators(creds, f"sqlite:///{paths.store}", timezone=COMPANY_TIMEZONE, rules=RULES_FILE,
                                webhooks=True)
        sims.twilio.set_rules(HANDSETS)
        dagster: DagsterProcess | None = None
        try:
            env = demo_environment(paths, creds, sims)
            write_env_file(paths, env)
            dagster = DagsterProcess(paths.root, child_environment(env), paths.log, ui_port=options.port)
            print(f"simulators up; dagster dev is starting (log: {paths.log}) ...", flush=True)
            if not wait_ready(dagster, stopping):
                return 130
            print(banner(dagster, sims, paths, time.monotonic() - started), flush=True)
            problem = code_location_error(dagster.url)
            dismiss_community_dialog(dagster.url)
            if problem:
                print(f"error: the b1twilio_pipeline code location failed to load: {problem} "
                      f"(details in the UI and in {paths.log})", file=sys.stderr, flush=True)
            progress, scene = Progress(sims, started), DemoScene(sims)
            while not stopping.wait(1.0):
                progress.report()
                change = scene.step(time.monotonic() - started)
                if change:
                    print(f"[{time.monotonic() - started:5.0f} s] in B1: {change}", flush=True)
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
                dagster.close()
            sims.stop()
            print("demo stopped", flush=True)


def main(args: argparse.Namespace) -> int:
    """Entry point of `b1twilio demo` (cli.py declares its options, so other commands never import this)."""
    return run_demo(options_from(args))
