"""Alembic environment: always run online, on the connection `database.upgrade` hands over.

The version table has a name of its own so the store can share a database with Dagster's storage (which
keeps its own `alembic_version`) without either overwriting the other. SQLite cannot alter columns in
place, so migrations run in batch mode there (copy, alter, swap), which is a no-op on PostgreSQL.
"""

from alembic import context

from b1twilio_pipeline.core.schema import metadata

VERSION_TABLE = "b1tw_schema_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
