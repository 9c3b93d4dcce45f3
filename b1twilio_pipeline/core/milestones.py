"""Named moments kept in the store (`b1tw_milestones`): the deployment's first start, the daemon's
heartbeat, an open incident. Each is one row, so every process agrees on it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b1twilio_pipeline.core.schema import milestones
from b1twilio_pipeline.core.sql import aware, insert


def read(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        return aware(conn.scalar(sa.select(milestones.c.at).where(milestones.c.name == name)))


def touch(engine: Engine, name: str, at: datetime) -> None:
    """Set `name` to `at`, whatever it was."""
    with engine.begin() as conn:
        statement = insert(conn, milestones).values(name=name, at=at)
        conn.execute(statement.on_conflict_do_update(index_elements=[milestones.c.name], set_={"at": at}))


def open_once(engine: Engine, name: str, at: datetime) -> bool:
    """Record `name` unless it is recorded; True for the one caller that recorded it."""
    with engine.begin() as conn:
        return bool(conn.execute(insert(conn, milestones).values(name=name, at=at)
                                 .on_conflict_do_nothing(index_elements=[milestones.c.name])).rowcount)


def close(engine: Engine, name: str) -> bool:
    """Forget `name`; True for the one caller that found it."""
    with engine.begin() as conn:
        return bool(conn.execute(sa.delete(milestones).where(milestones.c.name == name)).rowcount)
