"""Phone numbers: what counts as one (E.164, defined here once) and how they and secrets are masked before
anything reaches logs, run tags, metadata or the UI."""

from __future__ import annotations

import re

# E.164: "+", the country code and the number, 8 to 15 digits in all, the first not zero.
E164_PATTERN = r"\+[1-9]\d{7,14}"
_E164 = re.compile(rf"^{E164_PATTERN}$")
_E164_IN_TEXT = re.compile(rf"{E164_PATTERN}(?!\d)")


def is_e164(number: str) -> bool:
    """`+` then 8 to 15 digits, the first not zero; no spaces or dashes."""
    return bool(_E164.match(number))


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
    return _E164_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)
