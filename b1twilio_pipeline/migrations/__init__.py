"""Alembic migrations of the pipeline's own database (see `b1twilio_pipeline.core.database`)."""
