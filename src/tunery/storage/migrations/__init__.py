"""Alembic migrations of the database schema; Database.create_schema() applies them."""
