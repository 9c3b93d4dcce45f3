"""Validated field types of the rules file. Each refuses a wrong value with a message that says what to
write instead: YAML reads `20:00` and `01` as numbers and `+4915...` unquoted as an integer, and a typo
that silently switched an alert off would only be noticed when the customer was never called.

The messages are raised as `PydanticCustomError`s so `loading` can put them verbatim into its one-line
error naming the file, the rule or recipient, and the field.
"""

from __future__ import annotations

import math
import re
from datetime import time
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from b1twilio_pipeline.alerts.rules.money import DEFAULT_LOCALE, canonical_locale
from b1twilio_pipeline.core.phones import E164_PATTERN, is_e164, mask_phone

MAX_AMOUNT = 1e12  # far above any real threshold, far below where float arithmetic stops being exact
MAX_DAYS = 36500
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PHONE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
MAX_NAME = 120


def fail(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error with our own words; `field` names a key below the one being validated."""
    if field is None:
        return PydanticCustomError("b1twilio", message)
    return PydanticCustomError("b1twilio", message.replace("{", "{{").replace("}", "}}"), {"field": field})


def _rule_id(value: Any) -> str:
    if not isinstance(value, str) or not _RULE_ID.match(value):
        raise fail(f"'{value}': every rule needs a stable id of lower-case letters, digits, '-' or '_' "
                   "(at most 64), e.g. overdue-30")
    return value


def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail("must be an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone '{value}' (use an IANA name such as Europe/Berlin)") from None
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got '{value}'")
    return value


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= MAX_AMOUNT:
        raise fail(f"must be a number from 0 to {MAX_AMOUNT:,.0f}, got '{value}'")
    return float(value)


def _days(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise fail(f"must be a whole number of days from 1 to {MAX_DAYS}, got '{value}'")
    return value


def _codes(what: str) -> Any:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise fail(f"must be a non-empty list of {what} codes (omit the key to include all)")
        for code in value:
            if not isinstance(code, str) or not code.strip():
                raise fail(f"{what} code {code!r} must be quoted text, e.g. [\"01\"] (unquoted, YAML reads 01 as "
                           "the number 1)")
        return tuple(value)

    return check


def clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise fail("must be a quoted \"HH:MM\" string (unquoted, YAML reads 20:00 as a number)")
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise fail(f"'{value}' must be a time \"HH:MM\" between 00:00 and 23:59")
    return time(int(match[1]), int(match[2]))


def _phone(value: Any) -> str:
    if not isinstance(value, str):
        raise fail(f"'{mask_phone(str(value))}' must be a quoted string like \"+49...\" (unquoted, YAML reads "
                   "it as a number and drops the +)")
    if not is_e164(value):
        raise fail(f"'{mask_phone(value)}' is not an E.164 number: '+', country code and number, 8 to 15 digits, "
                   "no spaces or dashes")
    return value


def _phone_ref(value: Any) -> str:
    if not isinstance(value, str) or not _PHONE_REF.match(value):
        raise fail("must be a short name of letters, digits, '-', '_' like sam")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail("is required (non-empty text)")
    if len(value) > MAX_NAME:
        raise fail(f"is longer than {MAX_NAME} characters")
    if not value.isprintable():
        raise fail(f"{value!r} must be one line of text (no line breaks or control characters)")
    return value


def _group_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise fail(f"{value!r} is not a group name: use one line of text such as credit_control")
    return value


def _locale(value: Any) -> str:
    known = canonical_locale(value) if isinstance(value, str) and value.strip() else None
    if known is None:
        raise fail(f"unknown locale '{value}': use a language and region such as {DEFAULT_LOCALE}, de-DE or en-GB")
    return known


RuleId = Annotated[str, BeforeValidator(_rule_id), WithJsonSchema({"type": "string", "pattern": _RULE_ID.pattern})]
TimeZoneName = Annotated[str, BeforeValidator(_timezone),
                         WithJsonSchema({"type": "string", "description": "IANA time zone, e.g. Europe/Berlin"})]
Flag = Annotated[bool, BeforeValidator(_flag), WithJsonSchema({"type": "boolean"})]
Amount = Annotated[float, BeforeValidator(_amount), WithJsonSchema({"type": "number", "minimum": 0})]
Days = Annotated[int, BeforeValidator(_days),
                 WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_DAYS})]
WarehouseCodes = Annotated[tuple[str, ...], BeforeValidator(_codes("warehouse")),
                           WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 1})]
ItemCodes = Annotated[tuple[str, ...], BeforeValidator(_codes("item")),
                      WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 1})]
Phone = Annotated[str, BeforeValidator(_phone), WithJsonSchema({"type": "string", "pattern": f"^{E164_PATTERN}$"})]
PhoneRef = Annotated[str, BeforeValidator(_phone_ref),
                     WithJsonSchema({"type": "string", "pattern": _PHONE_REF.pattern})]
Name = Annotated[str, BeforeValidator(_name), WithJsonSchema({"type": "string", "maxLength": MAX_NAME})]
GroupName = Annotated[str, BeforeValidator(_group_name), WithJsonSchema({"type": "string", "minLength": 1})]
LocaleName = Annotated[str, BeforeValidator(_locale), WithJsonSchema(
    {"type": "string", "examples": [DEFAULT_LOCALE, "en-GB", "de-DE", "fr-FR"],
     "description": "language and region (BCP 47, e.g. en-US or de-DE): how amounts read in messages"})]
Clock = Annotated[time, BeforeValidator(clock),
                  WithJsonSchema({"type": "string", "pattern": _HHMM.pattern, "description": "quoted \"HH:MM\""})]
