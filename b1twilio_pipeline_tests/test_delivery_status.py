"""Ordering rules of Twilio delivery statuses: never backwards, finals stay, read may follow delivered."""

from __future__ import annotations

import pytest

from b1twilio_pipeline.notifications.statuses import (
    SMS_STATUSES,
    VOICE_STATUSES,
    channel_of,
    is_exception,
    is_final,
    rank,
    should_advance,
)

SMS_FINALS = {"delivered", "undelivered", "failed", "read", "canceled"}
VOICE_FINALS = {"completed", "busy", "failed", "no-answer", "canceled"}


def replay(channel: str, statuses: list[str]) -> str | None:
    """Apply statuses in arrival order the way the ledger does; the status that remains."""
    current: str | None = None
    for status in statuses:
        if should_advance(channel, current, status):
            current = status
    return current


def test_channel_of_sid_prefixes() -> None:
    assert channel_of("SM" + "a" * 32) == "sms"
    assert channel_of("MM" + "0" * 32) == "sms"
    assert channel_of("CA" + "f" * 32) == "voice"
    with pytest.raises(ValueError, match="not a message"):
        channel_of("AC" + "0" * 32)


def test_final_statuses_match_the_documented_sets() -> None:
    assert {s for s in SMS_STATUSES if is_final("sms", s)} == SMS_FINALS
    assert {s for s in VOICE_STATUSES if is_final("voice", s)} == VOICE_FINALS
    assert not is_final("sms", "partially_delivered")
    assert not is_final("voice", "in-progress")


def test_exceptions() -> None:
    assert {s for s in SMS_STATUSES if is_exception("sms", s)} == {"undelivered", "failed"}
    assert {s for s in VOICE_STATUSES if is_exception("voice", s)} == {
        "busy",
        "failed",
        "no-answer",
        "canceled",
    }
    assert not is_exception("voice", "completed")
    assert not is_exception("sms", "delivered")


@pytest.mark.parametrize(
    ("channel", "lifecycle"),
    [
        (
            "sms",
            [
                "accepted",
                "scheduled",
                "queued",
                "sending",
                "sent",
                "partially_delivered",
                "delivered",
                "read",
            ],
        ),
        ("voice", ["queued", "initiated", "ringing", "in-progress", "completed"]),
    ],
)
def test_lifecycle_ranks_strictly_increase(channel: str, lifecycle: list[str]) -> None:
    ranks = [rank(channel, s) for s in lifecycle]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
    assert replay(channel, lifecycle) == lifecycle[-1]


def test_never_backwards() -> None:
    assert replay("sms", ["sent", "queued", "sending"]) == "sent"
    assert replay("voice", ["in-progress", "ringing", "initiated"]) == "in-progress"


def test_delivered_stays_delivered() -> None:
    assert replay("sms", ["delivered", "sent"]) == "delivered"
    assert replay("sms", ["delivered", "undelivered", "failed", "canceled"]) == "delivered"
    assert replay("sms", ["undelivered", "delivered"]) == "undelivered"


def test_read_may_follow_delivered_only() -> None:
    assert should_advance("sms", "delivered", "read")
    assert not should_advance("sms", "undelivered", "read")
    assert not should_advance("sms", "failed", "read")
    assert not should_advance("sms", "read", "delivered")
    assert replay("sms", ["sent", "delivered", "read", "delivered", "sent"]) == "read"


def test_voice_finals_stay() -> None:
    assert replay("voice", ["completed", "in-progress", "ringing"]) == "completed"
    assert replay("voice", ["no-answer", "completed"]) == "no-answer"
    assert replay("voice", ["busy", "failed"]) == "busy"


def test_replay_of_same_status_is_no_change() -> None:
    assert should_advance("sms", None, "sent")
    assert not should_advance("sms", "sent", "sent")
    assert not should_advance("voice", "completed", "completed")


def test_unknown_status_is_accepted_but_never_overrides_a_final() -> None:
    assert should_advance("sms", None, "teleported")
    assert should_advance("sms", "sent", "teleported")
    assert not should_advance("sms", "delivered", "teleported")
    assert not should_advance("voice", "completed", "transferred")
    assert should_advance("sms", "teleported", "delivered")
    assert not should_advance("sms", "teleported", "queued")


def test_answered_ranks_as_in_progress() -> None:
    assert rank("voice", "answered") == rank("voice", "in-progress")
    assert not should_advance("voice", "in-progress", "answered")


def test_unknown_channel_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        should_advance("fax", None, "sent")
    with pytest.raises(ValueError, match="unknown channel"):
        is_exception("fax", "failed")
