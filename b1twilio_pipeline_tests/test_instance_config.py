"""The production instance configuration (top-level dagster.yaml) loads and stores runs in PostgreSQL."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from b1twilio_pipeline_tests.fixtures_pipeline import POSTGRES, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgres


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
