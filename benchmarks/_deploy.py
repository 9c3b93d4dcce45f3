"""One design deployed as an operator runs it: `dagster dev` (webserver, daemon, code server) against its
own simulators, with its own fresh Dagster home, instance storage and store database, its whole process
tree in a CPU meter.

Designs: `current` (this working tree), `baseline` (commit a325f14, see `_baseline`), `floor` (an empty
code location: Dagster's own cost). Each runs with its shipped defaults; only what aims it at the
simulators is set, status callbacks off (no receiver: the baseline's store has another schema), so
delivery statuses are polled by both.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
import yaml

from b1twilio_pipeline.core.automation import KIND
from b1twilio_sim.deployment import (
    PRODUCTION_INSTANCE,
    SQLITE_INSTANCE,
    Credentials,
    DagsterProcess,
    Simulators,
    child_environment,
    create_scratch_database,
    drop_scratch_database,
    free_port,
    pipeline_environment,
    postgres_instance,
    start_simulators,
    workspace_yaml,
)
from benchmarks._autovacuum import AutovacuumStandIn, apply_instance_settings
from benchmarks._common import REPO_ROOT
from benchmarks._cpu import CpuMeter, cpu_meter

TIMEZONE = "Europe/Berlin"  # the simulated B1 server's and the rules' zone
MODULES = {"current": "b1twilio_pipeline.definitions", "webhooks": "b1twilio_pipeline.definitions",
           "baseline": "b1twilio_pipeline.definitions", "floor": "benchmarks.empty_location"}
# Jobs a design must have and must not have: proves which code the code server loaded.
SIGNATURE_JOBS = {"current": ({"b1_change_job"}, set()), "webhooks": ({"b1_change_job"}, set()),
                  "baseline": ({"snapshot_job"}, {"b1_change_job"}),
                  "floor": (set(), {"snapshot_job", "b1_change_job"})}
SETTINGS_PREFIXES = ("B1_", "TWILIO_", "B1TWILIO_", "PHONE_", "DAGSTER_PG")
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
STORAGE_LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL", "queued": "SQLite + production run queue"}
LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { jobs { name } } } } } } } }"""


# Dagster's SQLite databases run in WAL mode: the write-ahead log grows to about 4 MB, is checkpointed into
# the database and then reused at that size. Counting its file size would take a one-off 4 MB for a daily
# rate; the data it holds is counted through the database's own page count instead (`_stored_bytes`).
SQLITE_JOURNALS = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"


