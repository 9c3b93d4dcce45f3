"""Housekeeping: keeping Dagster's own history bounded."""

from pathlib import Path

# The operator's autovacuum settings for the Dagster instance's hottest tables on PostgreSQL, run with psql
# once the instance exists (README, Production); shipped in the package so an installed copy has it too.
INSTANCE_AUTOVACUUM_SQL = Path(__file__).with_name("instance_autovacuum.sql")
