"""Fixtures (filled in by their area)."""
