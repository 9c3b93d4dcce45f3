"""StoreResource: the snapshot store, alert events and notification ledger on B1TWILIO_DATABASE_URL."""

from __future__ import annotations

import dagster as dg
from sqlalchemy.engine import Engine

from b1twilio_pipeline.b1.snapshot_store import AlertStore, SnapshotStore
from b1twilio_pipeline.core.database import engine_for
from b1twilio_pipeline.notifications.ledger import Ledger, RedrivePolicy


class StoreResource(dg.ConfigurableResource):
    """The pipeline's own database; `database_url` None means B1TWILIO_DATABASE_URL or the SQLite default."""

    database_url: str | None = None

    @property
    def engine(self) -> Engine:
        return engine_for(self.database_url)

    def snapshots(self) -> SnapshotStore:
        return SnapshotStore(self.engine)

    def alerts(self) -> AlertStore:
        return AlertStore(self.engine)

    def ledger(self) -> Ledger:
        return Ledger(self.engine, RedrivePolicy.from_settings())
