"""Housekeeping: keeping Dagster's own history bounded."""
