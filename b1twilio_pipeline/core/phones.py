"""Masking of phone numbers and secrets before anything reaches logs, run tags, metadata or the UI."""

from __future__ import annotations

import re

_E164 = re.compile(r"\+[1-9]\d{6,14}")


def mask_phone(number: str | None) -> str:
    """`+4915112345678` -> `+49*********678`: country prefix and last three digits stay readable."""
    if not number:
        return ""
    digits = number.strip()
    if len(digits) <= 6:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 6) + digits[-3:]


def mask_secret(value: str | None) -> str:
    """Show only that a secret is set, and its last two characters to tell two values apart."""
    if not value:
        return "(unset)"
    return "****" + value[-2:] if len(value) > 8 else "****"


def mask_phones_in(text: str) -> str:
    """Mask every E.164 number inside free text (error messages from Twilio quote the number)."""
    return _E164.sub(lambda m: mask_phone(m.group(0)), text)
