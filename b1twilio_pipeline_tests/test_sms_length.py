"""SMS segments as Twilio counts them: what a digest must stay within."""

import pytest

from b1twilio_pipeline.notifications.sms_length import segments


@pytest.mark.parametrize(("text", "parts"), [
    ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),  # GSM-7: 160 alone, 153 a part
    ("€" * 80, 1), ("€" * 81, 2),  # the extension characters take two septets
    ("é" * 160, 1),  # in the GSM-7 alphabet
    ("ł" * 70, 1), ("ł" * 71, 2), ("ł" * 134, 2), ("ł" * 135, 3),  # one character outside it: UCS-2
    ("😀" * 35, 1), ("😀" * 36, 2),  # beyond the BMP: two UCS-2 units
])
def test_segments_follow_the_encoding(text: str, parts: int) -> None:
    assert segments(text) == parts
