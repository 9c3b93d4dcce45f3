"""What the change sensor's questions to B1 came to, kept in the store for self-monitoring (the notification
stage decides whom to tell, see `notifications/self_monitoring.py`): since when no question of a tick has
been answered (`B1_FAILING`: B1 unreachable, failing or refusing the login, or its settings wrong) and
since when each entity's question has gone unanswered (`entity_failing`).

Only the beginning of a failure is written, and it is deleted by the next answer: the moment stays put
however many ticks fail, a healthy tick costs one DELETE, and a daemon that was stopped leaves nothing
behind that could pass for blindness when it comes back (the time it was away is the watchdog's).

When the first question finds B1 down (`SapB1Unavailable`, `SapB1AuthError`) the tick ends with that
error, as any error that is not B1's answer does: asking the others would only wait on the same outage.
Once B1 has answered, an entity it fails on (a 4xx: a field B1 no longer knows, a missing permission; or
a 5xx of that one service) is logged and asked again next tick while the others go on, so one broken
entity set never blinds the pipeline to the rest.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from b1twilio_pipeline.b1.change_detection import Probe
from b1twilio_pipeline.b1.entities import ENTITIES, EntitySpec
from b1twilio_pipeline.b1.errors import SapB1AuthError, SapB1Error, SapB1Unavailable
from b1twilio_pipeline.core import milestones

B1_FAILING = "b1-failing"  # since when no question of a tick got an answer


def entity_failing(entity: str) -> str:
    """The moment since when `entity`'s question has gone unanswered."""
    return f"b1-probe-failing:{entity}"


def probe_each(engine: Engine, now: datetime, watched: Sequence[EntitySpec], ask: Callable[[EntitySpec], Probe],
               log: Any) -> dict[str, Probe]:
    """`ask(spec)` for every watched entity, recording what answered; the answers by entity (an entity B1
    failed on is missing, and its error logged)."""
    answers: dict[str, Probe] = {}
    failed: list[str] = []
    try:
        for spec in watched:
            try:
                answers[spec.entity] = ask(spec)
            except SapB1Error as error:
                if not (answers or failed) and isinstance(error, SapB1AuthError | SapB1Unavailable):
                    raise
                log.warning(f"B1 did not answer the question about {spec.entity} (asked again next tick): {error}")
                failed.append(spec.entity)
    except Exception:
        _record(engine, now, [spec.entity for spec in watched if spec.entity not in answers],
                b1_answered=bool(answers or failed))
        raise
    _record(engine, now, failed, b1_answered=True)  # (with nothing watched nothing can fail: all is forgotten)
    return answers


def _record(engine: Engine, now: datetime, unanswered: Collection[str], b1_answered: bool) -> None:
    """Keep the start of each failure, forget what answered (and entities no longer watched)."""
    with engine.begin() as conn:
        milestones.forget(conn, [entity_failing(spec.entity) for spec in ENTITIES if spec.entity not in unanswered]
                          + ([B1_FAILING] if b1_answered else []))
        for entity in unanswered:
            milestones.open_once(conn, entity_failing(entity), now)
        if not b1_answered:
            milestones.open_once(conn, B1_FAILING, now)
