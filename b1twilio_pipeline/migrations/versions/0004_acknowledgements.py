"""Acknowledgements: who took an alert on, once per alert.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "b1tw_acknowledgements",
        sa.Column("alert_id", sa.String(200), primary_key=True),
        sa.Column("notification_id", sa.String(250), nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("recipient_name", sa.Text, nullable=False),
        sa.Column("recipient_masked", sa.Text, nullable=False),
        sa.Column("via", sa.String(12), nullable=False),
        sa.Column("via_sid", sa.String(40), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
    )
