"""What can go wrong talking to the Service Layer, as exceptions callers can tell apart.

A rejected login (`SapB1AuthError`) is never retried; an outage that outlasted the retry budget
(`SapB1Unavailable`) is worth trying again later; any other `SapB1Error` is an answer B1 gave on purpose.
"""

from __future__ import annotations

import httpx


class SapB1Error(Exception):
    """A Service Layer call failed. `status` is the HTTP status, `code` B1's error code (an int when
    numeric: v2 sends it as a string), `b1_message` B1's message text."""

    def __init__(self, message: str, *, status: int | None = None, code: int | str | None = None,
                 b1_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.b1_message = b1_message

    @property
    def already_exists(self) -> bool:
        """True for B1's "this entry already exists" answer (a repeated create of a table, field or record),
        which idempotent writers treat as success."""
        return self.code == -2035 or "already exist" in (self.b1_message or "").lower()


class SapB1AuthError(SapB1Error):
    """The Service Layer rejected the login (wrong user, password or company database). Not retried."""


class SapB1Unavailable(SapB1Error):
    """The Service Layer kept answering 5xx or dropping connections after the whole retry budget."""


def parse_b1_error(response: httpx.Response) -> tuple[int | str | None, str]:
    """(code, message) from a v1 or v2 error body; the raw text when the body is not B1's JSON."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        text = " ".join(response.text.split())[:200]
        return None, text or response.reason_phrase
    code: int | str | None = error.get("code")
    if isinstance(code, str):
        code = int(code) if code.lstrip("-").isdigit() else code
    message = error.get("message")
    if isinstance(message, dict):
        message = message.get("value")
    return code, " ".join(str(message or "").split())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


