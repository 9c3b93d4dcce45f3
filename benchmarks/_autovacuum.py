"""Autovacuum's part, played for a benchmark's own PostgreSQL databases when the server has it off.

PostgreSQL keeps the old version of every row an UPDATE or DELETE replaced until VACUUM marks its space
reusable; autovacuum (on by default) does that in the background. Dagster rewrites each sensor's state
row on every tick, so a server without autovacuum grows by a dead row version per tick for ever, which no
production server does. This machine's PostgreSQL runs with `autovacuum = off` (its CI configuration), so
an idle window measured on it would count that as storage growth. The stand-in applies autovacuum's
default rule instead, once a minute like its launcher (`autovacuum_naptime`): a table with more dead
row versions than 50 + 20 % of its rows as last counted (`autovacuum_vacuum_threshold`,
`autovacuum_vacuum_scale_factor`, or the table's own settings of those) is vacuumed. A server with
autovacuum on is left to do it itself. A benchmark's Dagster instance gets the settings an operator gives
a production one (`apply_instance_settings`).

Like autovacuum, it counts every table of the database on its own, a table's TOAST table (where a value
of more than about 2 KB is kept, such as Dagster's declarative automation cursor) included: rewriting such
a value leaves its old chunks dead there while the table itself, updated in place on its page, may have
almost none, so judging the TOAST table by its table's count would leave it growing.
"""

from __future__ import annotations

import contextlib
import threading

import sqlalchemy as sa

from b1twilio_pipeline.housekeeping import INSTANCE_AUTOVACUUM_SQL

NAPTIME_S = 60.0
VACUUM_THRESHOLD = 50
VACUUM_SCALE_FACTOR = 0.2
# A table's own settings (`ALTER TABLE ... SET (autovacuum_vacuum_threshold = ...)`, as the operator's
# `INSTANCE_AUTOVACUUM_SQL` sets on Dagster's hottest tables) take the place of the defaults, as in autovacuum.
DUE_TABLES = sa.text(
    "select quote_ident(s.schemaname) || '.' || quote_ident(s.relname) "
    "from pg_stat_all_tables s join pg_class c on c.oid = s.relid "
    "cross join lateral (select "
    " coalesce(max(o.option_value) filter (where o.option_name = 'autovacuum_vacuum_threshold'), "
    "          :threshold)::float as threshold, "
    " coalesce(max(o.option_value) filter (where o.option_name = 'autovacuum_vacuum_scale_factor'), "
    "          :scale)::float as scale "
    " from pg_options_to_table(c.reloptions) o) t "
    "where s.n_dead_tup > t.threshold + t.scale * greatest(c.reltuples, 0)")  # reltuples -1: never counted


def apply_instance_settings(url: str) -> None:
    """The operator's step for a Dagster instance on PostgreSQL (README, Production): autovacuum settings
    for its hottest tables, which must exist by then."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    connection = engine.raw_connection()  # the file as psql runs it: no parameters (its comments hold a %)
    try:
        with connection.cursor() as cursor:
            cursor.execute(INSTANCE_AUTOVACUUM_SQL.read_text())
        connection.commit()
    finally:
        connection.close()
        engine.dispose()


class AutovacuumStandIn:
    """Vacuums the tables of `urls` by autovacuum's default rule until `stop()`, if the server has it off."""

    def __init__(self, urls: list[str]) -> None:
        self.engines = [sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
                        for url in urls]
        self.vacuums = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autovacuum-stand-in", daemon=True)

    def start(self) -> None:
        with self.engines[0].connect() as conn:
            if conn.execute(sa.text("show autovacuum")).scalar_one() == "on":
                return
        self._thread.start()

    @property
    def active(self) -> bool:
        """Whether it plays autovacuum's part (the server has it off)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopped.wait(NAPTIME_S):
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a database may be going away
                self.vacuum_due()

    def vacuum_due(self) -> int:
        """One round of the launcher: vacuum every table over the threshold; how many there were."""
        vacuumed = 0
        for engine in self.engines:
            with engine.connect() as conn:
                due = conn.execute(DUE_TABLES, {"threshold": str(VACUUM_THRESHOLD),
                                                "scale": str(VACUUM_SCALE_FACTOR)}).scalars().all()
                for table in due:
                    conn.execute(sa.text(f"VACUUM {table}"))
                vacuumed += len(due)
        self.vacuums += vacuumed
        return vacuumed

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)
        for engine in self.engines:
            engine.dispose()
