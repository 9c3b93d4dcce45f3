"""What an SMS reply or a keypress means, and the answer the person gets.

An SMS reply is matched to a person by the number it comes from: the rules file says whose number that is
(inline, or PHONE_<REF> from the secrets store); the ledger never holds numbers. Its body, case and spaces
ignored, is the code printed at the end of an alert ("Reply 7MLWQA to acknowledge"), or OK for the newest
alert sent to that person; anything else gets a short help. Twilio's own keywords (STOP, HELP, ...) are
Twilio's to answer: they get no reply here.

A keypress comes on the call itself: the CallSid names the notification, and 1 acknowledges. A call that
ends without a keypress (an answering machine heard it) acknowledges nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from b1twilio_pipeline.alerts.rules import RulesConfig
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.acknowledgements import (
    VIA_KEYPRESS,
    VIA_SMS,
    Acknowledgement,
    Acknowledgements,
)
from b1twilio_pipeline.notifications.ledger import Ledger, Notification
from b1twilio_pipeline.notifications.ledger_reads import LedgerReads

# Twilio answers these itself (opt-out and help handling); a reply of ours would be noise or is dropped.
TWILIO_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "START", "YES",
                             "UNSTOP", "HELP", "INFO"})
_CODE = re.compile(r"^[A-Z0-9]{4,8}$")
HELP = "Reply with the code at the end of an alert (e.g. 7MLWQA) to acknowledge it, or OK for the newest one."
NOTHING_OPEN = "There is no alert to acknowledge for this number."


class Inbound:
    """Acknowledgements from SMS replies and keypresses against the ledger; `rules` is read per request,
    so an edited rules file (a new phone number) applies at once. `on_acknowledged` hears each new
    acknowledgement once (a replay is not new)."""

    def __init__(self, engine: Engine, rules: Callable[[], RulesConfig],
                 on_acknowledged: Callable[[Acknowledgement, Notification], None] | None = None) -> None:
        self.ledger, self.reads, self.acks = Ledger(engine), LedgerReads(engine), Acknowledgements(engine)
        self.rules = rules
        self.on_acknowledged = on_acknowledged

    def sms_reply(self, sender: str, body: str, message_sid: str) -> str | None:
        """The answer to an SMS from `sender`, or None when there must be none."""
        text = _command(body)
        if text in TWILIO_KEYWORDS:
            return None
        if text != "OK" and not _CODE.fullmatch(text):
            return HELP
        chosen, open_alerts = self._choose(sender, text)
        if not chosen:
            return NOTHING_OPEN if text == "OK" or not open_alerts else f"No open alert has the code {text}. {HELP}"
        return self._acknowledge(chosen[0], VIA_SMS, message_sid)

    def would_acknowledge(self, sender: str, body: str) -> Notification | None:
        """The notification a reply from `sender` would acknowledge here, None when nothing here: a receiver
        serving several companies on one number hands the reply to the company it is about."""
        text = _command(body)
        if text in TWILIO_KEYWORDS or (text != "OK" and not _CODE.fullmatch(text)):
            return None
        chosen, _open = self._choose(sender, text)
        return chosen[0] if chosen else None

    def _choose(self, sender: str, text: str) -> tuple[list[Notification], list[Notification]]:
        """(the notification `text` acknowledges, if any; the sender's open alerts)."""
        recipients = self._recipients_of(sender)
        open_alerts = self.reads.awaiting_acknowledgement(recipients, utcnow())
        if text == "OK":
            return open_alerts[:1], open_alerts
        chosen = [n for n in open_alerts if n.ref == text][:1] or self._already_acknowledged(recipients, text)
        return chosen, open_alerts

    def _already_acknowledged(self, recipients: list[str], code: str) -> list[Notification]:
        """The person's notification with this code whose alert is acknowledged already: a repeated reply
        (or Twilio retrying the webhook) gets the same answer, and records nothing new."""
        found = [n for key in recipients if (n := self.ledger.by_ref(key, code)) is not None]
        return [n for n in found if self.acks.get(n.alert_id) is not None][:1]

    def knows_call(self, call_sid: str) -> bool:
        return self.ledger.by_sid(call_sid) is not None

    def keypress(self, call_sid: str, digits: str) -> str:
        """What the call says after the person pressed `digits`."""
        n = self.ledger.by_sid(call_sid)
        if n is None:
            return "This call is not known. Goodbye."
        if digits.strip() != "1":
            return "Not acknowledged. Goodbye."
        return f"{self._acknowledge(n, VIA_KEYPRESS, call_sid)} Goodbye."

    def _acknowledge(self, n: Notification, via: str, via_sid: str) -> str:
        ack, new = self.acks.record(n, via=via, via_sid=via_sid, at=utcnow())
        if new and self.on_acknowledged is not None:
            self.on_acknowledged(ack, n)
        return _confirmation(n, ack)

    def _recipients_of(self, sender: str) -> list[str]:
        """The recipient keys whose phone is `sender`. A phone_ref whose secret is missing is skipped: that
        person cannot have been sent anything."""
        keys = []
        for people in self.rules().recipients.values():
            for person in people:
                try:
                    if person.resolve_phone() == sender:
                        keys.append(person.key)
                except ConfigurationError:
                    continue
        return keys


class SharedNumber:
    """Replies and keypresses on a Twilio number several companies send from (one `Inbound` each): a reply
    goes to the company holding the alert it acknowledges (for OK, the one sent last), a keypress to the
    company that made the call; a reply that acknowledges nothing anywhere gets the first company's answer
    (help, or "nothing open")."""

    def __init__(self, companies: Sequence[Inbound]) -> None:
        self.companies = companies

    def sms_reply(self, sender: str, body: str, message_sid: str) -> str | None:
        found = [(n, inbound) for inbound in self.companies if (n := inbound.would_acknowledge(sender, body))]
        latest = max(found, key=lambda pair: pair[0].sent_at or pair[0].created_at)[1] if found else None
        return (latest or self.companies[0]).sms_reply(sender, body, message_sid)

    def keypress(self, call_sid: str, digits: str) -> str:
        caller = next((inbound for inbound in self.companies if inbound.knows_call(call_sid)), self.companies[0])
        return caller.keypress(call_sid, digits)


def _command(body: str) -> str:
    """What a reply says, case and spaces ignored: a code, OK, a Twilio keyword or something else."""
    return re.sub(r"\s+", "", body or "").upper()


def _confirmation(n: Notification, ack: Acknowledgement) -> str:
    if ack.notification_id == n.notification_id:
        return f"Acknowledged: {n.document} ({n.rule_id}). Thank you, {n.recipient_name}."
    return f"Already acknowledged by {ack.recipient_name} at {ack.acknowledged_at:%H:%M} UTC: {n.document}."
