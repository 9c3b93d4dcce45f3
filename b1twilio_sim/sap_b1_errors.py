"""Service Layer errors: B1's error codes and the two error body shapes (v1 and v2)."""

from __future__ import annotations

from typing import Any

SESSION_MESSAGE = "Invalid session or session already timeout."


class B1Failure(Exception):
    """An error the simulator answers in B1's error body shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: int = -1000) -> B1Failure:
    return B1Failure(400, code, message)


def not_found() -> B1Failure:
    return B1Failure(404, -2028, "No matching records found (ODBC -2028)")


def already_exists(table: str) -> B1Failure:
    return B1Failure(400, -2035, f"This entry already exists in the following tables ({table}) (ODBC -2035)")


def unrecognized_path(detail: str = "") -> B1Failure:
    return B1Failure(404, -1000, "Unrecognized resource path." if not detail else
                     f"Unrecognized resource path: {detail}")


def error_body(version: str, code: int, message: str) -> dict[str, Any]:
    """v1: a numeric code and `{"lang", "value"}`; v2: the code as a string, a plain message and `details`
    (the v2 shape holds for every v2 error)."""
    if version == "v1":
        return {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}
    return {"error": {"code": str(code), "message": message, "details": [{"code": "", "message": ""}]}}
