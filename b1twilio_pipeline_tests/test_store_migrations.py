"""The store's schema is versioned: a fresh database and one created by release 0.1.0 both end up exactly
at the schema the code expects, with the old rows kept and made safe for the new ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.core.database import VERSION_TABLE, dispose_engine, engine_for, head_revision
from b1twilio_pipeline.core.schema import metadata
from b1twilio_pipeline.notifications.ledger import Ledger
from b1twilio_pipeline_tests.fixtures_pipeline import create_database, drop_database

OLD_SCHEMA = Path(__file__).with_name("data") / "store_0_1_0.sql"
ROOT = Path(__file__).resolve().parents[1]


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return compare_metadata(context, metadata)


@pytest.fixture
def empty_pg(postgres: sa.Engine) -> Iterator[str]:
    name, url = create_database(postgres, "migrate")
    yield url
    dispose_engine(url)
    drop_database(postgres, name)


@pytest.mark.postgres
def test_a_fresh_postgres_store_matches_the_code(empty_pg: str) -> None:
    assert _differences(engine_for(empty_pg)) == []


def test_a_fresh_sqlite_store_matches_the_code_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "store" / "store.sqlite"
    url = f"sqlite:///{path}"
    try:
        assert _differences(engine_for(url)) == []
    finally:
        dispose_engine(url)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.postgres
def test_a_release_0_1_0_store_is_upgraded_with_its_rows(empty_pg: str) -> None:
    old = sa.create_engine(empty_pg)
    with old.begin() as conn:
        for statement in OLD_SCHEMA.read_text().split(";"):
            if statement.strip().replace("-", "").strip():
                conn.execute(sa.text(statement))
        conn.execute(sa.text(
            "INSERT INTO b1tw_snapshots VALUES ('Invoices', '7', :payload, NULL, 'h', now(), now())"),
            {"payload": json.dumps({"DocEntry": 7, "DocumentStatus": "bost_Open", "Cancelled": "tNO"})})
        conn.execute(sa.text(
            "INSERT INTO b1tw_notifications (notification_id, alert_id, rule_id, document, recipient, "
            "recipient_name, recipient_masked, channel, body, status, not_before, created_at, "
            "attempt_started_at, escalated) VALUES ('n1', 'a1', 'r', 'Invoices 7', 'person:g/Sam', 'Sam', "
            "'+44*******103', 'voice', 'call', 'sending', now(), now(), now(), false)"))
    old.dispose()

    engine = engine_for(empty_pg)

    assert _differences(engine) == []
    with engine.connect() as conn:
        assert conn.scalar(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")) == head_revision()
    interrupted = Ledger(engine).get("n1")
    assert interrupted is not None and interrupted.status == "sending"
    assert interrupted.lookup_since is not None  # the new release asks Twilio before sending it again
    assert [s.key for s in SnapshotStore(engine).iter_entity("Invoices", open_only=True)] == ["7"]


def test_db_upgrade_command_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    command = [sys.executable, "-m", "b1twilio_pipeline.cli", "db", "upgrade", "--database-url", url]
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert first.returncode == 0 and f"upgraded from revision none to {head_revision()}" in first.stdout
    assert again.returncode == 0 and f"already at revision {head_revision()}" in again.stdout
