"""When this deployment first started: its first partition, so windows before it are not counted as
missing in the UI.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "b1tw_milestones",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
