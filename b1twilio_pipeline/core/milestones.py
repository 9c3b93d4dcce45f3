"""Named moments kept in the store (`b1tw_milestones`): the deployment's first start, the daemon's
heartbeat, since when something has been failing, an open incident. Each is one row, so every process
agrees on it.

The writers take an engine (their own transaction) or a connection: the change is then part of the
caller's transaction, so an incident is opened or closed together with the messages about it, or not at
all."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from b1twilio_pipeline.core.schema import milestones
from b1twilio_pipeline.core.sql import aware, insert


@contextmanager
def _transaction(db: Engine | Connection) -> Iterator[Connection]:
    if isinstance(db, Connection):
        yield db
        return
    with db.begin() as conn:
        yield conn


def read(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        return aware(conn.scalar(sa.select(milestones.c.at).where(milestones.c.name == name)))


def read_all(engine: Engine) -> dict[str, datetime]:
    """Every moment by name: the table holds a handful of rows, so one query answers a whole tick."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(milestones.c.name, milestones.c.at))
        return {row.name: at for row in rows if (at := aware(row.at)) is not None}


def touch(db: Engine | Connection, name: str, at: datetime) -> None:
    """Set `name` to `at`, whatever it was."""
    with _transaction(db) as conn:
        statement = insert(conn, milestones).values(name=name, at=at)
        conn.execute(statement.on_conflict_do_update(index_elements=[milestones.c.name], set_={"at": at}))


def open_once(db: Engine | Connection, name: str, at: datetime) -> bool:
    """Record `name` unless it is recorded; True for the one caller that recorded it."""
    with _transaction(db) as conn:
        return bool(conn.execute(insert(conn, milestones).values(name=name, at=at)
                                 .on_conflict_do_nothing(index_elements=[milestones.c.name])).rowcount)


def close(db: Engine | Connection, name: str) -> bool:
    """Forget `name`; True for the one caller that found it."""
    with _transaction(db) as conn:
        return bool(conn.execute(sa.delete(milestones).where(milestones.c.name == name)).rowcount)


def forget(db: Engine | Connection, names: Iterable[str]) -> None:
    """Forget whichever of `names` are recorded, in one statement (what a healthy tick clears)."""
    wanted = list(names)
    if wanted:
        with _transaction(db) as conn:
            conn.execute(sa.delete(milestones).where(milestones.c.name.in_(wanted)))
