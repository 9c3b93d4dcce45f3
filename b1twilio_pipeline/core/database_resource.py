"""DatabaseResource: the pipeline's own database (snapshots, alerts, the notification ledger) as a Dagster
resource. Each stage wraps its engine in its own store (`SnapshotStore`, `AlertStore`, `Ledger`)."""

from __future__ import annotations

import dagster as dg
from sqlalchemy.engine import Engine

from b1twilio_pipeline.core.database import engine_for


class DatabaseResource(dg.ConfigurableResource):
    """`database_url` None means B1TWILIO_DATABASE_URL (environment, then the secrets store), else the SQLite
    default; the schema is migrated on first use."""

    database_url: str | None = None

    @property
    def engine(self) -> Engine:
        return engine_for(self.database_url)
