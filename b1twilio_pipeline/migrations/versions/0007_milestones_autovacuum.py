"""Milestones are vacuumed after a few dead rows (PostgreSQL).

The daemon's heartbeat rewrites its milestone row on every change check, about 120 times an hour. On a
table of a handful of rows autovacuum's default rule (50 dead rows plus 20 %) waits long, and every
rewrite that does not fit its page takes a new one meanwhile: the idle store grew by a little under half a
megabyte a day from this table alone. After 5 dead rows, a vacuum of one or two pages, it stays that size.

Revision ID: 0007
"""

from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE b1tw_milestones SET "
                   "(autovacuum_vacuum_threshold = 5, autovacuum_vacuum_scale_factor = 0)")
