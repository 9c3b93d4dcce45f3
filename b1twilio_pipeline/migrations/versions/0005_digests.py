"""Digests: a notification may gather several alerts of one rule for one person.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("b1tw_notifications") as batch:
        batch.add_column(sa.Column("digest", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "b1tw_digest_items",
        sa.Column("notification_id", sa.String(250), primary_key=True),
        sa.Column("alert_id", sa.String(200), primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
