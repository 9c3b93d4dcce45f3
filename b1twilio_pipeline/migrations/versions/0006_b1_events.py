"""B1 webhook events: the receiver keeps each event id once; the webhook sensor reads them by key.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "b1tw_b1_events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("action", sa.String(12), nullable=False),
        sa.Column("record_key", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True)),
        sa.Column("run_key", sa.String(80)),
    )
    op.create_index("ix_b1tw_b1_events_handled", "b1tw_b1_events", ["handled_at"])
