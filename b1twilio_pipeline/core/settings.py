"""The configuration contract (the README lists every setting): every setting is an environment variable; when it is
unset the encrypted secrets store is asked, then the default. Resolved at run time, never at import."""

from __future__ import annotations

import os

from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.secrets_store import read_secret

__all__ = ["ConfigurationError", "int_setting", "require_setting", "setting"]


def setting(name: str, default: str | None = None) -> str | None:
    """Environment variable `name`, else the secrets store's value, else `default`."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    stored = read_secret(name)
    if stored not in (None, ""):
        return stored
    return default


def require_setting(name: str, purpose: str) -> str:
    """Like `setting`, but a missing value is a ConfigurationError naming the variable."""
    value = setting(name)
    if value is None:
        raise ConfigurationError(
            f"{name} is not set: set the environment variable or store it with "
            f"`b1twilio secrets set {name}` ({purpose})"
        )
    return value


def int_setting(name: str, default: int, allowed: tuple[int, ...] | None = None) -> int:
    """A whole-number setting >= 1 (or one of `allowed`); anything else is a one-line ConfigurationError."""
    raw = setting(name, str(default)) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number: set it to e.g. {default}") from None
    if value < 1 or (allowed and value not in allowed):
        choices = ", ".join(map(str, allowed)) if allowed else "a number >= 1"
        raise ConfigurationError(f"{name}={value} is not allowed: use one of {choices}")
    return value
