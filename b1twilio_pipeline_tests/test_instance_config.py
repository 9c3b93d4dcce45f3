"""The production instance configuration (top-level dagster.yaml) loads, stores runs in PostgreSQL, and its
run queue limits each company on its own; the operator's autovacuum settings apply to its tables."""

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from b1twilio_pipeline.core.company_scope import COMPANY
from b1twilio_pipeline.housekeeping import INSTANCE_AUTOVACUUM_SQL
from b1twilio_pipeline_tests.fixtures_pipeline import POSTGRES, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgres


def _psql_settings(url: str) -> subprocess.CompletedProcess[str]:
    """The README's step: the settings file run by psql, stopping at the first error."""
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(INSTANCE_AUTOVACUUM_SQL)],
                          capture_output=True, text=True)


def test_the_autovacuum_settings_apply_to_the_instance_tables_as_the_readme_runs_them(postgres: sa.Engine) -> None:
    name, url = create_database(postgres, "tuned_instance")
    try:
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}):
            for _ in range(2):  # again after `dagster instance migrate`: harmless to repeat
                assert _psql_settings(url).returncode == 0
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            options = dict(conn.execute(sa.text(
                "select c.relname, coalesce(c.reloptions, '{}') || coalesce(t.reloptions, '{}') from pg_class c "
                "left join pg_class t on t.oid = c.reltoastrelid where c.relname in ('jobs', 'instigators', "
                "'job_ticks', 'runs')")).all())
        engine.dispose()
        state = ["autovacuum_vacuum_threshold=5", "autovacuum_vacuum_scale_factor=0"] * 2  # the table, its TOAST
        assert options == {"jobs": state, "instigators": state, "runs": [],
                           "job_ticks": ["autovacuum_vacuum_threshold=50", "autovacuum_vacuum_scale_factor=0"]}
    finally:
        drop_database(postgres, name)


def test_the_autovacuum_settings_say_what_is_wrong_on_a_database_without_the_instance(postgres: sa.Engine) -> None:
    name, url = create_database(postgres, "not_an_instance")
    try:
        ran = _psql_settings(url)
        assert ran.returncode != 0 and 'relation "jobs" does not exist' in ran.stderr
    finally:
        drop_database(postgres, name)


def test_production_dagster_yaml_runs_on_postgres(postgres: sa.Engine, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = create_database(postgres, "prod_instance")
    url = sa.engine.make_url(f"{POSTGRES}/{name}")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "unused-with-trust-auth")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
            assert {"key": "b1twilio/kind", "value": "notification", "limit": 4} in limits
            run = instance.create_run_for_job(dg.GraphDefinition("probe").to_job(), run_id=None)
            assert instance.get_run_by_id(run.run_id) is not None
    finally:
        drop_database(postgres, name)


def _origin(location: str) -> RemoteJobOrigin:
    """Where a queued run of code location `location` comes from (the daemon launches it from there)."""
    return RemoteJobOrigin(RemoteRepositoryOrigin(GrpcServerCodeLocationOrigin(
        host="127.0.0.1", port=4266, location_name=location), "__repository__"), "probe")


def test_the_run_queue_holds_back_a_company_with_three_runs_in_progress_and_not_the_others(
        postgres: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster's own run queue decision (the daemon's dequeue step) under the shipped limits: company de01
    has three runs in progress (its B1 is slow), so its queued run waits while us01's goes."""
    name, _ = create_database(postgres, "run_queue")
    url = sa.engine.make_url(f"{POSTGRES}/{name}")
    for variable, value in {"DAGSTER_PG_USERNAME": url.username or "postgres", "DAGSTER_PG_PASSWORD": "unused",
                            "DAGSTER_PG_HOST": url.host or "127.0.0.1", "DAGSTER_PG_DB": name}.items():
        monkeypatch.setenv(variable, value)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    job = dg.GraphDefinition("probe").to_job()
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            for _ in range(3):
                instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={COMPANY: "de01"})
            waiting, going = (instance.create_run_for_job(job, status=dg.DagsterRunStatus.QUEUED,
                                                          tags={COMPANY: company}, remote_job_origin=_origin(company))
                              for company in ("de01", "us01"))
            with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
                dequeued = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
            assert [run.run_id for run in dequeued] == [going.run_id]
            assert waiting.run_id not in {run.run_id for run in dequeued}
    finally:
        drop_database(postgres, name)
