"""The pipeline's database: one engine per URL and process, migrated to the current schema before first use.

Every service (run workers, the receiver, the CLI) calls `engine_for`, so a deployment upgrades itself
when the new release starts; `b1twilio db upgrade` does the same on demand. Concurrent starts are safe:
on PostgreSQL the upgrade runs under an advisory lock, on SQLite under a lock file. A database created by
release 0.1.0 (tables, no version table) is recognised and upgraded from there.

The quick-start SQLite file and its folder are private to the user (mode 0600/0700): notification bodies
carry customer names and amounts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core.settings import current

MIGRATIONS = Path(__file__).parents[1] / "migrations"
VERSION_TABLE = "b1tw_schema_version"
FIRST_RELEASE_REVISION = "0001"
_ADVISORY_LOCK_KEY = 0x6231_7477  # "b1tw"
COMPANY_SCHEMA_PREFIX = "b1tw_"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def default_database_url() -> str:
    return f"sqlite:///{Path.home() / '.local' / 'share' / 'b1twilio' / 'store.sqlite'}"


def database_url(url: str | None = None) -> str:
    """`url`, else B1TWILIO_DATABASE_URL (environment, then the secrets store), else the SQLite default."""
    return url or current().b1twilio_database_url or default_database_url()


def company_database_url(url: str, company: str) -> str:
    """A company's own store beside the deployment's (B1TWILIO_DATABASE_URL): on PostgreSQL the same database,
    in schema `b1tw_<company>` (made on first use); a SQLite file `<name>-<company>.sqlite` beside it. Own
    tables per company keep its ledger, dedup keys and snapshots apart by construction."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "store.sqlite")
        return parsed.set(database=str(path.with_name(f"{path.stem}-{company}{path.suffix or '.sqlite'}"))) \
            .render_as_string(hide_password=False)
    return parsed.update_query_dict({"options": f"-csearch_path={COMPANY_SCHEMA_PREFIX}{company}"}) \
        .render_as_string(hide_password=False)


def engine_for(url: str | None = None) -> Engine:
    """The migrated engine (connection pool) for `url`, one per process however many callers ask."""
    resolved = database_url(url)
    with _engines_lock:
        engine = _engines.get(resolved)
        if engine is None:
            engine = _create_engine(resolved)
            upgrade(engine)
            _engines[resolved] = engine
        return engine


def upgrade_command(args: argparse.Namespace) -> int:
    """`b1twilio db upgrade`: migrate the store on B1TWILIO_DATABASE_URL (or --database-url) now."""
    engine = _create_engine(database_url(args.database_url))
    try:
        started = upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    head = head_revision()
    print(f"store {where}: " + (f"already at revision {head}" if started == head else
                                f"upgraded from revision {started} to {head}"))
    return 0


def dispose_engine(url: str) -> None:
    """Close the pooled connections of `url` (tests drop their databases afterwards)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        _private_file(Path(url.removeprefix("sqlite:///")).expanduser())
        return sa.create_engine(url, connect_args={"timeout": 30})
    return sa.create_engine(url, pool_pre_ping=True)


def _private_file(path: Path) -> None:
    """Create the SQLite file owner-only, and tighten one an earlier release left world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _create_company_schema(connection: Connection) -> None:
    """A company's store lives in its schema (`company_database_url`), first on the search path."""
    first = connection.execute(sa.text("select current_setting('search_path')")).scalar_one().split(",")[0].strip()
    if first.startswith(COMPANY_SCHEMA_PREFIX) and first.replace("_", "").isalnum():
        connection.execute(sa.text(f'create schema if not exists "{first}"'))


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns the revision it started from ('none' if empty)."""
    with engine.connect() as probe:
        if current_revision(probe) == head_revision():
            return head_revision()
    database = engine.url.database or ""
    file_based = engine.dialect.name == "sqlite" and database not in ("", ":memory:")
    with FileLock(f"{database}.migrate.lock") if file_based else contextlib.nullcontext():
        return _upgrade_locked(engine)


def _upgrade_locked(engine: Engine) -> str:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_LOCK_KEY)))
            _create_company_schema(connection)
        started = current_revision(connection)
        config = _config(connection)
        if started is None and sa.inspect(connection).has_table("b1tw_notifications"):
            command.stamp(config, FIRST_RELEASE_REVISION)  # made by release 0.1.0's create_all
            started = FIRST_RELEASE_REVISION
        command.upgrade(config, "head")
    return started or "none"
