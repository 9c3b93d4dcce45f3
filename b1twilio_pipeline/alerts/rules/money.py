"""Amounts as a reader of a locale expects them: "$1,200.00" in en-US, "1.200,00 €" in de-DE. Babel holds
each locale's number pattern and each currency's symbol and decimals (CLDR), so nothing here formats a
number by hand.

B1's `DocCurrency` is whatever code the company defined for the currency: an ISO 4217 code ("EUR",
"usd") or a symbol ("$", "€", "£"). An ISO code is formatted as that currency (its symbol in the locale,
its decimals: "¥1,200" for JPY). A symbol is kept as B1 wrote it, placed where the locale puts a currency
sign: "$" may be US, Canadian or Australian dollars, and only B1 knows which.
"""

from __future__ import annotations

import math
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, list_currencies

DEFAULT_LOCALE = "en-US"
_ISO_CODES = frozenset(list_currencies())
# Babel separates amount and sign with no-break spaces (U+00A0, U+202F). Outside the GSM-7 alphabet, one
# of them makes the whole SMS UCS-2: 70 characters a segment instead of 160, so a message costs twice.
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})


def canonical_locale(value: str) -> str | None:
    """`value` ("de-DE", "de_DE", "de") as "de-DE", or None when no such locale is known."""
    try:
        return str(Locale.parse(value.strip().replace("-", "_"))).replace("_", "-")
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def currency_code(currency: str) -> str:
    """The ISO code Babel formats, upper-cased; anything else (a symbol) as written."""
    text = currency.strip()
    return text.upper() if text.upper() in _ISO_CODES else text


def format_amount(amount: Any, currency: Any, locale: str | None) -> str:
    """`amount` in `currency` for a reader of `locale` (default en-US); empty when there is no amount."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        return ""
    code = currency_code(currency if isinstance(currency, str) else "")
    text = format_currency(amount, code, locale=(locale or DEFAULT_LOCALE).replace("-", "_"))
    return text.translate(_SPACES).strip()
