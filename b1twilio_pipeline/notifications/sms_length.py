"""How many SMS segments a text costs: GSM-7 (160 septets alone, 153 per part; the extension characters
^{}\\[~]|€ take two) or, with one character outside it, UCS-2 (70 alone, 67 per part, characters beyond the
Basic Multilingual Plane take two units)."""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> int:
    """The number of SMS parts Twilio sends `text` as (and bills)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        units, alone, part = sum(2 if c in GSM7_EXTENSION else 1 for c in text), 160, 153
    else:
        units, alone, part = sum(2 if ord(c) > 0xFFFF else 1 for c in text), 70, 67
    return 1 if units <= alone else -(-units // part)
