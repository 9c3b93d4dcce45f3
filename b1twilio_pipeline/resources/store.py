"""StoreResource: the snapshot store, alert events and notification ledger on B1TWILIO_DATABASE_URL."""

from __future__ import annotations

import threading

import dagster as dg
from sqlalchemy.engine import Engine

from b1twilio_pipeline.store import AlertStore, Ledger, SnapshotStore, create_store_engine

_engines: dict[str | None, Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str | None) -> Engine:
    """One engine (connection pool) per URL and process, however many resources are built."""
    with _engines_lock:
        if url not in _engines:
            _engines[url] = create_store_engine(url)
        return _engines[url]


def dispose_engine(url: str | None) -> None:
    """Close the pooled connections of `url` (tests drop their databases afterwards)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


class StoreResource(dg.ConfigurableResource):
    """The pipeline's own database; `database_url` None means B1TWILIO_DATABASE_URL or the SQLite default."""

    database_url: str | None = None

    @property
    def engine(self) -> Engine:
        return shared_engine(self.database_url)

    def snapshots(self) -> SnapshotStore:
        return SnapshotStore(self.engine)

    def alerts(self) -> AlertStore:
        return AlertStore(self.engine)

    def ledger(self) -> Ledger:
        return Ledger(self.engine)
