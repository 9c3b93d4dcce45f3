"""Encrypted secrets store (placeholder until the secrets work lands): `read_secret` answers None."""

from __future__ import annotations


def read_secret(name: str) -> str | None:
    """Value of setting `name` from the encrypted store, or None when the store does not hold it."""
    return None