def _stored_bytes(path: Path) -> int:
    """A SQLite database: the bytes of its pages in use, as its readers see them (what the WAL holds
    included, free pages excluded); any other file: its size."""
    with contextlib.suppress(OSError):
        with path.open("rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return path.stat().st_size
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            pages, free, size = (db.execute(f"PRAGMA {name}").fetchone()[0]
                                 for name in ("page_count", "freelist_count", "page_size"))
            return (pages - free) * size
    return 0


class DeploymentError(RuntimeError):
    """The deployment did not come up as the design it should be."""


@dataclass(frozen=True)
class Setup:
    design: str  # current | baseline | floor
    storage: str  # sqlite (quick-start instance) | postgres (production instance) | queued (production, SQLite)
    rules: str  # the rules file's text (the floor has none)
    seed: bool = True  # B1 starts with the demo company's data


def queued_sqlite_instance() -> str:
    """The production instance configuration (run queue and its limits) on SQLite under DAGSTER_HOME."""
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    config.pop("storage", None)
    return yaml.safe_dump(config, sort_keys=False)


class DagsterDeployment(abc.ABC):
    """What every benchmark deployment shares: `dagster dev` under its own folder and Dagster home, its whole
    process tree in a CPU meter, a handle on its instance, its scratch PostgreSQL databases (autovacuum's
    part played for them where the server has it off: `_autovacuum`), and one way to stop and clean up."""

    def __init__(self, folder: Path, meter_name: str) -> None:
        self.folder = folder
        self.home = folder / "dagster_home"
        self.home.mkdir(parents=True)
        self.log = folder / "dagster.log"
        self.database_urls: list[str] = []
        self.instance_url: str | None = None  # the instance's PostgreSQL database, if it has one
        self.dagster: DagsterProcess | None = None
        self.instance: dg.DagsterInstance | None = None
        self.meter: CpuMeter = cpu_meter(meter_name)
        self.autovacuum: AutovacuumStandIn | None = None

    def scratch_database(self, purpose: str) -> str:
        """A new PostgreSQL database of this deployment's, dropped by `close()`: its URL."""
        _, url = create_scratch_database(purpose)
        self.database_urls.append(url)
        return url

    def instance_database(self, purpose: str) -> str:
        """A scratch database for the Dagster instance: the instance's `dagster.yaml`. `launch` gives its
        tables the operator's autovacuum settings once they exist."""
        self.instance_url = self.scratch_database(purpose)
        return postgres_instance(self.instance_url)

    def launch(self, cwd: Path, env: dict[str, str], workspace: str) -> None:
        """Start `dagster dev` on the Dagster home's `dagster.yaml` and begin metering it."""
        self.dagster = DagsterProcess(cwd, env, self.log, ui_port=free_port(), workspace=workspace,
                                      prefix=self.meter.prefix())
        self.meter.attach(self.dagster.pid)
        self.instance = dg.DagsterInstance.from_config(str(self.home))  # creates its tables if missing
        if self.instance_url is not None:
            apply_instance_settings(self.instance_url)
        if self.database_urls:
            self.autovacuum = AutovacuumStandIn(self.database_urls)
            self.autovacuum.start()

    @abc.abstractmethod
    def stop_simulators(self) -> None:
        """Stop what the deployment talks to; each kind of deployment knows its own."""

    def close(self) -> None:
        """Stop `dagster dev` and everything it started, the simulators, and drop the scratch databases."""
        if self.dagster is not None:
            with contextlib.suppress(Exception):
                self.dagster.stop()
            self.dagster.close()
        self.meter.close()
        if self.instance is not None:
            self.instance.dispose()
        self.stop_simulators()
        if self.autovacuum is not None:
            self.autovacuum.stop()
        for url in self.database_urls:
            drop_scratch_database(str(sa.make_url(url).database))

    def remove_files(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_seconds(self) -> float:
        return self.meter.seconds()

    def runs(self, since: float, until: float | None = None, *, failed: bool = False) -> int:
        """Dagster runs created between two `time.time()` moments (failed ones only with `failed`)."""
        assert self.instance is not None
        before = None if until is None else datetime.fromtimestamp(until, UTC)
        statuses = [dg.DagsterRunStatus.FAILURE] if failed else None
        return self.instance.get_runs_count(dg.RunsFilter(
            created_after=datetime.fromtimestamp(since, UTC), created_before=before, statuses=statuses))

    def run_labels(self, since: float, until: float) -> list[str]:
        """What each run created between two `time.time()` moments was: its creation time (UTC), job and
        kind tag, oldest first, so a window's run count can be read run by run."""
        assert self.instance is not None
        records = self.instance.get_run_records(dg.RunsFilter(
            created_after=datetime.fromtimestamp(since, UTC), created_before=datetime.fromtimestamp(until, UTC)))
        return [f"{record.create_timestamp:%H:%M} {record.dagster_run.job_name}"
                f" ({record.dagster_run.tags.get(KIND, '-')})"
                for record in sorted(records, key=lambda record: record.create_timestamp)]

    def unfinished_runs(self) -> int:
        assert self.instance is not None
        return self.instance.get_runs_count(dg.RunsFilter(statuses=UNFINISHED))


class Deployment(DagsterDeployment):
    """One design: started by `start()`, measured through its methods, stopped and cleaned up by `close()`."""

    def __init__(self, setup: Setup, workdir: Path, baseline_tree: Path | None) -> None:
        super().__init__(workdir / f"{setup.design}-{setup.storage}-{int(time.time())}",
                         f"{setup.design}_{setup.storage}")
        self.setup, self.baseline_tree = setup, baseline_tree
        self.sims: Simulators | None = None
        self.store_url = f"sqlite:///{self.folder / 'store.sqlite'}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        setup = self.setup
        if setup.storage == "postgres":
            instance_yaml = self.instance_database("bench_dagster")
            if setup.design != "floor":
                self.store_url = self.scratch_database("bench_store")
        else:
            instance_yaml = SQLITE_INSTANCE if setup.storage == "sqlite" else queued_sqlite_instance()
        (self.home / "dagster.yaml").write_text(instance_yaml)
        root, env = self._environment()
        self.launch(root, env, workspace_yaml(MODULES[setup.design], setup.design))

    def _environment(self) -> tuple[Path, dict[str, str]]:
        """The working directory and environment of `dagster dev`: the design's settings and nothing an
        operator's shell exported (settings of either design, such as the baseline's B1TWILIO_POLL_CRON)."""
        setup = self.setup
        pipeline = {"DAGSTER_HOME": str(self.home)}
        if setup.design != "floor":
            rules = self.folder / "rules.yaml"
            rules.write_text(setup.rules)
            creds = Credentials.from_environment()
            webhooks = setup.design == "webhooks"  # B1 posts its changes to the receiver
            self.sims = start_simulators(creds, self.store_url, timezone=TIMEZONE, seed=setup.seed,
                                         receiver=webhooks, rules=rules if webhooks else None, webhooks=webhooks)
            pipeline = pipeline_environment(creds, self.sims, dagster_home=self.home, rules=rules,
                                            database_url=self.store_url, timezone=TIMEZONE,
                                            secrets_file=self.folder / "no-secrets.enc")
        env = {name: value for name, value in child_environment(pipeline).items()
               if name in pipeline or not name.startswith(SETTINGS_PREFIXES)}
        root = self.folder / "cwd"
        if setup.design == "baseline":
            assert self.baseline_tree is not None
            root = self.baseline_tree
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        elif setup.design == "floor":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        root.mkdir(exist_ok=True)
        return root, env

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Seconds until the UI answers, the code location loaded as this design and the daemon beats."""
        assert self.dagster is not None and self.instance is not None
        started, deadline = time.monotonic(), time.monotonic() + timeout_s
        with httpx.Client(timeout=10.0) as client:
            while time.monotonic() < deadline:
                if not self.dagster.alive():
                    raise DeploymentError(f"dagster dev exited ({self.dagster.process.returncode}):\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
                    entries = client.post(f"{self.dagster.url}/graphql", json={"query": LOCATION_QUERY}).json()[
                        "data"]["workspaceOrError"]["locationEntries"]
                    if entries and entries[0]["loadStatus"] == "LOADED":
                        self._check_location(entries[0]["locationOrLoadError"])
                        if "SENSOR" in self.instance.get_daemon_heartbeats():
                            return time.monotonic() - started
                time.sleep(1.0)
        raise DeploymentError(f"{self.setup.design} not ready within {timeout_s:.0f} s:\n{self.tail()}")

    def _check_location(self, location: dict) -> None:
        if location["__typename"] == "PythonError":
            raise DeploymentError(f"{self.setup.design}: the code location failed to load: "
                                  f"{location['message'].strip()[:800]}")
        jobs = {job["name"] for repo in location["repositories"] for job in repo["jobs"]}
        wanted, unwanted = SIGNATURE_JOBS[self.setup.design]
        if not wanted <= jobs or jobs & unwanted:
            raise DeploymentError(f"{self.setup.design}: the code server loaded the wrong code (jobs {sorted(jobs)})")

    def stop_simulators(self) -> None:
        if self.sims is not None:
            self.sims.stop()

    # -- measurements ---------------------------------------------------------------------------
    def b1_requests(self) -> int:
        return 0 if self.sims is None else self.sims.sap.count_requests()

    def twilio_records(self) -> int:
        """Messages and calls the Twilio simulator accepted so far."""
        if self.sims is None:
            return 0
        state = self.sims.twilio.admin_state()
        return int(state["messages"]) + int(state["calls"])

    def storage_bytes(self) -> int:
        """SQLite: the data in the Dagster home folder's databases and the store file(s), and every other file
        there (compute logs); PostgreSQL: both databases' sizes."""
        if self.setup.storage == "postgres":
            return sum(int(size) for (size,) in self._each_database("select pg_database_size(current_database())"))
        files = [p for p in self.home.rglob("*") if p.is_file()]
        files += [p for p in self.folder.glob("store.sqlite*") if p.is_file()]
        return sum(_stored_bytes(p) for p in files if not p.name.endswith(SQLITE_JOURNALS))

    def table_bytes(self) -> dict[str, int]:
        """PostgreSQL: each table's size with its indexes and TOAST, by name (Dagster's and the store's do
        not collide); SQLite: nothing (its tables share a file's pages)."""
        sizes: dict[str, int] = {}
        for name, size in self._each_database("select relname, pg_total_relation_size(relid) from pg_stat_user_tables"):
            sizes[name] = sizes.get(name, 0) + int(size)
        return sizes

    def _each_database(self, query: str) -> list[sa.Row]:
        """The rows `query` returns in each of the scratch PostgreSQL databases, one after the other."""
        rows: list[sa.Row] = []
        for url in self.database_urls:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                rows += conn.execute(sa.text(query)).all()
            engine.dispose()
        return rows
