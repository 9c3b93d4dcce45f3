"""The deployment's first start, recorded once in the store. The snapshot partitions begin at its window:
windows from before the pipeline existed were never read and never will be, so they are not gaps, and the
UI must not count them as missing. (B1TWILIO_PARTITIONS_START sets another start, e.g. to backfill
history.)"""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.database import database_url
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.sql import utcnow

FIRST_START = "first_start"


def first_start(database: DatabaseResource) -> datetime:
    """When this deployment first asked (now, the first time); every process agrees on the same moment:
    the first to record it wins, and everyone reads what was recorded."""
    try:
        milestones.open_once(database.engine, FIRST_START, utcnow())
        recorded = milestones.read(database.engine, FIRST_START)
    except SQLAlchemyError as exc:
        where = sa.make_url(database_url(database.database_url)).render_as_string(hide_password=True)
        raise ConfigurationError(
            f"the store at {where} cannot be reached ({type(exc.orig or exc).__name__}): the snapshot partitions "
            "begin at the deployment's first start recorded there; start the database, or set "
            "B1TWILIO_PARTITIONS_START") from None
    assert recorded is not None
    return recorded
