"""Twilio delivery statuses and the rule that orders them.

Twilio gives no ordering guarantee for status callbacks, callbacks can be replayed, and the polling
sensor reports the same statuses a second time. Both paths therefore go through `should_advance`, so
the ledger only ever moves forward: a late `sent` never overwrites `delivered`, a replay changes nothing.

Ranks (higher wins; a status only replaces one of strictly lower rank)::

    sms    accepted 10 < scheduled 20 < queued 30 < sending = receiving 40 < sent = received 50
           < partially_delivered 60 < (unknown 90) < delivered = undelivered = failed = canceled 100
           < read 110
    voice  queued 10 < initiated 20 < ringing 30 < in-progress (= answered) 40 < (unknown 90)
           < completed = busy = failed = no-answer = canceled 100

Final statuses never change, with one exception: `read` (a read receipt) may follow `delivered`.
A status Twilio adds later (unknown here) ranks just below the finals: it is recorded over any
non-final status but never replaces a final one, and a known non-final status does not replace it
(we cannot tell which came first, so the newer information stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SMS = "sms"
VOICE = "voice"
DELIVERY_CHANNELS = (SMS, VOICE)  # what Twilio delivers; a rule may also say sms_then_voice

UNKNOWN_RANK = 90
FINAL_RANK = 100

_SMS_RANKS: dict[str, int] = {
    "accepted": 10,
    "scheduled": 20,
    "queued": 30,
    "sending": 40,
    "receiving": 40,
    "sent": 50,
    "received": 50,
    "partially_delivered": 60,
    "delivered": FINAL_RANK,
    "undelivered": FINAL_RANK,
    "failed": FINAL_RANK,
    "canceled": FINAL_RANK,
    "read": 110,
}

_VOICE_RANKS: dict[str, int] = {
    "queued": 10,
    "initiated": 20,
    "ringing": 30,
    "in-progress": 40,
    "answered": 40,  # the `answered` event is reported as CallStatus in-progress; same rank if seen raw
    "completed": FINAL_RANK,
    "busy": FINAL_RANK,
    "failed": FINAL_RANK,
    "no-answer": FINAL_RANK,
    "canceled": FINAL_RANK,
}

_RANKS: dict[str, dict[str, int]] = {SMS: _SMS_RANKS, VOICE: _VOICE_RANKS}

SMS_STATUSES: frozenset[str] = frozenset(_SMS_RANKS)
VOICE_STATUSES: frozenset[str] = frozenset(_VOICE_RANKS) - {"answered"}

EXCEPTIONS: dict[str, frozenset[str]] = {
    SMS: frozenset({"undelivered", "failed"}),
    VOICE: frozenset({"busy", "failed", "no-answer", "canceled"}),
}
# The person was reached: the handset confirmed the SMS, or the call was answered (by someone or a mailbox).
REACHED: dict[str, frozenset[str]] = {SMS: frozenset({"delivered", "read"}), VOICE: frozenset({"completed"})}

_SID_PREFIXES: dict[str, str] = {"SM": SMS, "MM": SMS, "CA": VOICE}


@dataclass(frozen=True)
class StatusEvent:
    """One observed status of a message or call, from a callback or from polling."""

    sid: str  # SM.../MM... or CA...
    channel: str  # "sms" | "voice"
    status: str
    error_code: int | None
    source: str  # "callback" | "poll"
    received_at: datetime  # aware UTC
    sequence: int | None = None  # call SequenceNumber
    duration_s: int | None = None


def channel_of(sid: str) -> str:
    """`sms` for SM/MM SIDs, `voice` for CA SIDs; anything else is a ValueError."""
    channel = _SID_PREFIXES.get(sid[:2])
    if channel is None:
        raise ValueError(f"{sid[:2]!r}... is not a message (SM/MM) or call (CA) SID")
    return channel


def _ranks(channel: str) -> dict[str, int]:
    try:
        return _RANKS[channel]
    except KeyError:
        raise ValueError(f"unknown channel {channel!r}: expected one of {', '.join(DELIVERY_CHANNELS)}") from None


def rank(channel: str, status: str) -> int:
    """Position of `status` in its lifecycle (see the module docstring); unknown statuses rank 90."""
    return _ranks(channel).get(status, UNKNOWN_RANK)


def is_final(channel: str, status: str) -> bool:
    """Final statuses end polling. `read` is final too: nothing follows a read receipt."""
    return rank(channel, status) >= FINAL_RANK


def is_exception(channel: str, status: str) -> bool:
    """Delivery exceptions: sms undelivered/failed; voice busy/failed/no-answer/canceled (not answered)."""
    _ranks(channel)
    return status in EXCEPTIONS[channel]


def should_advance(channel: str, current: str | None, new: str) -> bool:
    """True when `new` should replace `current` in the ledger; False for replays and stale statuses."""
    if current is None:
        _ranks(channel)
        return True
    if new == current:
        return False
    if is_final(channel, current):
        return channel == SMS and current == "delivered" and new == "read"
    return rank(channel, new) > rank(channel, current)
