"""Whether Twilio accepts the pipeline's credentials, as the requests of a run find it: a refusal (HTTP 401 or
Twilio error 20003: a rotated Auth Token, a key of another region) is kept in the store with the moment it
began (`REFUSED`), and forgotten by the next request Twilio authenticates. Self-monitoring shows it in the
UI at once and tells the admins when it is over (no SMS about it can go out while it lasts).

Only changes are written: a run forgets a refusal once, at its first authenticated request, not at every
send of a burst.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.twilio_api import TwilioSendError

REFUSED = "twilio-auth-refused"


def refuses_us(error: TwilioSendError) -> bool:
    return error.http_status == 401 or error.code == 20003


class TwilioAuth:
    """What one run's Twilio requests said about our credentials (shared by its sending threads: a race
    costs at most one more idempotent statement)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._accepted = False

    def saw(self, error: TwilioSendError | None) -> None:
        """After each Twilio request: `error` is None when it succeeded. Any other answer below 500 (an
        invalid number, say) came after authentication too; a 5xx or a lost connection says nothing."""
        if error is not None and refuses_us(error):
            milestones.open_once(self.engine, REFUSED, utcnow())
            self._accepted = False
        elif (error is None or (error.http_status or 500) < 500) and not self._accepted:
            milestones.close(self.engine, REFUSED)
            self._accepted = True
