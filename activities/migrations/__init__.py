"""Alembic migrations of the case store; run them with ``activities.migrate.upgrade``."""
